//! Capstan benchmarks. Each prints a table of figures; none asserts a time.

pub mod etcd;

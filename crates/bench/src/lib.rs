//! Capstan benchmarks. Each prints figures; none asserts a time.

pub mod agent;
pub mod etcd;
pub mod scheduler;

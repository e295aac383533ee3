//! Test support for Capstan: real etcd members started from Debian's `etcd` binary on free
//! loopback ports in temporary directories, and builders for resources.

pub mod builders;
pub mod etcd;

pub use etcd::{EtcdCluster, EtcdError};

/// Finds a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

//! Test support for Capstan: real etcd members started from Debian's `etcd` binary on free
//! loopback ports in temporary directories, fake agents over real gRPC, and builders for
//! resources.

pub mod agent;
pub mod builders;
pub mod etcd;
pub mod pki;

pub use etcd::{EtcdCluster, EtcdError};

/// Finds a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Kills (SIGKILL) the process group of every task recorded in an agent's state dir: tasks
/// outlive their agent by design, and a test must not leave them behind.
pub fn kill_task_processes(state_dir: &std::path::Path) {
    for pid in capstan_agent_client::state::task_process_groups(state_dir) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

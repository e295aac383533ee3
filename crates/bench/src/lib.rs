//! Capstan benchmarks. Each prints figures; none asserts a time.

pub mod agent;
pub mod deployer;
pub mod etcd;
pub mod scheduler;

/// A child process killed when dropped, so an early error leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

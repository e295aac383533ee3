//! The HAProxy process the registrar drives: one it started, or one an earlier registrar left
//! running that it adopted.

/// The HAProxy process being driven.
pub(super) enum Process {
    /// Started by this registrar.
    Child(tokio::process::Child),
    /// Left running by an earlier registrar with the same configuration, and taken over.
    Adopted(nix::unistd::Pid),
}

impl Process {
    pub(super) fn pid(&self) -> nix::unistd::Pid {
        match self {
            Process::Child(c) => {
                nix::unistd::Pid::from_raw(c.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0))
            }
            Process::Adopted(pid) => *pid,
        }
    }

    pub(super) fn alive(&mut self) -> bool {
        match self {
            Process::Child(c) => matches!(c.try_wait(), Ok(None)),
            Process::Adopted(pid) => nix::sys::signal::kill(*pid, None).is_ok(),
        }
    }

    pub(super) async fn kill(self) {
        match self {
            Process::Child(mut c) => {
                let _ = c.kill().await;
            }
            Process::Adopted(pid) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// SIGTERM (the master stops its workers), then SIGKILL after 3 s.
    pub(super) async fn terminate(mut self) {
        use nix::sys::signal::{Signal, kill};
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while self.alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.kill().await;
    }
}

//! Capstan benchmarks. Each prints figures; none asserts a time.

pub mod agent;
pub mod capacity;
pub mod ceiling;
pub mod deployer;
pub mod etcd;
pub mod placement;
pub mod registrar;
pub mod scheduler;

/// A child process killed when dropped, so an early error leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of process `pid`, KiB (0 when unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) process `pid` has used so far, seconds (0 when unknown).
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th, in USER_HZ ticks, which Linux fixes at 100 for /proc.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// CPU time used by some processes, and taken by the hypervisor, since a moment.
pub struct Usage<const N: usize> {
    pids: [u32; N],
    cpu: [f64; N],
    stolen: f64,
}

impl<const N: usize> Usage<N> {
    /// Starts counting for `pids` (0 for a process that is not known counts nothing).
    pub fn start(pids: [u32; N]) -> Self {
        Self {
            pids,
            cpu: pids.map(cpu_secs),
            stolen: stolen_secs(),
        }
    }

    /// CPU seconds each process used since the start, and the seconds stolen meanwhile.
    pub fn since(&self) -> ([f64; N], f64) {
        let now = self.pids.map(cpu_secs);
        (
            std::array::from_fn(|i| now[i] - self.cpu[i]),
            stolen_secs() - self.stolen,
        )
    }
}

/// Whether `url` answers 2xx to a GET (a controller's `/readyz`, say).
pub async fn answers_ok(url: &str) -> bool {
    install_tls_provider();
    reqwest::get(url)
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// reqwest wants a TLS provider installed even for plain HTTP.
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// CPU time the hypervisor has taken from this machine since boot, seconds (the `steal` column of
/// `/proc/stat`; 0 when unknown). On a shared virtual machine it is what makes figures noisy.
pub fn stolen_secs() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| steal_ticks(&s))
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

/// The machine-wide `steal` ticks in `/proc/stat` text.
fn steal_ticks(stat: &str) -> Option<u64> {
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    cpu.split_whitespace().nth(8)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_while_it_computes() {
        let me = std::process::id();
        let start = cpu_secs(me);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        // Spin until the kernel has charged this process at least two more ticks.
        while cpu_secs(me) < start + 0.02 {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time stuck at {start}"
            );
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert!(rss_kib(me) > 0);
    }

    #[test]
    fn steal_is_the_eighth_counter_of_the_machine_wide_cpu_line() {
        let stat = "cpu  4705 356 584 3699 23 23 0 148568 0 0\n\
                    cpu0 1393280 32966 572056 13343292 6130 0 17875 99 0 0\n";
        assert_eq!(steal_ticks(stat), Some(148568));
        assert_eq!(steal_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(steal_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn unknown_processes_have_no_cpu_time() {
        assert_eq!(cpu_secs(u32::MAX), 0.0);
    }
}

//! Real etcd members for tests and benches: one or three, on free loopback ports.
//!
//! Members are started from the `etcd` binary (`CAPSTAN_ETCD_BIN`, else `etcd` on `PATH`; on
//! Debian `apt-get install etcd-server`) and killed when the cluster is dropped, so a failing test
//! leaves no server behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::free_port;

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The etcd binary is missing.
    #[error(
        "cannot run {bin:?}: {source}; install it with `apt-get install -y etcd-server` or set CAPSTAN_ETCD_BIN"
    )]
    Spawn {
        /// Binary that was tried.
        bin: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Temp dirs, ports or log files.
    #[error("etcd test setup: {0}")]
    Io(#[from] std::io::Error),
    /// A member exited or did not answer in time.
    #[error(
        "etcd member {name} exited or did not become healthy within {secs} s; last log lines:\n{log}"
    )]
    NotHealthy {
        /// Member name.
        name: String,
        /// Seconds waited.
        secs: u64,
        /// Tail of its log.
        log: String,
    },
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A running etcd cluster of real members; killed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    /// Flags every member gets besides the cluster's own.
    extra: Vec<String>,
    initial_cluster: String,
    token: String,
    _dir: TempDir,
}

fn etcd_bin() -> String {
    std::env::var("CAPSTAN_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// Where test data goes: tmpfs when the machine has one (fast fsync), else the temp dir.
fn default_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl EtcdCluster {
    /// Starts one member with data on tmpfs where available.
    pub async fn single() -> Result<Self, EtcdError> {
        Self::start_in(1, &default_root()).await
    }

    /// One member with `extra` etcd flags (e.g. `--auth-token-ttl 2`).
    pub async fn single_with(extra: &[&str]) -> Result<Self, EtcdError> {
        Self::start_with(1, &default_root(), extra).await
    }

    /// Starts three members with data on tmpfs where available.
    pub async fn three() -> Result<Self, EtcdError> {
        Self::start_in(3, &default_root()).await
    }

    /// Starts `n` members with their data dirs under `root`.
    pub async fn start_in(n: usize, root: &Path) -> Result<Self, EtcdError> {
        Self::start_with(n, root, &[]).await
    }

    /// [`EtcdCluster::start_in`] with `extra` flags for every member.
    pub async fn start_with(n: usize, root: &Path, extra: &[&str]) -> Result<Self, EtcdError> {
        // Free ports are found by binding port 0 and releasing it, so a parallel test can grab the
        // same port first; such a start fails with "address already in use" and is retried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(n, root, extra).await {
                Err(EtcdError::NotHealthy { log, .. })
                    if attempt < 4 && log.contains("address already in use") =>
                {
                    tracing::warn!("etcd port clash; retrying with new ports");
                }
                other => return other,
            }
        }
    }

    async fn try_start(n: usize, root: &Path, extra: &[&str]) -> Result<Self, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("capstan-etcd-")
            .tempdir_in(root)?;
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("m{i}");
            members.push(Member {
                data_dir: dir.path().join(&name),
                log: dir.path().join(format!("{name}.log")),
                name,
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "capstan-test".into());
        let mut cluster = Self {
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            initial_cluster,
            token,
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), EtcdError> {
        let bin = etcd_bin();
        let initial_cluster = self.initial_cluster.clone();
        let token = self.token.clone();
        let extra = self.extra.clone();
        let m = &mut self.members[i];
        let log = File::options().create(true).append(true).open(&m.log)?;
        let child = Command::new(&bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-token")
            .arg(token)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--heartbeat-interval")
            .arg("100")
            .arg("--election-timeout")
            .arg("1000")
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| EtcdError::Spawn { bin, source })?;
        m.child = Some(child);
        Ok(())
    }

    async fn wait_healthy(&mut self, i: usize) -> Result<(), EtcdError> {
        // Generous: on a loaded 2-core machine a 3-member cluster can take a while to elect.
        const SECS: u64 = 60;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(SECS);
        loop {
            let m = &mut self.members[i];
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(1));
            if let Ok(mut c) = etcd_client::Client::connect([m.client_url()], Some(opts)).await
                // A linearizable read proves the member has joined a cluster with a leader.
                && c.get("/capstan-health", None).await.is_ok()
            {
                return Ok(());
            }
            let exited = m
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || tokio::time::Instant::now() > deadline {
                return Err(EtcdError::NotHealthy {
                    name: m.name.clone(),
                    secs: SECS,
                    log: tail(&m.log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Client URLs of every member (running or not).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Process id of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// Client URLs of the running members.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::client_url)
            .collect()
    }

    /// Kills member `i` with SIGKILL and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` on its existing data dir and waits until it serves.
    pub async fn restart(&mut self, i: usize) -> Result<(), EtcdError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(i).await
    }

    /// The last lines of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.members[i].log, lines)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

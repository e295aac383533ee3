//! The compose deployment the soak drives (`deploy/compose`): its hosts and addresses, docker
//! commands on them, the operator's CLI and a store client of its etcd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_proto::tls::TlsFiles;
use capstan_store::{EtcdTls, Store, StoreConfig};
use tokio::process::Command;

/// What can go wrong driving the deployment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not be run at all.
    #[error("{command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed: {output}")]
    Failed {
        /// The command.
        command: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// A command did not end in time.
    #[error("{command} did not end within {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The limit.
        after: Duration,
    },
    /// etcd could not be reached.
    #[error("etcd: {0}")]
    Store(#[from] capstan_store::StoreError),
}

/// The LB hosts.
pub const LB_HOSTS: [&str; 2] = ["lb-1", "lb-2"];
/// The agent hosts.
pub const AGENT_HOSTS: [&str; 3] = ["agent-1", "agent-2", "agent-3"];
/// The etcd members.
pub const ETCD_HOSTS: [&str; 3] = ["etcd-1", "etcd-2", "etcd-3"];

/// A host's last octet on the `capstan` network (docker-compose.yml).
pub fn host_octet(host: &str) -> Option<u8> {
    Some(match host {
        "etcd-1" => 11,
        "etcd-2" => 12,
        "etcd-3" => 13,
        "api-1" => 21,
        "api-2" => 22,
        "scheduler-1" => 31,
        "scheduler-2" => 32,
        "deployer-1" => 33,
        "deployer-2" => 34,
        "scaler-1" => 35,
        "scaler-2" => 36,
        "lb-1" => 41,
        "lb-2" => 42,
        "agent-1" => 51,
        "agent-2" => 52,
        "agent-3" => 53,
        _ => return None,
    })
}

/// One compose project of `deploy/compose`.
#[derive(Debug, Clone)]
pub struct Compose {
    /// The project name.
    pub project: String,
    /// The first three octets of the project's /24 (up.sh's CAPSTAN_NET).
    pub net: String,
    /// The `deploy/compose` directory.
    pub dir: PathBuf,
    /// The capstan CLI.
    pub cli: PathBuf,
}

/// Runs `cmd` to its end within `limit`; its stdout when it succeeded.
pub async fn output(cmd: &mut Command, limit: Duration) -> Result<String, Error> {
    let command = format!("{:?}", cmd.as_std());
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| Error::Timeout {
            command: command.clone(),
            after: limit,
        })?
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            command,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        })
    }
}

impl Compose {
    /// The container of compose service `host` (docker-compose v1's naming).
    pub fn container(&self, host: &str) -> String {
        format!("{}_{host}_1", self.project)
    }

    /// A host's fixed address on the project's network.
    pub fn address(&self, host: &str) -> Option<String> {
        host_octet(host).map(|o| format!("{}.{o}", self.net))
    }

    /// The project's network.
    pub fn network(&self) -> String {
        format!("{}_capstan", self.project)
    }

    fn operator(&self, file: &str) -> PathBuf {
        self.dir.join(".operator").join(file)
    }

    /// The operator's certificate, for the agents.
    pub fn tls(&self) -> TlsFiles {
        TlsFiles {
            cert: self.operator("operator.pem"),
            key: self.operator("operator.key"),
            ca: self.operator("ca.pem"),
        }
    }

    /// `docker ARGS`.
    pub async fn docker(&self, args: &[&str]) -> Result<String, Error> {
        output(Command::new("docker").args(args), Duration::from_secs(60)).await
    }

    /// Runs a script of `deploy/compose` (`up.sh`, `down.sh`) for this project.
    pub async fn script(&self, name: &str, limit: Duration) -> Result<String, Error> {
        output(
            Command::new("bash")
                .arg(self.dir.join(name))
                .env("COMPOSE_PROJECT_NAME", &self.project)
                .env("CAPSTAN_NET", &self.net)
                .env("CAPSTAN_SKIP_CARGO", "1"),
            limit,
        )
        .await
    }

    /// The CLI as the operator against api-1 or api-2 (`api` picks), with `args`.
    pub async fn capstan(&self, api: usize, args: &[&str]) -> Result<String, Error> {
        let host = ["api-1", "api-2"][api % 2];
        let endpoint = format!("https://{}:7400", self.address(host).unwrap_or_default());
        let f = |n: &str| self.operator(n).display().to_string();
        output(
            Command::new(&self.cli)
                .args(["--endpoint", &endpoint, "--tls-ca", &f("ca.pem")])
                .args([
                    "--tls-cert",
                    &f("operator.pem"),
                    "--tls-key",
                    &f("operator.key"),
                ])
                .args(args),
            Duration::from_secs(30),
        )
        .await
    }

    /// A store client of the deployment's etcd, over mutual TLS as the operator.
    pub async fn store(&self) -> Result<Store, Error> {
        let mut cfg = StoreConfig::new(
            ETCD_HOSTS
                .iter()
                .filter_map(|h| self.address(h))
                .map(|a| format!("https://{a}:2379"))
                .collect(),
            capstan_core::keys::DEFAULT_PREFIX,
        );
        cfg.tls = Some(EtcdTls {
            ca: Some(self.operator("ca.pem")),
            cert: Some(self.operator("operator.pem")),
            key: Some(self.operator("operator.key")),
        });
        cfg.call_timeout = Duration::from_secs(5);
        Ok(Store::connect(&cfg).await?)
    }

    /// The directory of files the workload writes (task definitions, services).
    pub fn scratch(&self) -> PathBuf {
        std::env::temp_dir().join(format!("capstan-chaos-{}", self.project))
    }
}

/// The default CLI: `capstan` next to this binary.
pub fn default_cli() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("capstan")))
        .unwrap_or_else(|| Path::new("capstan").to_path_buf())
}

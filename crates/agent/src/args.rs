//! Command-line arguments of `capstan-agent`.

use std::net::SocketAddr;
use std::path::PathBuf;

use capstan_runtime::{AdminArgs, LogArgs, StoreArgs};

/// Which runtime runs the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Docker Engine API.
    Docker,
    /// Plain child processes (entryPoint + command).
    Process,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() || k.len() > 128 || v.is_empty() || v.len() > 128 {
        return Err(format!(
            "attribute {s:?}: name and value must have 1-128 characters"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// capstan-agent: runs tasks on this machine for the Capstan control plane.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-agent", version)]
pub struct AgentArgs {
    /// etcd.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The admin server.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Logs.
    #[command(flatten)]
    pub log: LogArgs,
    /// Cluster this instance joins.
    #[arg(long, env = "CAPSTAN_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// How containers run.
    #[arg(long, env = "CAPSTAN_AGENT_RUNTIME", value_enum, default_value_t = RuntimeKind::Docker)]
    pub runtime: RuntimeKind,
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, env = "CAPSTAN_AGENT_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address controllers dial (host:port); the bound address by default.
    #[arg(long, env = "CAPSTAN_AGENT_ADVERTISE")]
    pub advertise: Option<String>,
    /// CPU units offered; 1024 per core by default.
    #[arg(long, env = "CAPSTAN_AGENT_CPU")]
    pub cpu: Option<i64>,
    /// MiB offered; the machine's memory by default.
    #[arg(long, env = "CAPSTAN_AGENT_MEMORY")]
    pub memory: Option<i64>,
    /// Instance attribute, e.g. `ecs.availability-zone=zone-a` (repeatable).
    #[arg(long = "attribute", value_parser = key_value)]
    pub attributes: Vec<(String, String)>,
    /// Where the agent keeps its identity, fencing token, task records and logs.
    #[arg(
        long,
        env = "CAPSTAN_AGENT_STATE_DIR",
        default_value = "/var/lib/capstan-agent"
    )]
    pub state_dir: PathBuf,
    /// Docker engine address (`unix:///var/run/docker.sock` by default).
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Pull images that are not present locally (`false`: fail the task instead).
    #[arg(long, env = "CAPSTAN_AGENT_DOCKER_PULL", default_value_t = true, action = clap::ArgAction::Set)]
    pub docker_pull: bool,
    /// TTL of the registration lease, seconds: the instance disappears this long after the
    /// agent dies.
    #[arg(long, env = "CAPSTAN_AGENT_LEASE_TTL", default_value_t = 10, value_parser = clap::value_parser!(i64).range(2..=600))]
    pub lease_ttl: i64,
    /// How long stopped tasks stay visible (and their containers kept) before clean-up.
    #[arg(long, env = "CAPSTAN_AGENT_TASK_RETENTION", default_value = "1h")]
    pub task_retention: humantime::Duration,
    /// Mutual TLS: callers need a client certificate from the cluster CA.
    #[command(flatten)]
    pub tls: capstan_proto::tls::TlsArgs,
    /// The user process tasks run as when the agent is root and a container names no `user`
    /// (tasks never run as root unless you name root).
    #[arg(long, env = "CAPSTAN_TASK_USER", default_value = "nobody")]
    pub task_user: String,
    /// The host address task ports are bound to (Docker publishes there; process tasks get it as
    /// CAPSTAN_BIND_ADDRESS); by default the address the agent advertises.
    #[arg(long, env = "CAPSTAN_TASK_BIND_ADDRESS")]
    pub task_bind_address: Option<std::net::IpAddr>,
    /// Allow containers with `privileged: true` (Docker); refused by default.
    #[arg(long, env = "CAPSTAN_ALLOW_PRIVILEGED")]
    pub allow_privileged: bool,
    /// How a new, higher fencing token is checked: `election` (it must be the scheduler
    /// leader's election revision in etcd) or `none` (believed as sent; tests only).
    #[arg(long, env = "CAPSTAN_FENCING_CHECK", value_enum, default_value_t = crate::fence::FencingCheck::Election)]
    pub fencing_check: crate::fence::FencingCheck,
    /// The key that opens secrets (`secrets[].valueFrom`): the API's --encryption-key-file.
    /// Without it, a container that asks for a secret fails to start, saying so.
    #[arg(long, env = "CAPSTAN_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// The host directory `environmentFiles` may name `.env` files in; host files are refused
    /// when absent (a task definition must not read arbitrary host files).
    #[arg(long, env = "CAPSTAN_ENVIRONMENT_FILES_DIR")]
    pub environment_files_dir: Option<std::path::PathBuf>,
    /// A host directory task volumes may bind-mount (`volumes[].host.sourcePath` under it);
    /// repeatable. None by default: a task definition must not mount arbitrary host paths.
    #[arg(
        long = "allow-host-path",
        env = "CAPSTAN_ALLOW_HOST_PATHS",
        value_delimiter = ','
    )]
    pub allow_host_paths: Vec<std::path::PathBuf>,
    /// Stop every task when the agent exits (`capstan dev`, throwaway hosts); by default tasks
    /// keep running across an agent restart and are re-adopted.
    #[arg(long, env = "CAPSTAN_AGENT_STOP_TASKS_ON_EXIT")]
    pub stop_tasks_on_exit: bool,
}

//! Container runtimes: how a container of a task is started, watched, health-checked and stopped.

pub mod docker;
pub mod exec;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use capstan_core::task::NetworkBinding;
use capstan_core::taskdef::{HealthCheck, PortMapping};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::logs::LogLine;

use crate::model::Handle;

/// What the agent allows its tasks, whatever their definitions ask: the user a process task
/// runs as when its container names none, the address task ports are bound to, and whether a
/// Docker container may be `privileged`.
#[derive(Debug, Clone)]
pub struct TaskPolicy {
    /// The user process tasks run as when the agent is root and the container sets no `user`.
    pub default_user: String,
    /// The host address task ports are bound to (never all interfaces unless asked).
    pub bind_address: std::net::IpAddr,
    /// Whether `privileged: true` is allowed (Docker).
    pub allow_privileged: bool,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        Self {
            default_user: "nobody".into(),
            bind_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            allow_privileged: false,
        }
    }
}

/// Everything a runtime needs to start one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Task id.
    pub task_id: String,
    /// Cluster.
    pub cluster: String,
    /// Container name.
    pub name: String,
    /// Image (Docker) — recorded, unused by the process runtime.
    pub image: String,
    /// ECS `entryPoint`.
    pub entry_point: Vec<String>,
    /// ECS `command` (after overrides).
    pub command: Vec<String>,
    /// Environment (after overrides).
    pub env: Vec<(String, String)>,
    /// Port mappings.
    pub ports: Vec<PortMapping>,
    /// CPU units.
    pub cpu: Option<u32>,
    /// Hard memory limit, MiB.
    pub memory: Option<u32>,
    /// Soft memory limit, MiB.
    pub memory_reservation: Option<u32>,
    /// Working directory.
    pub working_directory: Option<String>,
    /// Health check, if any.
    pub health_check: Option<HealthCheck>,
    /// The task's directory on the node: its containers' logs (process runtime) and their
    /// default working directory.
    pub task_dir: PathBuf,
    /// Docker labels from the task definition.
    pub labels: Vec<(String, String)>,
    /// ECS `user`: `name`, `uid`, `uid:gid` or `name:group`.
    pub user: Option<String>,
    /// ECS `privileged` (Docker).
    pub privileged: bool,
    /// ECS `readonlyRootFilesystem` (Docker).
    pub readonly_root_filesystem: bool,
    /// The task's volumes this container mounts, resolved on this node.
    pub mounts: Vec<Mount>,
    /// `volumesFrom`: containers of the same task (by name) and whether read-only (Docker).
    pub volumes_from: Vec<(String, bool)>,
    /// The rest of the container definition, for the runtimes that act on it (Docker).
    pub options: ContainerOptions,
    /// How its output reaches its log (`logConfiguration.options.mode`).
    pub log_mode: capstan_core::logging::LogMode,
}

/// A volume mounted in a container.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// The task definition's volume name.
    pub volume: String,
    /// What is mounted.
    pub source: MountSource,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a mount's volume is on this node.
#[derive(Debug, Clone, PartialEq)]
pub enum MountSource {
    /// A host path the task definition names (a bind mount; allowed by the agent's policy).
    HostPath(std::path::PathBuf),
    /// A directory the agent made: a scratch volume, or a Docker volume under the process
    /// runtime.
    Dir(std::path::PathBuf),
    /// A Docker volume: `name` on the engine, created as configured.
    DockerVolume {
        /// The engine's volume name (task-scoped ones carry the task id).
        name: String,
        /// The task definition's configuration.
        config: capstan_core::container::DockerVolumeConfiguration,
    },
}

/// Container-definition fields only the docker runtime acts on (see `docs/agent.md`).
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    /// `linuxParameters`.
    pub linux: Option<capstan_core::container::LinuxParameters>,
    /// `ulimits`.
    pub ulimits: Vec<capstan_core::container::Ulimit>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `dnsServers`.
    pub dns_servers: Vec<String>,
    /// `dnsSearchDomains`.
    pub dns_search_domains: Vec<String>,
    /// `extraHosts`.
    pub extra_hosts: Vec<capstan_core::container::HostEntry>,
    /// `dockerSecurityOptions`.
    pub security_options: Vec<String>,
    /// `systemControls`.
    pub system_controls: Vec<capstan_core::container::SystemControl>,
    /// `interactive`.
    pub interactive: bool,
    /// `pseudoTerminal`.
    pub pseudo_terminal: bool,
    /// `disableNetworking`.
    pub disable_networking: bool,
    /// GPUs from `resourceRequirements`.
    pub gpus: u32,
    /// The task's `networkMode`.
    pub network_mode: Option<capstan_core::taskdef::NetworkMode>,
    /// The task's `pidMode`.
    pub pid_mode: Option<capstan_core::container::NamespaceMode>,
    /// The task's `ipcMode`.
    pub ipc_mode: Option<capstan_core::container::NamespaceMode>,
    /// The Docker log driver and its options: `json-file` or `local` as asked, or json-file
    /// rotated at 10 MiB; with the delivery mode either way.
    pub log_driver: Option<(String, std::collections::HashMap<String, String>)>,
}

/// A started container.
#[derive(Debug, Clone)]
pub struct Started {
    /// How to find it again.
    pub handle: Handle,
    /// Host ports it got.
    pub bindings: Vec<NetworkBinding>,
    /// awsvpc: the task's own address.
    pub ip: Option<String>,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Its exit code (128 + n when killed by signal n).
    Code(i32),
    /// It is gone, but its exit code could not be learnt.
    Unknown(String),
}

impl Exit {
    /// The code, if known.
    pub fn code(&self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(*c),
            Exit::Unknown(_) => None,
        }
    }
}

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container's definition cannot run here (no command, missing image, …).
    #[error("{0}")]
    Invalid(String),
    /// The OS refused (spawn failed, no port left).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Docker engine refused.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
}

/// A container runtime.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// `docker` or `process`.
    fn kind(&self) -> &'static str;
    /// Runtime version for the container instance's versionInfo.
    fn version(&self) -> String;
    /// Starts a container.
    fn start<'a>(&'a self, spec: &'a ContainerSpec)
    -> BoxFuture<'a, Result<Started, RuntimeError>>;
    /// Starts an exited container again in place (its restart policy): Docker restarts the
    /// same container; by default it is started anew from its spec.
    fn restart<'a>(
        &'a self,
        _handle: &'a Handle,
        spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>> {
        self.start(spec)
    }
    /// Resolves when the container has exited.
    fn wait(&self, handle: &Handle) -> BoxFuture<'static, Exit>;
    /// SIGTERM, then SIGKILL after `timeout`; resolves once it has exited.
    fn stop<'a>(&'a self, handle: &'a Handle, timeout: Duration) -> BoxFuture<'a, ()>;
    /// Runs the container's health check command once; true if it passed.
    fn check<'a>(
        &'a self,
        handle: &'a Handle,
        spec: &'a ContainerSpec,
        check: &'a HealthCheck,
    ) -> BoxFuture<'a, bool>;
    /// Whether the container still runs (re-adoption after an agent restart).
    fn alive<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, bool>;
    /// Finds a container of the task that the agent started but did not get to record (a crash
    /// between start and save); docker finds it by label, the process runtime cannot.
    fn find<'a>(&'a self, task_id: &'a str, container: &'a str) -> BoxFuture<'a, Option<Handle>>;
    /// Removes what is left of a stopped container.
    fn remove<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, ()>;
    /// The container's logs when the runtime keeps them (Docker): what `query` asks for, then,
    /// with `query.follow`, each new line until the container stops. `None` when the agent's
    /// own files hold them (the process runtime's shims).
    fn logs(&self, _handle: &Handle, _query: &LogQuery) -> Option<BoxStream<'static, LogLine>> {
        None
    }
    /// Removes what a task left in the runtime beyond its containers (Docker's task-scoped
    /// volumes), once it is cleaned up.
    fn remove_task<'a>(&'a self, _task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// Runs a command in the running container (ECS Exec): Docker's exec, or a process with the
    /// container's user, environment and working directory. The session ends with
    /// [`ExecEvent::Exit`]; cancelling `stop` kills the command.
    fn exec<'a>(
        &'a self,
        handle: &'a Handle,
        spec: &'a ContainerSpec,
        request: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession, RuntimeError>>;
}

/// A terminal's size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What to run in a container.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// argv, at least one element.
    pub command: Vec<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open (otherwise the command reads an empty stdin).
    pub interactive: bool,
    /// The terminal's initial size, with `tty`.
    pub size: Option<TermSize>,
}

/// What an exec caller sends a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    /// Bytes for its stdin.
    Stdin(Vec<u8>),
    /// The caller's terminal changed size.
    Resize(TermSize),
    /// The caller's stdin ended.
    CloseStdin,
}

/// What a running command sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes it wrote to stdout (or to its terminal).
    Stdout(Vec<u8>),
    /// Bytes it wrote to stderr.
    Stderr(Vec<u8>),
    /// It ended, with this code (128 + n for signal n), or an unknown one; always last.
    Exit(Option<i32>),
}

/// A running exec session.
pub struct ExecSession {
    /// Input for the command; dropping it closes its stdin.
    pub input: tokio::sync::mpsc::Sender<ExecInput>,
    /// Its output, ending with [`ExecEvent::Exit`].
    pub output: tokio::sync::mpsc::Receiver<ExecEvent>,
    /// Cancel to kill the command (the caller went away or the task stopped).
    pub stop: tokio_util::sync::CancellationToken,
}

/// What a `TaskLogs` caller asks of one container's logs.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The container.
    pub container: String,
    /// Lines from this time on (epoch seconds).
    pub since: Option<f64>,
    /// Only the last this many lines.
    pub tail: Option<usize>,
    /// Keep streaming new lines.
    pub follow: bool,
}

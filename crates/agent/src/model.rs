//! What the agent records about each task, persisted in the state dir so that a restarted agent
//! re-adopts its tasks.

use capstan_core::TaskDefinition;
use capstan_core::task::{
    DesiredStatus, HealthStatus, NetworkBinding, StopCode, TaskOverride, TaskStatus,
};
use capstan_proto::agent::v1 as pb;
use capstan_proto::convert::to_timestamp;
use serde::{Deserialize, Serialize};

/// How to find a container again in its runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Handle {
    /// A process group led by `pid`; `start_time` (clock ticks after boot, from /proc) tells a
    /// reused pid apart.
    Process {
        /// Process id (and process group id).
        pid: i32,
        /// Start time from `/proc/<pid>/stat`.
        start_time: u64,
    },
    /// A Docker container.
    Docker {
        /// Container id.
        id: String,
    },
}

impl Handle {
    /// The id reported as `runtimeId`.
    pub fn runtime_id(&self) -> String {
        match self {
            Handle::Process { pid, .. } => pid.to_string(),
            Handle::Docker { id } => id.clone(),
        }
    }
}

/// One container of a task, as the agent knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Name from the task definition.
    pub name: String,
    /// Whether its exit stops the task.
    pub essential: bool,
    /// Its status.
    pub last_status: TaskStatus,
    /// Exit code, once known.
    pub exit_code: Option<i32>,
    /// Why it stopped or failed.
    pub reason: Option<String>,
    /// Host ports it was given.
    pub bindings: Vec<NetworkBinding>,
    /// Health from its health check.
    pub health_status: HealthStatus,
    /// Where it runs, once started.
    pub handle: Option<Handle>,
    /// Times its restart policy restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// awsvpc: the task's own address.
    #[serde(default)]
    pub ip: Option<String>,
}

/// One task, as the agent knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub task_id: String,
    /// Cluster.
    pub cluster: String,
    /// `family:revision`.
    pub task_definition_arn: String,
    /// The resolved task definition.
    pub task_definition: TaskDefinition,
    /// RunTask overrides.
    pub overrides: Option<TaskOverride>,
    /// RUNNING until a stop is asked for.
    pub desired_status: DesiredStatus,
    /// Task status.
    pub last_status: TaskStatus,
    /// From the essential containers.
    pub health_status: HealthStatus,
    /// Why it stopped.
    pub stop_code: Option<StopCode>,
    /// Free-text reason.
    pub stopped_reason: Option<String>,
    /// Stop timeout asked for by StopTask, seconds.
    pub stop_timeout_secs: Option<u64>,
    /// Accepted.
    pub created_at: f64,
    /// Reached RUNNING.
    pub started_at: Option<f64>,
    /// Reached STOPPED.
    pub stopped_at: Option<f64>,
    /// Bumped on every change.
    pub version: u64,
    /// Containers, in task definition order.
    pub containers: Vec<ContainerRecord>,
    /// Started with enableExecuteCommand: ECS Exec is allowed.
    #[serde(default)]
    pub enable_execute_command: bool,
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl TaskRecord {
    /// A new task, PENDING, with every container not yet started.
    pub fn new(
        task_id: String,
        cluster: String,
        task_definition_arn: String,
        task_definition: TaskDefinition,
        overrides: Option<TaskOverride>,
    ) -> Self {
        let containers = task_definition
            .container_definitions
            .iter()
            .map(|c| ContainerRecord {
                name: c.name.clone(),
                essential: c.is_essential(),
                last_status: TaskStatus::Pending,
                exit_code: None,
                reason: None,
                bindings: Vec::new(),
                health_status: HealthStatus::Unknown,
                handle: None,
                restart_count: 0,
                ip: None,
            })
            .collect();
        Self {
            task_id,
            cluster,
            task_definition_arn,
            task_definition,
            overrides,
            desired_status: DesiredStatus::Running,
            last_status: TaskStatus::Pending,
            health_status: HealthStatus::Unknown,
            stop_code: None,
            stopped_reason: None,
            stop_timeout_secs: None,
            created_at: now(),
            started_at: None,
            stopped_at: None,
            version: 1,
            containers,
            enable_execute_command: false,
        }
    }

    /// Whether the task has stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.last_status == TaskStatus::Stopped
    }

    /// Static host ports its running containers hold.
    pub fn host_ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.containers
            .iter()
            .filter(|c| c.last_status != TaskStatus::Stopped)
            .flat_map(|c| c.bindings.iter().map(|b| b.host_port))
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::TaskState {
        pb::TaskState {
            task_id: self.task_id.clone(),
            last_status: pb::TaskStatus::from(self.last_status) as i32,
            desired_status: match self.desired_status {
                DesiredStatus::Stopped => pb::TaskStatus::Stopped as i32,
                _ => pb::TaskStatus::Running as i32,
            },
            health_status: pb::HealthStatus::from(self.health_status) as i32,
            containers: self
                .containers
                .iter()
                .map(|c| pb::ContainerState {
                    name: c.name.clone(),
                    last_status: pb::TaskStatus::from(c.last_status) as i32,
                    exit_code: c.exit_code,
                    reason: c.reason.clone().unwrap_or_default(),
                    network_bindings: c
                        .bindings
                        .iter()
                        .map(|b| pb::NetworkBinding {
                            bind_ip: b.bind_ip.clone(),
                            container_port: b.container_port,
                            host_port: b.host_port,
                            protocol: match b.protocol {
                                capstan_core::taskdef::Protocol::Udp => "udp".into(),
                                capstan_core::taskdef::Protocol::Tcp => "tcp".into(),
                            },
                        })
                        .collect(),
                    health_status: pb::HealthStatus::from(c.health_status) as i32,
                    runtime_id: c
                        .handle
                        .as_ref()
                        .map(Handle::runtime_id)
                        .unwrap_or_default(),
                    restart_count: c.restart_count,
                    private_ipv4_address: c.ip.clone().unwrap_or_default(),
                })
                .collect(),
            stop_code: self.stop_code.map_or(0, |c| pb::StopCode::from(c) as i32),
            stopped_reason: self.stopped_reason.clone().unwrap_or_default(),
            created_at: Some(to_timestamp(self.created_at)),
            started_at: self.started_at.map(to_timestamp),
            stopped_at: self.stopped_at.map(to_timestamp),
            version: self.version,
        }
    }
}

//! Tasks in the shape of ECS's `Task` (written by the scheduler), and RunTask overrides.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::taskdef::Protocol;
use crate::{KeyValuePair, Tag, Timestamp};

/// Task and container `lastStatus`, in lifecycle order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting for capacity or set-up before launch.
    #[default]
    Provisioning,
    /// Sent to an agent, not yet running.
    Pending,
    /// Started; registering with load balancers.
    Activating,
    /// Running.
    Running,
    /// Deregistering from load balancers before the stop.
    Deactivating,
    /// The agent is stopping it.
    Stopping,
    /// Cleaning up after the stop.
    Deprovisioning,
    /// Stopped.
    Stopped,
}

impl TaskStatus {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

/// Task `desiredStatus`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    /// Keep it running.
    #[default]
    Running,
    /// Only ever a lastStatus in ECS; accepted for completeness.
    Pending,
    /// Stop it.
    Stopped,
}

/// Container and task health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Passed its checks.
    Healthy,
    /// Failed its checks.
    Unhealthy,
    /// Being evaluated, or no check defined.
    #[default]
    Unknown,
}

/// Why a task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopCode {
    /// It never reached RUNNING.
    TaskFailedToStart,
    /// An essential container exited.
    EssentialContainerExited,
    /// A user called StopTask.
    UserInitiated,
    /// The service scheduler stopped it.
    ServiceSchedulerInitiated,
    /// Spot interruption.
    SpotInterruption,
    /// Termination notice.
    TerminationNotice,
    /// The host failed or was lost.
    InfrastructureHealth,
}

/// A port binding of a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    /// Host address the port is bound on.
    #[serde(default, rename = "bindIP")]
    pub bind_ip: String,
    /// Container port.
    pub container_port: u32,
    /// Host port.
    pub host_port: u32,
    /// tcp or udp.
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

/// One container of a task (ECS `Container`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Container name from the task definition.
    pub name: String,
    /// Image.
    pub image: String,
    /// Container status.
    pub last_status: TaskStatus,
    /// Exit code once stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Port bindings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_bindings: Vec<NetworkBinding>,
    /// Health from its health check.
    pub health_status: HealthStatus,
    /// Docker container id or process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// Times its `restartPolicy` restarted it in place.
    #[serde(skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// awsvpc: the task's network interface, as ECS reports it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<NetworkInterface>,
}

/// A container's network interface (awsvpc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkInterface {
    /// The task's attachment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    /// Its address.
    #[serde(rename = "privateIpv4Address", skip_serializing_if = "Option::is_none")]
    pub private_ipv4_address: Option<String>,
}

/// A task attachment (ECS `Attachment`): an awsvpc task's network interface, an
/// `ElasticNetworkInterface` whose details hold `privateIPv4Address`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    /// Its id.
    pub id: String,
    /// `ElasticNetworkInterface`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `ATTACHED` while the task has it.
    pub status: String,
    /// `networkInterfaceId`, `privateIPv4Address`, `subnetId`.
    pub details: Vec<crate::KeyValuePair>,
}

/// ECS's attachment type for a task's network interface.
pub const ENI: &str = "ElasticNetworkInterface";

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A task: what the scheduler records under `/capstan/tasks/<cluster>/<taskId>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Task {
    /// `arn:capstan:ecs:local:000000000000:task/<cluster>/<id>`.
    pub task_arn: String,
    /// Cluster ARN.
    pub cluster_arn: String,
    /// `family:revision` the task runs.
    pub task_definition_arn: String,
    /// Container instance id it was placed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    /// Current status.
    pub last_status: TaskStatus,
    /// RUNNING or STOPPED.
    pub desired_status: DesiredStatus,
    /// From the essential containers' health.
    pub health_status: HealthStatus,
    /// CPU units reserved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// MiB reserved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Per-container state.
    pub containers: Vec<Container>,
    /// Service tasks: the deployment id; RunTask: the caller's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// `service:<name>` or `family:<family>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Bumped on every change.
    pub version: u64,
    /// Why it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    /// Free-text reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// RunTask overrides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    /// Capacity provider it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_provider_name: Option<String>,
    /// Zone of its instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Entered PROVISIONING/PENDING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Reached RUNNING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Began stopping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Timestamp>,
    /// Reached STOPPED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// awsvpc: its network interface.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Run with ECS Exec allowed (from its service or its RunTask/StartTask request).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enable_execute_command: bool,
}

/// RunTask / StartTask overrides (ECS `TaskOverride`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TaskOverride {
    /// Per-container overrides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_overrides: Vec<ContainerOverride>,
    /// Task-level CPU units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Value>,
}

/// One container's overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerOverride {
    /// Container to override.
    pub name: String,
    /// Replaces the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Added to (and replacing same-named) environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    /// CPU units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Hard memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Soft memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_files: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<Value>,
}

/// Task health from container health: UNHEALTHY if any essential container is, else UNKNOWN if
/// any essential container is, else HEALTHY (ECS §1.8).
pub fn task_health<'a>(essential: impl IntoIterator<Item = &'a HealthStatus>) -> HealthStatus {
    let mut result = HealthStatus::Healthy;
    for h in essential {
        match h {
            HealthStatus::Unhealthy => return HealthStatus::Unhealthy,
            HealthStatus::Unknown => result = HealthStatus::Unknown,
            HealthStatus::Healthy => {}
        }
    }
    result
}

/// What a service's task group starts with: ECS spells it `service:<name>`.
pub const SERVICE_GROUP_PREFIX: &str = "service:";

/// The task group of service `service`'s tasks.
pub fn service_group(service: &str) -> String {
    format!("{SERVICE_GROUP_PREFIX}{service}")
}

/// The service a task group belongs to; `None` for a group of one-off tasks.
pub fn group_service(group: &str) -> Option<&str> {
    group.strip_prefix(SERVICE_GROUP_PREFIX)
}

/// The id at the end of a key or an ARN.
pub fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl Task {
    /// The task id: the last segment of the ARN.
    pub fn id(&self) -> &str {
        last_segment(&self.task_arn)
    }

    /// The cluster's name: the last segment of `clusterArn`.
    pub fn cluster(&self) -> &str {
        last_segment(&self.cluster_arn)
    }

    /// The service whose task this is; `None` for a one-off (RunTask) task.
    pub fn service(&self) -> Option<&str> {
        self.group.as_deref().and_then(group_service)
    }

    /// The id of the container instance it is placed on.
    pub fn instance_id(&self) -> Option<&str> {
        self.container_instance_arn.as_deref().map(last_segment)
    }

    /// awsvpc: the address of its network interface.
    pub fn private_ipv4(&self) -> Option<&str> {
        self.attachments
            .iter()
            .filter(|a| a.kind == ENI)
            .flat_map(|a| &a.details)
            .find(|d| d.name == "privateIPv4Address")
            .map(|d| d.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_health_uses_ecs_priority() {
        use HealthStatus::*;
        assert_eq!(task_health(&[Healthy, Healthy]), Healthy);
        assert_eq!(task_health(&[Healthy, Unknown]), Unknown);
        assert_eq!(task_health(&[Unknown, Unhealthy]), Unhealthy);
        assert_eq!(task_health(&[]), Healthy);
    }

    #[test]
    fn a_task_names_its_service_cluster_and_instance() {
        let t = Task {
            task_arn: "arn:capstan:ecs:local:000000000000:task/prod/abc".into(),
            cluster_arn: "arn:capstan:ecs:local:000000000000:cluster/prod".into(),
            group: Some(service_group("web")),
            container_instance_arn: Some("i-1".into()),
            ..Default::default()
        };
        assert_eq!(
            (t.id(), t.cluster(), t.service(), t.instance_id()),
            ("abc", "prod", Some("web"), Some("i-1"))
        );
        let one_off = Task {
            group: Some("family:web".into()),
            ..Default::default()
        };
        assert_eq!(one_off.service(), None);
        assert_eq!(one_off.instance_id(), None);
    }

    #[test]
    fn statuses_order_like_the_lifecycle() {
        assert!(TaskStatus::Pending < TaskStatus::Running);
        assert!(TaskStatus::Deactivating < TaskStatus::Stopped);
    }
}

/// A task's scale-in protection as stored under `taskprotection/<cluster>/<taskId>` (ECS's
/// `ProtectedTask` without the ARN). The key is written under an etcd lease that ends at
/// `expirationDate`, so an expired protection disappears on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskProtection {
    /// Always true for a stored protection (turning it off deletes the key).
    pub protection_enabled: bool,
    /// When it ends (epoch seconds).
    pub expiration_date: f64,
}

/// Longest task protection ECS allows, minutes (48 hours).
pub const MAX_PROTECTION_MINUTES: u32 = 2880;
/// ECS's default task protection, minutes.
pub const DEFAULT_PROTECTION_MINUTES: u32 = 120;

impl TaskProtection {
    /// Whether it still protects at `now` (epoch seconds).
    pub fn active(&self, now: f64) -> bool {
        self.protection_enabled && self.expiration_date > now
    }
}

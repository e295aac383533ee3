//! Task definitions in the shape of ECS's `RegisterTaskDefinition` input.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::container::{
    HostEntry, LinuxParameters, MountPoint, NamespaceMode, ResourceRequirement, RestartPolicy,
    SystemControl, Ulimit, Volume, VolumeFrom,
};
use crate::validate::{Issue, Report, ValidationError, check_name, index, join};
use crate::{KeyValuePair, Tag, Timestamp};

/// Most containers one task definition may have (ECS quota).
pub const MAX_CONTAINERS: usize = 10;
/// Fewest MiB Docker accepts for a container's memory.
pub const MIN_CONTAINER_MEMORY_MIB: u32 = 6;
/// Task-level CPU range, in CPU units (1024 = one vCPU).
pub const TASK_CPU_RANGE: (u32, u32) = (128, 196_608);
/// Default stop timeout, seconds: SIGTERM, then SIGKILL after this long.
pub const DEFAULT_STOP_TIMEOUT_SECS: u32 = 30;
/// Most placement constraints a task definition may carry.
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;

/// A CPU or memory amount as ECS accepts it at task level: a number, or a string such as
/// `"256"`, `"1 vCPU"`, `"512"` or `"1 GB"`. Kept as written so documents round-trip unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// A plain number.
    Number(u64),
    /// A string, possibly with a unit.
    Text(String),
}

impl Quantity {
    /// CPU units (1024 per vCPU), or `None` if the text is not a CPU amount.
    pub fn cpu_units(&self) -> Option<u32> {
        match self {
            Quantity::Number(n) => u32::try_from(*n).ok(),
            Quantity::Text(t) => parse_with_unit(t, &["vcpu"], 1024.0),
        }
    }

    /// MiB, or `None` if the text is not a memory amount.
    pub fn memory_mib(&self) -> Option<u32> {
        match self {
            Quantity::Number(n) => u32::try_from(*n).ok(),
            Quantity::Text(t) => parse_with_unit(t, &["gb"], 1024.0),
        }
    }
}

fn parse_with_unit(text: &str, units: &[&str], scale: f64) -> Option<u32> {
    let t = text.trim().to_ascii_lowercase();
    if let Ok(n) = t.parse::<u32>() {
        return Some(n);
    }
    for unit in units {
        if let Some(num) = t.strip_suffix(unit) {
            let v: f64 = num.trim().parse().ok()?;
            let scaled = v * scale;
            if scaled.is_finite() && scaled >= 0.0 && scaled <= f64::from(u32::MAX) {
                return Some(scaled.round() as u32);
            }
        }
    }
    None
}

/// Network mode of a task (`bridge` is the default on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Ports are mapped from the host; `hostPort` 0 means a dynamic port.
    Bridge,
    /// The task shares the host's network; `hostPort` equals `containerPort`.
    Host,
    /// One network interface per task; `hostPort` equals `containerPort`.
    Awsvpc,
    /// No networking; no port mappings allowed.
    None,
}

/// Launch compatibility named in `requiresCompatibilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// Instances in the cluster.
    Ec2,
    /// AWS Fargate; Capstan validates its rules and runs the task on instances.
    Fargate,
    /// External instances.
    External,
    /// ECS Managed Instances.
    ManagedInstances,
}

/// Lifecycle status of a registered revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskDefinitionStatus {
    /// Usable for new tasks and services.
    Active,
    /// Deregistered: existing tasks keep running, nothing new may use it.
    Inactive,
    /// Deletion requested.
    DeleteInProgress,
}

/// A task definition: `RegisterTaskDefinition` input, plus the fields Capstan adds on registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TaskDefinition {
    /// Family name; revisions are numbered within it.
    pub family: String,
    /// The containers, 1 to 10.
    pub container_definitions: Vec<ContainerDefinition>,
    /// Task-level CPU units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Task-level memory, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Network mode; `bridge` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// `memberOf` constraints every task of this definition must satisfy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<TaskDefinitionPlacementConstraint>,
    /// Launch types this definition must be valid for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<Compatibility>,
    /// Up to 50 tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,

    /// Revision within the family, set on registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// ACTIVE or INACTIVE, set on registration and deregistration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskDefinitionStatus>,
    /// When it was registered (epoch seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    /// When it was deregistered (epoch seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<Timestamp>,
    /// ARN, as DescribeTaskDefinition returns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,

    // ECS defines these; Capstan keeps them and warns that it does not act on them.
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<Value>,
    /// Data volumes its containers mount: host paths, scratch or Docker volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// `host` or `task`: the process namespace its containers share (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<NamespaceMode>,
    /// `host`, `task` or `none`: the IPC namespace of its containers (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<NamespaceMode>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_configuration: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_accelerators: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_fault_injection: Option<Value>,
    /// Response-only field of DescribeTaskDefinition; kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires_attributes: Option<Value>,
    /// Response-only field of DescribeTaskDefinition; kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibilities: Option<Value>,
    /// Response-only field of DescribeTaskDefinition; kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_by: Option<Value>,
    /// Response-only field of DescribeTaskDefinition; kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_requested_at: Option<Value>,
}

/// One container of a task definition (ECS `ContainerDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerDefinition {
    /// Container name, unique within the task.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// CPU units reserved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Hard memory limit, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Soft memory limit, MiB; what placement reserves when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    /// Ports the container listens on and how they map to the host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Whether the task stops when this container stops; true when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// Entry point (Docker `Entrypoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    /// Command (Docker `Cmd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    /// Container health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Containers that must reach a condition before this one starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    /// Seconds to wait for dependencies before giving up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// Working directory of the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Labels added to the Docker container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_labels: Option<BTreeMap<String, String>>,

    // ECS defines these; Capstan keeps them and warns that it does not act on them.
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Value>,
    /// Restart the container in place when it exits, instead of stopping the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// `[{value, type}]`: env files (`KEY=value` lines) the agent reads at start, from a Capstan
    /// secret (`secret:<name>[:version]`) or a file under its `--environment-files-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_files: Option<Value>,
    /// Where the task's volumes appear in this container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    /// Other containers of the task whose volumes this one mounts (Docker).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<VolumeFrom>,
    /// Capabilities, devices, init, tmpfs, shared memory and swap (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
    /// `[{name, valueFrom}]`: Capstan secrets the agent puts in the environment at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_consistency: Option<Value>,
    /// The container's host name (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The user the container runs as: `name`, `uid`, `uid:gid` or `name:group` (the process
    /// runtime runs it as that user; Docker passes it on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// No network at all (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_networking: Option<bool>,
    /// Full host privileges (Docker only); refused unless the agent allows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// A read-only root filesystem (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    /// DNS servers (Docker).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// DNS search domains (Docker).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search_domains: Vec<String>,
    /// Entries added to `/etc/hosts` (Docker).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// Docker `--security-opt` values (`no-new-privileges`, `apparmor:…`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub docker_security_options: Vec<String>,
    /// Keep stdin open (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Allocate a terminal (Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_terminal: Option<bool>,
    /// Resource limits (Docker).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Logs are kept by the agent either way; `awslogs`' group and stream prefix name them in
    /// the CloudWatch Logs API; `json-file` and `local` go to Docker with their options.
    /// Other drivers are kept, not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<Value>,
    /// Namespaced kernel parameters (Docker).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system_controls: Vec<SystemControl>,
    /// GPUs (Docker device requests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_requirements: Vec<ResourceRequirement>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firelens_configuration: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_specs: Option<Value>,
}

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

/// A container port and how it maps to the host (ECS `PortMapping`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortMapping {
    /// Port inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u32>,
    /// Port on the host; absent or 0 = dynamic (bridge mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    /// `tcp` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Name of the mapping (Service Connect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port_range: Option<Value>,
}

impl PortMapping {
    /// The protocol, defaulting to TCP.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Tcp)
    }

    /// The static host port, if one is asked for (absent or 0 is dynamic).
    pub fn static_host_port(&self) -> Option<u32> {
        self.host_port.filter(|p| *p != 0)
    }
}

/// A container health check (ECS `HealthCheck`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HealthCheck {
    /// `["CMD", exe, args…]` or `["CMD-SHELL", "shell command"]`.
    pub command: Vec<String>,
    /// Seconds between checks (5–300, default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    /// Seconds before a check fails (2–60, default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Consecutive failures before UNHEALTHY (1–10, default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Grace seconds in which failures do not count (0–300, default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u32>,
}

impl HealthCheck {
    /// Interval with ECS's default.
    pub fn interval_secs(&self) -> u32 {
        self.interval.unwrap_or(30)
    }
    /// Timeout with ECS's default.
    pub fn timeout_secs(&self) -> u32 {
        self.timeout.unwrap_or(5)
    }
    /// Retries with ECS's default.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(3)
    }
    /// Start period with ECS's default.
    pub fn start_period_secs(&self) -> u32 {
        self.start_period.unwrap_or(0)
    }
}

/// Condition a dependency must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has run to completion.
    Complete,
    /// The dependency has exited 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

impl DependencyCondition {
    /// ECS's spelling of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Start => "START",
            DependencyCondition::Complete => "COMPLETE",
            DependencyCondition::Success => "SUCCESS",
            DependencyCondition::Healthy => "HEALTHY",
        }
    }
}

/// `dependsOn` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDependency {
    /// The container depended upon.
    pub container_name: String,
    /// What it must reach.
    pub condition: DependencyCondition,
}

/// A `memberOf` constraint in a task definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionPlacementConstraint {
    /// Always `memberOf` in a task definition.
    #[serde(rename = "type")]
    pub kind: String,
    /// Cluster query language expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

impl ContainerDefinition {
    /// Whether the container is essential (ECS default: true).
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// Memory placement reserves for the container: `memoryReservation`, else `memory`.
    pub fn reserved_memory_mib(&self) -> u32 {
        self.memory_reservation.or(self.memory).unwrap_or(0)
    }

    /// Stop timeout with ECS's default.
    pub fn stop_timeout_secs(&self) -> u32 {
        self.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT_SECS)
    }
}

impl TaskDefinition {
    /// `family:revision`, or the family alone before registration.
    pub fn family_revision(&self) -> String {
        match self.revision {
            Some(r) => format!("{}:{r}", self.family),
            None => self.family.clone(),
        }
    }

    /// The network mode, defaulting to bridge.
    pub fn network_mode(&self) -> NetworkMode {
        self.network_mode.unwrap_or(NetworkMode::Bridge)
    }

    /// CPU units a task of this definition reserves: task-level cpu, else the containers' sum.
    pub fn reserved_cpu(&self) -> u32 {
        self.cpu
            .as_ref()
            .and_then(Quantity::cpu_units)
            .unwrap_or_else(|| {
                self.container_definitions
                    .iter()
                    .map(|c| c.cpu.unwrap_or(0))
                    .sum()
            })
    }

    /// MiB a task of this definition reserves: task-level memory, else the containers' sum.
    pub fn reserved_memory(&self) -> u32 {
        self.memory
            .as_ref()
            .and_then(Quantity::memory_mib)
            .unwrap_or_else(|| {
                self.container_definitions
                    .iter()
                    .map(ContainerDefinition::reserved_memory_mib)
                    .sum()
            })
    }

    /// Validates against ECS's rules; returns warnings for kept-but-ignored fields.
    pub fn validate(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        check_name(&mut r, "family", &self.family);

        let n = self.container_definitions.len();
        if n == 0 {
            r.error(
                "containerDefinitions",
                "at least one container definition is required",
            );
        } else if n > MAX_CONTAINERS {
            r.error(
                "containerDefinitions",
                format!("at most {MAX_CONTAINERS} containers are allowed, got {n}"),
            );
        }

        let task_cpu = self.validate_quantity(&mut r, "cpu", self.cpu.as_ref(), true);
        let task_mem = self.validate_quantity(&mut r, "memory", self.memory.as_ref(), false);
        if let Some(cpu) = task_cpu {
            r.range("cpu", cpu, TASK_CPU_RANGE.0, TASK_CPU_RANGE.1);
        }

        if self
            .requires_compatibilities
            .contains(&Compatibility::Fargate)
        {
            self.validate_fargate(&mut r, task_cpu, task_mem);
        }

        if self.placement_constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
            r.error(
                "placementConstraints",
                format!("at most {MAX_PLACEMENT_CONSTRAINTS} constraints are allowed"),
            );
        }
        for (i, c) in self.placement_constraints.iter().enumerate() {
            let path = index("", "placementConstraints", i);
            if c.kind != "memberOf" {
                r.error(
                    join(&path, "type"),
                    format!(
                        "task definitions only accept memberOf constraints, got {:?}",
                        c.kind
                    ),
                );
            }
            match &c.expression {
                Some(e) if !e.trim().is_empty() && e.len() <= 2000 => {}
                _ => r.error(
                    join(&path, "expression"),
                    "memberOf needs an expression of 1-2000 characters",
                ),
            }
        }
        if self.tags.len() > 50 {
            r.error("tags", "at most 50 tags are allowed");
        }

        let mut names = BTreeSet::new();
        let mut sum_cpu = 0u64;
        let mut sum_mem = 0u64;
        let mut any_essential = false;
        for (i, c) in self.container_definitions.iter().enumerate() {
            let path = index("", "containerDefinitions", i);
            if !names.insert(c.name.as_str()) {
                r.error(
                    join(&path, "name"),
                    format!("container name {:?} is used twice", c.name),
                );
            }
            any_essential |= c.is_essential();
            sum_cpu += u64::from(c.cpu.unwrap_or(0));
            sum_mem += u64::from(c.reserved_memory_mib());
            self.validate_container(&mut r, &path, c, task_mem.is_some());
        }
        if n > 0 && !any_essential {
            r.error(
                "containerDefinitions",
                "at least one container must be essential",
            );
        }
        if let Some(cpu) = task_cpu
            && sum_cpu > u64::from(cpu)
        {
            r.error(
                "containerDefinitions",
                format!("the containers reserve {sum_cpu} CPU units, more than the task's {cpu}"),
            );
        }
        if let Some(mem) = task_mem
            && sum_mem > u64::from(mem)
        {
            r.error(
                "containerDefinitions",
                format!("the containers reserve {sum_mem} MiB, more than the task's {mem} MiB"),
            );
        }
        for (i, c) in self.container_definitions.iter().enumerate() {
            self.validate_dependencies(&mut r, &index("", "containerDefinitions", i), c);
        }

        r.ignored("taskRoleArn", self.task_role_arn.is_some());
        r.ignored("executionRoleArn", self.execution_role_arn.is_some());
        crate::container::validate_volumes(&mut r, &self.volumes);
        if self.pid_mode == Some(NamespaceMode::None) {
            r.error("pidMode", "must be host or task");
        }
        r.ignored("proxyConfiguration", self.proxy_configuration.is_some());
        r.ignored(
            "inferenceAccelerators",
            self.inference_accelerators.is_some(),
        );
        r.ignored("ephemeralStorage", self.ephemeral_storage.is_some());
        r.ignored("runtimePlatform", self.runtime_platform.is_some());
        r.ignored(
            "enableFaultInjection",
            self.enable_fault_injection.is_some(),
        );
        r.finish()
    }

    fn validate_quantity(
        &self,
        r: &mut Report,
        path: &str,
        q: Option<&Quantity>,
        cpu: bool,
    ) -> Option<u32> {
        let q = q?;
        let parsed = if cpu { q.cpu_units() } else { q.memory_mib() };
        if parsed.is_none() {
            let example = if cpu {
                "\"256\" or \"1 vCPU\""
            } else {
                "\"512\" or \"1 GB\""
            };
            r.error(
                path,
                format!("{q:?} is not a valid amount; use e.g. {example}"),
            );
        }
        parsed
    }

    fn validate_fargate(&self, r: &mut Report, cpu: Option<u32>, mem: Option<u32>) {
        if self.network_mode() != NetworkMode::Awsvpc {
            r.error("networkMode", "FARGATE requires networkMode awsvpc");
        }
        let (Some(cpu), Some(mem)) = (cpu, mem) else {
            r.error("cpu", "FARGATE requires task-level cpu and memory");
            return;
        };
        let gb = |g: u32| g * 1024;
        let ok = match cpu {
            256 => [512, 1024, 2048].contains(&mem),
            512 => (gb(1)..=gb(4)).contains(&mem) && mem % 1024 == 0,
            1024 => (gb(2)..=gb(8)).contains(&mem) && mem % 1024 == 0,
            2048 => (gb(4)..=gb(16)).contains(&mem) && mem % 1024 == 0,
            4096 => (gb(8)..=gb(30)).contains(&mem) && mem % 1024 == 0,
            8192 => (gb(16)..=gb(60)).contains(&mem) && mem % gb(4) == 0,
            16384 => (gb(32)..=gb(120)).contains(&mem) && mem % gb(8) == 0,
            _ => false,
        };
        if !ok {
            r.error(
                "memory",
                format!("{cpu} CPU units with {mem} MiB is not a valid FARGATE combination"),
            );
        }
    }

    fn validate_container(
        &self,
        r: &mut Report,
        path: &str,
        c: &ContainerDefinition,
        task_mem: bool,
    ) {
        if c.name.is_empty() {
            r.error(
                join(path, "name"),
                "Container.name should not be null or empty.",
            );
        } else {
            check_name(r, &join(path, "name"), &c.name);
        }
        let image_name = c.image.split('@').next().unwrap_or_default();
        if c.image.trim().is_empty() {
            r.error(join(path, "image"), "image is required");
        } else if image_name.len() > 255 {
            r.error(join(path, "image"), "image must be at most 255 characters");
        }
        if !task_mem && c.memory.is_none() && c.memory_reservation.is_none() {
            r.error(
                path,
                format!(
                    "Invalid setting for container '{}'. At least one of 'memory' or 'memoryReservation' must be specified.",
                    c.name
                ),
            );
        }
        for (field, v) in [
            ("memory", c.memory),
            ("memoryReservation", c.memory_reservation),
        ] {
            if let Some(v) = v
                && v < MIN_CONTAINER_MEMORY_MIB
            {
                r.error(
                    join(path, field),
                    format!("must be at least {MIN_CONTAINER_MEMORY_MIB} MiB, got {v}"),
                );
            }
        }
        if let (Some(hard), Some(soft)) = (c.memory, c.memory_reservation)
            && hard <= soft
        {
            r.error(
                join(path, "memory"),
                format!("must be greater than memoryReservation ({soft}), got {hard}"),
            );
        }
        if let Some(t) = c.stop_timeout {
            r.range(&join(path, "stopTimeout"), t, 1, 3600);
        }
        if let Some(t) = c.start_timeout {
            r.range(&join(path, "startTimeout"), t, 1, 3600);
        }
        self.validate_ports(r, path, c);
        if let Some(hc) = &c.health_check {
            validate_health_check(r, &join(path, "healthCheck"), hc);
        }
        if let Some(secrets) = &c.secrets {
            validate_secrets(r, &join(path, "secrets"), secrets);
        }
        if let Some(files) = &c.environment_files {
            validate_environment_files(r, &join(path, "environmentFiles"), files);
        }
        // json-file and local go to Docker as they are; another driver (splunk, …) is not used:
        // the agent keeps the logs itself, and Docker could not serve them back.
        if let Some(driver) = c
            .log_configuration
            .as_ref()
            .and_then(|l| l["logDriver"].as_str())
            .filter(|d| !["awslogs", "json-file", "local"].contains(d))
        {
            r.warn(
                join(path, "logConfiguration.logDriver"),
                format!("{driver} is not used: the agent keeps every container's logs (capstan task logs)"),
            );
        }
        crate::logging::validate_log_mode(r, path, c.log_configuration.as_ref());
        let volumes: BTreeSet<&str> = self.volumes.iter().map(|v| v.name.as_str()).collect();
        crate::container::validate_mount_points(r, path, &c.mount_points, &volumes);
        let names: BTreeSet<&str> = self
            .container_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        crate::container::validate_volumes_from(r, path, &c.name, &c.volumes_from, &names);
        if let Some(lp) = &c.linux_parameters {
            crate::container::validate_linux_parameters(r, path, lp);
        }
        crate::container::validate_ulimits(r, path, &c.ulimits);
        crate::container::validate_system_controls(r, path, &c.system_controls);
        crate::container::validate_names(r, path, &c.dns_servers, &c.extra_hosts);
        if let Some(rp) = &c.restart_policy {
            crate::container::validate_restart_policy(r, path, rp);
        }
        crate::container::validate_resource_requirements(r, path, &c.resource_requirements);
        if self.network_mode() == NetworkMode::Awsvpc {
            // The task's containers share one network namespace, whose names are its own.
            for (field, present) in [
                ("hostname", c.hostname.is_some()),
                ("dnsServers", !c.dns_servers.is_empty()),
                ("dnsSearchDomains", !c.dns_search_domains.is_empty()),
                ("extraHosts", !c.extra_hosts.is_empty()),
            ] {
                if present {
                    r.error(
                        join(path, field),
                        format!("{field} is not allowed with networkMode awsvpc"),
                    );
                }
            }
        }
        for (field, present) in [
            ("repositoryCredentials", c.repository_credentials.is_some()),
            ("links", c.links.is_some()),
            ("versionConsistency", c.version_consistency.is_some()),
            ("firelensConfiguration", c.firelens_configuration.is_some()),
            ("credentialSpecs", c.credential_specs.is_some()),
        ] {
            r.ignored(join(path, field), present);
        }
    }

    fn validate_ports(&self, r: &mut Report, path: &str, c: &ContainerDefinition) {
        let mode = self.network_mode();
        if mode == NetworkMode::None && !c.port_mappings.is_empty() {
            r.error(
                join(path, "portMappings"),
                "networkMode none does not allow port mappings",
            );
        }
        let mut seen: BTreeMap<u32, Protocol> = BTreeMap::new();
        for (i, pm) in c.port_mappings.iter().enumerate() {
            let pp = index(path, "portMappings", i);
            let Some(cp) = pm.container_port else {
                r.error(join(&pp, "containerPort"), "containerPort is required");
                continue;
            };
            r.range(&join(&pp, "containerPort"), cp, 1, 65535);
            if let Some(hp) = pm.host_port {
                r.range(&join(&pp, "hostPort"), hp, 0, 65535);
                if matches!(mode, NetworkMode::Host | NetworkMode::Awsvpc) && hp != 0 && hp != cp {
                    r.error(
                        join(&pp, "hostPort"),
                        format!(
                            "with this networkMode hostPort must be empty or equal to containerPort ({cp})"
                        ),
                    );
                }
            }
            if let Some(prev) = seen.insert(cp, pm.protocol())
                && prev != pm.protocol()
            {
                r.error(
                    join(&pp, "protocol"),
                    format!("container port {cp} cannot be exposed for more than one protocol"),
                );
            }
            r.ignored(join(&pp, "appProtocol"), pm.app_protocol.is_some());
            r.ignored(
                join(&pp, "containerPortRange"),
                pm.container_port_range.is_some(),
            );
        }
    }

    fn validate_dependencies(&self, r: &mut Report, path: &str, c: &ContainerDefinition) {
        for (i, d) in c.depends_on.iter().enumerate() {
            let dp = index(path, "dependsOn", i);
            let Some(target) = self
                .container_definitions
                .iter()
                .find(|t| t.name == d.container_name)
            else {
                r.error(
                    join(&dp, "containerName"),
                    format!(
                        "no container named {:?} in this task definition",
                        d.container_name
                    ),
                );
                continue;
            };
            if target.name == c.name {
                r.error(
                    join(&dp, "containerName"),
                    "a container cannot depend on itself",
                );
            }
            match d.condition {
                DependencyCondition::Complete | DependencyCondition::Success
                    if target.is_essential() =>
                {
                    r.error(
                        join(&dp, "condition"),
                        format!(
                            "{} cannot be used on essential container {:?}",
                            d.condition.as_str(),
                            target.name
                        ),
                    );
                }
                DependencyCondition::Healthy if target.health_check.is_none() => {
                    r.error(
                        join(&dp, "condition"),
                        format!("HEALTHY needs a healthCheck on container {:?}", target.name),
                    );
                }
                _ => {}
            }
        }
    }
}

/// `environmentFiles`: a list of `{value, type}`, each a source [`crate::secret::EnvFile`]
/// understands.
fn validate_environment_files(r: &mut Report, path: &str, files: &Value) {
    let Some(items) = files.as_array() else {
        r.error(path, "must be a list of {value, type}");
        return;
    };
    for (i, f) in items.iter().enumerate() {
        if f["value"]
            .as_str()
            .and_then(crate::secret::EnvFile::parse)
            .is_none()
        {
            r.error(
                format!("{path}[{i}].value"),
                "must be `secret:<name>[:version]` or an absolute path of a `.env` file on the host",
            );
        }
    }
}

/// `secrets`: a list of `{name, valueFrom}`, each naming a Capstan secret.
fn validate_secrets(r: &mut Report, path: &str, secrets: &Value) {
    let Some(items) = secrets.as_array() else {
        r.error(path, "must be a list of {name, valueFrom}");
        return;
    };
    for (i, s) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match s["name"].as_str() {
            Some(n) if !n.is_empty() && !n.contains('=') && !n.contains('\0') => {}
            _ => r.error(format!("{at}.name"), "must be an environment variable name"),
        }
        match s["valueFrom"].as_str() {
            Some(v) if crate::secret::parse_value_from(v).is_some() => {}
            _ => r.error(
                format!("{at}.valueFrom"),
                "must name a secret: `name`, `name:version` or a Secrets Manager or SSM parameter ARN",
            ),
        }
    }
}
/// Checks a container health check against ECS's ranges.
fn validate_health_check(r: &mut Report, path: &str, hc: &HealthCheck) {
    match hc.command.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if hc.command.len() >= 2 => {}
        _ => r.error(
            join(path, "command"),
            "must start with \"CMD\" or \"CMD-SHELL\" followed by the command",
        ),
    }
    if let Some(v) = hc.interval {
        r.range(&join(path, "interval"), v, 5, 300);
    }
    if let Some(v) = hc.timeout {
        r.range(&join(path, "timeout"), v, 2, 60);
    }
    if let Some(v) = hc.retries {
        r.range(&join(path, "retries"), v, 1, 10);
    }
    if let Some(v) = hc.start_period {
        r.range(&join(path, "startPeriod"), v, 0, 300);
    }
}

/// A task definition reference: `family:revision` or `family` (latest ACTIVE revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionRef {
    /// The family.
    pub family: String,
    /// The revision, or `None` for the latest ACTIVE one.
    pub revision: Option<u32>,
}

impl TaskDefinitionRef {
    /// Parses `family`, `family:revision`, or an ARN ending in `task-definition/family:revision`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let body = text
            .rsplit_once("task-definition/")
            .map_or(text, |(_, rest)| rest);
        let (family, revision) = match body.split_once(':') {
            Some((f, rev)) => {
                let rev: u32 = rev.parse().ok().filter(|r| *r > 0).ok_or_else(|| {
                    ValidationError::single(
                        "taskDefinition",
                        format!("Invalid revision number. Number: {rev}"),
                    )
                })?;
                (f, Some(rev))
            }
            None => (body, None),
        };
        let mut r = Report::default();
        check_name(&mut r, "taskDefinition", family);
        r.finish()?;
        Ok(Self {
            family: family.to_string(),
            revision,
        })
    }
}

impl std::fmt::Display for TaskDefinitionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.revision {
            Some(r) => write!(f, "{}:{r}", self.family),
            None => f.write_str(&self.family),
        }
    }
}

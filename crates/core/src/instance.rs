//! Container instances in the shape of ECS's `ContainerInstance` (written by agents).

use serde::{Deserialize, Serialize};

use crate::{Tag, Timestamp};

/// Container instance status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Accepts tasks.
    #[default]
    Active,
    /// Gets no new tasks; service tasks move elsewhere.
    Draining,
    /// Being registered.
    Registering,
    /// Being deregistered.
    Deregistering,
    /// Deregistered.
    Inactive,
}

/// A registered resource amount (ECS `Resource`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Resource {
    /// `CPU`, `MEMORY`, `PORTS`, `PORTS_UDP`.
    pub name: String,
    /// `INTEGER` or `STRINGSET`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Amount, for INTEGER resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integer_value: Option<i64>,
    /// Members, for STRINGSET resources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub string_set_value: Vec<String>,
}

impl Resource {
    /// An INTEGER resource.
    pub fn integer(name: &str, value: i64) -> Self {
        Self {
            name: name.into(),
            kind: "INTEGER".into(),
            integer_value: Some(value),
            string_set_value: Vec::new(),
        }
    }

    /// A STRINGSET resource.
    pub fn string_set(name: &str, values: Vec<String>) -> Self {
        Self {
            name: name.into(),
            kind: "STRINGSET".into(),
            integer_value: None,
            string_set_value: values,
        }
    }
}

/// An instance attribute (ECS `Attribute`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    /// Name, e.g. `ecs.availability-zone`.
    pub name: String,
    /// Value; absent for presence-only attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Agent version information.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VersionInfo {
    /// capstan-agent version.
    pub agent_version: String,
    /// Runtime (`docker <version>` or `process`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
}

/// A container instance registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerInstance {
    /// `arn:capstan:ecs:local:000000000000:container-instance/<cluster>/<id>`.
    pub container_instance_arn: String,
    /// Host name of the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    /// gRPC endpoint controllers dial (Capstan).
    pub agent_endpoint: String,
    /// Capacity provider that launched it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_provider_name: Option<String>,
    /// Bumped on every change.
    pub version: u64,
    /// Agent version.
    pub version_info: VersionInfo,
    /// Resources at registration.
    pub registered_resources: Vec<Resource>,
    /// Resources not reserved by tasks.
    pub remaining_resources: Vec<Resource>,
    /// ACTIVE or DRAINING.
    pub status: InstanceStatus,
    /// Why the status is what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Whether the agent is connected.
    pub agent_connected: bool,
    /// Tasks with desiredStatus RUNNING.
    pub running_tasks_count: u32,
    /// Tasks in PENDING.
    pub pending_tasks_count: u32,
    /// Attributes for placement.
    pub attributes: Vec<Attribute>,
    /// When it registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl ContainerInstance {
    /// The instance id: the last segment of the ARN.
    pub fn id(&self) -> &str {
        self.container_instance_arn
            .rsplit('/')
            .next()
            .unwrap_or(&self.container_instance_arn)
    }

    /// Value of attribute `name`, if the instance has it.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// INTEGER value of registered resource `name`.
    pub fn registered(&self, name: &str) -> Option<i64> {
        self.registered_resources
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.integer_value)
    }
}

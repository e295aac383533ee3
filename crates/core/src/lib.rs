//! Capstan's resource model: ECS-shaped JSON types, ECS's validation rules and the etcd key
//! layout. No async and no IO, so every other crate (and the pure planners) can depend on it.
//!
//! Users write spec documents (clusters, task definitions, services, capacity providers, target
//! groups, listeners) in ECS's own JSON shapes. Those types reject fields ECS does not define,
//! naming the field's path; fields ECS defines but Capstan does not act on are kept and reported
//! as warnings by `validate()`. Controller-written documents (tasks, deployments, status) are
//! lenient on read so that a newer writer never breaks an older reader.

pub mod capacity;
pub mod cluster;
pub mod deployment;
pub mod instance;
pub mod keys;
pub mod lb;
pub mod requests;
pub mod service;
pub mod status;
pub mod task;
pub mod taskdef;
pub mod validate;

use serde::{Deserialize, Serialize};

pub use capacity::{
    CapacityProvider, CapacityProviderStrategyItem, validate_capacity_provider_strategy,
};
pub use cluster::Cluster;
pub use deployment::Deployment;
pub use instance::ContainerInstance;
pub use keys::Keys;
pub use lb::{Listener, TargetGroup};
pub use service::Service;
pub use status::{ServiceEvent, ServiceStatusDoc};
pub use task::Task;
pub use taskdef::TaskDefinition;
pub use validate::{DocumentError, Issue, ValidationError, parse_json};

/// Seconds since the Unix epoch, as ECS's JSON protocol writes timestamps.
pub type Timestamp = f64;

/// A status document stamped with when it last changed; the stamp is not part of the change
/// (a controller writes the document only when something else in it moved).
pub trait Stamped {
    /// Sets `updatedAt`.
    fn stamp(&mut self, at: Option<Timestamp>);
}

macro_rules! stamped {
    ($($t:ty),*) => {$(
        impl Stamped for $t {
            fn stamp(&mut self, at: Option<Timestamp>) {
                self.updated_at = at;
            }
        }
    )*};
}

stamped!(
    ServiceStatusDoc,
    capacity::CapacityProviderStatusDoc,
    lb::TargetGroupStatusDoc
);

/// A `{key, value}` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tag {
    /// 1–128 characters.
    pub key: String,
    /// 0–256 characters.
    #[serde(default)]
    pub value: String,
}

/// A `{name, value}` pair (environment variables, attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValuePair {
    /// Variable name.
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// A spec document type users write: parsed strictly, then validated.
pub trait Spec: serde::de::DeserializeOwned + Serialize {
    /// Validates the parsed document; `Ok` carries warnings.
    fn check(&self) -> Result<Vec<Issue>, ValidationError>;
}

impl Spec for TaskDefinition {
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
}
impl Spec for Service {
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
}
impl Spec for Cluster {
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
}
impl Spec for CapacityProvider {
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
}
impl Spec for TargetGroup {
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
}
impl Spec for Listener {
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
}

/// A spec that parsed and validated, with its warnings.
#[derive(Debug, Clone)]
pub struct Accepted<T> {
    /// The document.
    pub value: T,
    /// Fields kept but not acted on, and similar notes.
    pub warnings: Vec<Issue>,
}

/// Parses and validates a spec document: the one entry point the API, the CLI and every
/// controller use, so etcdctl edits are judged by the same rules as API calls.
pub fn accept<T: Spec>(bytes: &[u8]) -> Result<Accepted<T>, DocumentError> {
    let value: T = parse_json(bytes)?;
    let warnings = value.check()?;
    Ok(Accepted { value, warnings })
}

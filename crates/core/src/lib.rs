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
pub mod container;
pub mod deployment;
pub mod instance;
pub mod keys;
pub mod lb;
pub mod logging;
pub mod requests;
pub mod secret;
pub mod service;
pub mod settings;
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
pub use keys::{Family, Keys};
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
    /// The key family documents of this type are stored under.
    const FAMILY: Family;

    /// Validates the parsed document; `Ok` carries warnings.
    fn check(&self) -> Result<Vec<Issue>, ValidationError>;

    /// Makes the document agree with the key it is stored at (`parts`, the key's segments after
    /// the family's): a name or revision it leaves out is taken from the key, one that differs
    /// is refused. Written through the API they always agree; with etcdctl they may not, and
    /// a task definition at `web/1` without `revision` must not run as `web`.
    fn conform(&mut self, parts: &[&str]) -> Result<(), String>;
}

/// Refuses a document whose `field` names something other than its key.
fn same_name(field: &str, doc: &str, key: &str) -> Result<(), String> {
    if doc == key {
        Ok(())
    } else {
        Err(format!(
            "{field} {doc:?} does not match the key, which names {key:?}"
        ))
    }
}

/// Takes an optional name from the key, or refuses a different one.
fn name_from_key(field: &str, doc: &mut Option<String>, key: &str) -> Result<(), String> {
    match doc {
        Some(d) => same_name(field, d, key),
        None => {
            *doc = Some(key.to_string());
            Ok(())
        }
    }
}

/// The one part of a single-segment key.
fn only<'a>(parts: &[&'a str]) -> Result<&'a str, String> {
    match parts {
        [one] => Ok(one),
        _ => Err(format!("malformed key: {} segments", parts.len())),
    }
}

impl Spec for TaskDefinition {
    const FAMILY: Family = Family::TaskDefinitions;
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
    fn conform(&mut self, parts: &[&str]) -> Result<(), String> {
        let [family, revision] = parts else {
            return Err(format!("malformed key: {} segments", parts.len()));
        };
        same_name("family", &self.family, family)?;
        let key_revision: u32 = revision
            .parse()
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| format!("the key's revision {revision:?} is not a number from 1"))?;
        match self.revision {
            None => self.revision = Some(key_revision),
            Some(r) if r == key_revision => {}
            Some(r) => {
                return Err(format!(
                    "revision {r} does not match the key, which names revision {key_revision}"
                ));
            }
        }
        Ok(())
    }
}
impl Spec for Service {
    const FAMILY: Family = Family::Services;
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
    fn conform(&mut self, parts: &[&str]) -> Result<(), String> {
        let [_cluster, name] = parts else {
            return Err(format!("malformed key: {} segments", parts.len()));
        };
        same_name("serviceName", &self.service_name, name)
    }
}
impl Spec for Cluster {
    const FAMILY: Family = Family::Clusters;
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
    fn conform(&mut self, parts: &[&str]) -> Result<(), String> {
        same_name("clusterName", &self.cluster_name, only(parts)?)
    }
}
impl Spec for CapacityProvider {
    const FAMILY: Family = Family::CapacityProviders;
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
    fn conform(&mut self, parts: &[&str]) -> Result<(), String> {
        same_name("name", &self.name, only(parts)?)
    }
}
impl Spec for TargetGroup {
    const FAMILY: Family = Family::TargetGroups;
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
    fn conform(&mut self, parts: &[&str]) -> Result<(), String> {
        name_from_key("targetGroupName", &mut self.target_group_name, only(parts)?)
    }
}
impl Spec for Listener {
    const FAMILY: Family = Family::Listeners;
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        self.validate()
    }
    fn conform(&mut self, parts: &[&str]) -> Result<(), String> {
        name_from_key("listenerName", &mut self.listener_name, only(parts)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taskdef(doc: &str) -> TaskDefinition {
        accept::<TaskDefinition>(doc.as_bytes())
            .expect("valid task definition")
            .value
    }

    const WEB: &str =
        r#"{"family":"web","containerDefinitions":[{"name":"app","image":"x","memory":32}]}"#;
    const WEB_2: &str = r#"{"family":"web","revision":2,"containerDefinitions":[{"name":"app","image":"x","memory":32}]}"#;

    #[test]
    fn a_task_definition_takes_its_revision_from_its_key_and_must_agree_with_it() {
        let mut td = taskdef(WEB);
        td.conform(&["web", "1"]).expect("revision filled in");
        assert_eq!(td.revision, Some(1));
        assert_eq!(td.family_revision(), "web:1");

        let cases: &[(&str, [&str; 2], &str)] = &[
            (WEB_2, ["web", "1"], "revision 2 does not match"),
            (WEB, ["api", "1"], "family \"web\" does not match"),
            (WEB, ["web", "x"], "not a number"),
            (WEB, ["web", "0"], "not a number"),
        ];
        for (doc, key, error) in cases {
            let mut td = taskdef(doc);
            let e = td.conform(key).expect_err("refused");
            assert!(e.contains(error), "{key:?}: {e}");
        }
        taskdef(WEB_2).conform(&["web", "2"]).expect("agrees");
    }

    #[test]
    fn names_come_from_the_key_when_left_out_and_must_agree_when_given() {
        let mut tg: TargetGroup = accept(br#"{"protocol":"HTTP"}"#).expect("valid").value;
        tg.conform(&["web"]).expect("name filled in");
        assert_eq!(tg.target_group_name.as_deref(), Some("web"));
        assert!(tg.conform(&["api"]).is_err());
        let mut c: Cluster = accept(br#"{"clusterName":"prod"}"#).expect("valid").value;
        assert!(c.conform(&["prod"]).is_ok());
        assert!(c.conform(&["dev"]).is_err());
        assert!(c.conform(&["a", "b"]).is_err());
    }
}

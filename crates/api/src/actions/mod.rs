//! ECS's actions over the store: each validates with `capstan-core`, reads what it needs and
//! writes with compare-and-swap, so concurrent API replicas (and etcdctl users) never lose a write.
//!
//! One file per noun (`taskdefs`, `clusters`, `services`, `tasks`, `instances`, `capacity`,
//! `lb`), each an `impl Api` block; they share the imports and helpers of this file.

mod capacity;
mod clusters;
pub mod iam;
mod instances;
mod lb;
mod secrets;
mod services;
mod settings;
mod tags;
mod taskdefs;
mod tasks;

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_core::deployment::{DeploymentStatus, RolloutState};
use capstan_core::instance::InstanceStatus;
use capstan_core::keys::Family;
use capstan_core::lb::TargetGroupStatusDoc;
use capstan_core::requests::{
    ContinueDeploymentRequest, RunTaskRequest, RunTaskResult, StopTaskRequest,
};
use capstan_core::service::{PlacementConstraint, PlacementConstraintType, ServiceStatus};
use capstan_core::task::{DesiredStatus, TaskOverride};
use capstan_core::taskdef::{TaskDefinitionRef, TaskDefinitionStatus};
use capstan_core::{
    CapacityProvider, CapacityProviderStrategyItem, Cluster, ContainerInstance, Deployment, Issue,
    Keys, Listener, Service, ServiceEvent, ServiceStatusDoc, TargetGroup, Task, TaskDefinition,
    accept,
};
use capstan_proto::api::v1 as pb;
use capstan_store::{KeyValue, Store, StoreError, Write};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Exception};
use crate::shape::{TaskFilter, arn, describe_service, merge_update, name_of, page};

/// The cluster that exists without CreateCluster, as ECS creates `default` on first use.
pub const DEFAULT_CLUSTER: &str = "default";

/// Attempts of a compare-and-swap write before giving up.
const CAS_ATTEMPTS: usize = 200;

/// What a compare-and-swap write says after [`CAS_ATTEMPTS`] lost compares: retry later.
fn busy(what: &str) -> ApiError {
    ApiError::new(Exception::Server, format!("{what} keeps changing; retry"))
}

/// A compare-and-swap commit's outcome: `true` when it landed, `false` when a compare was lost.
fn committed(r: Result<i64, StoreError>) -> ApiResult<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The API's handle on the store.
#[derive(Clone)]
pub struct Api {
    store: Store,
    run_task_timeout: Duration,
    sealing: Option<std::sync::Arc<capstan_iam::SealingKey>>,
    agents: std::sync::Arc<capstan_agent_client::Agents>,
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn warnings(issues: Vec<Issue>) -> Vec<pb::Warning> {
    issues
        .into_iter()
        .map(|i| pb::Warning {
            path: i.path,
            message: i.message,
        })
        .collect()
}

fn missing(resource: String) -> pb::Failure {
    pb::Failure {
        arn: arn(&resource),
        reason: "MISSING".into(),
        detail: String::new(),
    }
}

fn cluster_or_default(c: &str) -> &str {
    if c.is_empty() {
        DEFAULT_CLUSTER
    } else {
        name_of(c)
    }
}

/// One page of names as a List response of ARNs `<resource_prefix><name>`.
fn arn_page(
    names: Vec<String>,
    max_results: i32,
    next_token: &str,
    resource_prefix: &str,
) -> ApiResult<pb::ListResponse> {
    let (shown, next_token) = page(names, max_results, next_token)?;
    Ok(pb::ListResponse {
        arns: shown
            .iter()
            .map(|n| arn(&format!("{resource_prefix}{n}")))
            .collect(),
        next_token,
    })
}

/// The name of a target group or listener: the request's, the document's (`field`), or both
/// when they agree.
fn object_name(field: &str, in_doc: Option<&str>, requested: &str) -> ApiResult<String> {
    match (in_doc, requested) {
        (Some(n), "") => Ok(n.to_string()),
        (Some(n), r) if n != r => Err(ApiError::invalid(format!(
            "{field} {n} differs from the request's name {r}"
        ))),
        (_, r) if !r.is_empty() => Ok(r.to_string()),
        _ => Err(ApiError::invalid("name is required")),
    }
}

/// Whether an UpdateService document sets `taskDefinition`.
fn names_task_definition(json: &str) -> bool {
    serde_json::from_str::<Value>(json)
        .ok()
        .is_some_and(|v| v.get("taskDefinition").is_some_and(|t| !t.is_null()))
}

fn now() -> f64 {
    capstan_runtime::events::now()
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    serde_json::from_slice(&kv.value).ok()
}

impl Api {
    /// An API over `store`; RunTask waits up to `run_task_timeout` for the scheduler.
    pub fn new(store: Store, run_task_timeout: Duration) -> Self {
        Self {
            store,
            run_task_timeout,
            sealing: None,
            agents: std::sync::Arc::new(capstan_agent_client::Agents::new(None)),
        }
    }

    /// This API calling agents (task logs) with `tls`, its own identity.
    pub fn with_agent_tls(mut self, tls: Option<capstan_proto::tls::TlsFiles>) -> Self {
        self.agents = std::sync::Arc::new(capstan_agent_client::Agents::new(tls));
        self
    }

    /// This API with the key that seals access keys' secrets (`--encryption-key-file`).
    pub fn with_sealing_key(
        mut self,
        key: Option<std::sync::Arc<capstan_iam::SealingKey>>,
    ) -> Self {
        self.sealing = key;
        self
    }

    pub(crate) fn keys(&self) -> &Keys {
        self.store.keys()
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> ApiResult<Option<(T, KeyValue)>> {
        Ok(self
            .store
            .get(key)
            .await?
            .and_then(|kv| decode(&kv).map(|v| (v, kv))))
    }

    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> ApiResult<Vec<(T, KeyValue)>> {
        Ok(self
            .store
            .list(prefix)
            .await?
            .kvs
            .into_iter()
            .filter_map(|kv| decode(&kv).map(|v| (v, kv)))
            .collect())
    }

    /// Fails with ClusterNotFoundException unless the cluster exists.
    pub(crate) async fn require_cluster(&self, cluster: &str) -> ApiResult<()> {
        if cluster == DEFAULT_CLUSTER {
            return Ok(());
        }
        match self.get::<Cluster>(&self.keys().cluster(cluster)).await? {
            Some((c, _)) if c.status.as_deref() != Some("INACTIVE") => Ok(()),
            _ => Err(ApiError::cluster_not_found(cluster)),
        }
    }

    /// The task definition a reference names (the family's latest ACTIVE revision for `family`).
    pub(crate) async fn resolve_task_definition(
        &self,
        reference: &str,
    ) -> ApiResult<TaskDefinition> {
        let r =
            TaskDefinitionRef::parse(reference).map_err(|e| ApiError::invalid(e.to_string()))?;
        let found = match r.revision {
            Some(rev) => self
                .get::<TaskDefinition>(&self.keys().task_definition(&r.family, rev))
                .await?
                .map(|(td, _)| td),
            None => self
                .list::<TaskDefinition>(&self.keys().list(Family::TaskDefinitions, &[&r.family]))
                .await?
                .into_iter()
                .map(|(td, _)| td)
                .filter(|td| {
                    td.status.unwrap_or(TaskDefinitionStatus::Active)
                        == TaskDefinitionStatus::Active
                })
                .max_by_key(|td| td.revision.unwrap_or(0)),
        };
        found.ok_or_else(|| {
            ApiError::new(
                Exception::Client,
                format!(
                    "Unable to describe task definition {r}: no such {}. Register it with RegisterTaskDefinition.",
                    if r.revision.is_some() {
                        "revision"
                    } else {
                        "family with an ACTIVE revision"
                    }
                ),
            )
        })
    }

    /// A task definition new tasks may use: it exists and is ACTIVE.
    pub(crate) async fn usable_task_definition(
        &self,
        reference: &str,
    ) -> ApiResult<TaskDefinition> {
        let td = self.resolve_task_definition(reference).await?;
        if td.status.unwrap_or(TaskDefinitionStatus::Active) != TaskDefinitionStatus::Active {
            return Err(ApiError::invalid(format!(
                "TaskDefinition is inactive: {}. Register a new revision or use an ACTIVE one.",
                td.family_revision()
            )));
        }
        Ok(td)
    }

    /// The store, for the watch stream.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// DescribeServices' document for one service (for the watch stream).
    pub async fn describe_service_doc(
        &self,
        cluster: &str,
        name: &str,
    ) -> ApiResult<Option<Value>> {
        self.describe_one(cluster, name).await
    }

    /// Checks that a service exists in some state (for the watch stream).
    pub async fn require_service(&self, cluster: &str, name: &str) -> ApiResult<()> {
        self.require_cluster(cluster).await?;
        match self.service_state(cluster, name).await? {
            (None, None) => Err(ApiError::service_not_found(cluster, name)),
            _ => Ok(()),
        }
    }
}

/// The cluster a request names (`default` when empty).
pub fn cluster_name(c: &str) -> &str {
    cluster_or_default(c)
}

//! Imperative requests users write as keys (so etcdctl can do what the API does); a controller
//! consumes each one.

use serde::{Deserialize, Serialize};

use crate::keys::Family;
use crate::service::{
    PlacementConstraint, PlacementStrategy, validate_constraint, validate_strategy,
};
use crate::task::TaskOverride;
use crate::taskdef::TaskDefinitionRef;
use crate::validate::{Issue, Report, ValidationError, index};
use crate::{Spec, Tag};

/// Most tasks one RunTask starts.
pub const MAX_RUN_TASK_COUNT: u32 = 10;

/// `/capstan/requests/runtask/<cluster>/<requestId>`: ECS's RunTask input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RunTaskRequest {
    /// `family:revision` or `family`.
    pub task_definition: String,
    /// 1–10 tasks (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Task group; `family:<family>` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Free text recorded on the tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Binding placement rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Placement preferences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<PlacementStrategy>,
    /// Command, environment, cpu and memory overrides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    /// Tags for the tasks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Cluster name (the key's when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Capacity providers the tasks run on (base, then weight); the cluster's default strategy
    /// applies when neither this nor `launchType` is given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capacity_provider_strategy: Vec<crate::CapacityProviderStrategyItem>,
    /// `EC2` or `EXTERNAL`: any instance, no capacity provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// Up to 64 characters naming this request: a retried RunTask with the same token (the
    /// SDKs send one with every call) starts nothing new and answers with the first's tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,

    // ECS defines these; Capstan keeps them and warns that it does not act on them.
    /// Not acted on (tasks use their host's network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<serde_json::Value>,
    /// Not acted on.
    #[serde(
        rename = "enableECSManagedTags",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ecs_managed_tags: Option<bool>,
    /// The tasks allow ECS Exec (`capstan task exec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_execute_command: Option<bool>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<String>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<String>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
}

impl RunTaskRequest {
    /// The count, defaulting to 1.
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(1)
    }
}

impl Spec for RunTaskRequest {
    const FAMILY: Family = Family::RunTaskRequests;
    fn conform(&mut self, _parts: &[&str]) -> Result<(), String> {
        // Nothing in a request's body names its key.
        Ok(())
    }
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        if let Err(e) = TaskDefinitionRef::parse(&self.task_definition) {
            for i in e.issues {
                r.error(i.path, i.message);
            }
        }
        r.range("count", self.count(), 1, MAX_RUN_TASK_COUNT);
        if let Some(g) = &self.group
            && (g.is_empty() || g.len() > 255)
        {
            r.error("group", "must have 1-255 characters");
        }
        if let Some(s) = &self.started_by
            && (s.is_empty()
                || s.len() > 128
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/' || b == b'_'))
        {
            r.error("startedBy", "must be 1-128 letters, digits, -, / or _");
        }
        if let Some(t) = &self.client_token
            && (t.is_empty() || t.len() > 64)
        {
            r.error("clientToken", "must have 1-64 characters");
        }
        r.ignored("networkConfiguration", self.network_configuration.is_some());
        r.ignored(
            "enableECSManagedTags",
            self.enable_ecs_managed_tags.is_some(),
        );
        r.ignored("propagateTags", self.propagate_tags.is_some());
        r.ignored("platformVersion", self.platform_version.is_some());
        r.ignored("referenceId", self.reference_id.is_some());
        for (i, c) in self.placement_constraints.iter().enumerate() {
            validate_constraint(&mut r, &index("", "placementConstraints", i), c);
        }
        for (i, s) in self.placement_strategy.iter().enumerate() {
            validate_strategy(&mut r, &index("", "placementStrategy", i), s);
        }
        if !self.capacity_provider_strategy.is_empty() {
            if self.launch_type.is_some() {
                r.error(
                    "capacityProviderStrategy",
                    "Specify either Launch Type or Capacity Provider Strategy, but not both.",
                );
            }
            crate::validate_capacity_provider_strategy(
                &mut r,
                "capacityProviderStrategy",
                &self.capacity_provider_strategy,
            );
        }
        r.finish()
    }
}

/// `/capstan/requests/stoptask/<cluster>/<taskId>`: ECS's StopTask input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StopTaskRequest {
    /// Recorded as the task's stoppedReason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Spec for StopTaskRequest {
    const FAMILY: Family = Family::StopTaskRequests;
    fn conform(&mut self, _parts: &[&str]) -> Result<(), String> {
        // Nothing in a request's body names its key.
        Ok(())
    }
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        if let Some(reason) = &self.reason
            && reason.len() > 1024
        {
            r.error("reason", "must have at most 1024 characters");
        }
        r.finish()
    }
}

/// What ContinueServiceDeployment asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContinueAction {
    /// Let the deployment go on to the next stage (default).
    #[default]
    Continue,
    /// Roll the deployment back.
    Rollback,
}

/// How StopServiceDeployment stops a deployment: ROLLBACK is the one ECS honours and the one
/// Capstan does (ABORT is refused at the API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StopType {
    /// Roll the deployment back to the last one that completed, whatever its configuration says.
    #[default]
    Rollback,
}

/// `/capstan/requests/continuedeployment/<cluster>/<service>/<deploymentId>`: ECS's
/// ContinueServiceDeployment input, answering the deployment's PAUSE hooks, or, with
/// `stopType`, its StopServiceDeployment input (a stop supersedes any answer to a hook).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContinueDeploymentRequest {
    /// CONTINUE (default) or ROLLBACK.
    pub action: ContinueAction,
    /// The hook answered (its index in `lifecycleHooks`); all waiting PAUSE hooks when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_id: Option<String>,
    /// Set by StopServiceDeployment: stop the deployment this way instead of answering a hook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_type: Option<StopType>,
}

impl Spec for ContinueDeploymentRequest {
    const FAMILY: Family = Family::ContinueDeploymentRequests;
    fn conform(&mut self, _parts: &[&str]) -> Result<(), String> {
        // Nothing in a request's body names its key.
        Ok(())
    }
    fn check(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        if let Some(h) = &self.hook_id
            && h.parse::<u32>().is_err()
        {
            r.error("hookId", "must be the hook's index in lifecycleHooks");
        }
        r.finish()
    }
}

/// `/capstan/status/runtask/<cluster>/<requestId>`: what a RunTask request started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunTaskResult {
    /// Task ids started.
    pub tasks: Vec<String>,
    /// Why the others could not be.
    pub failures: Vec<RunTaskFailure>,
}

/// One task RunTask could not start (ECS `Failure`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunTaskFailure {
    /// `RESOURCE:MEMORY`, `RESOURCE:CPU`, `RESOURCE:PORTS`, `AGENT`, `MissingTaskDefinition`, …
    pub reason: String,
    /// A readable explanation.
    pub detail: String,
}

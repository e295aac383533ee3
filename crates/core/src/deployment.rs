//! Deployments in the shape of ECS's `Deployment` (written by the deployment controller).

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::capacity::CapacityProviderStrategyItem;
use crate::service::{DeploymentStrategy, LifecycleStage, LoadBalancer};

/// PRIMARY (newest), ACTIVE (old, still has tasks), INACTIVE (replaced).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// The most recent deployment.
    #[default]
    Primary,
    /// An older deployment with tasks still running.
    Active,
    /// Completely replaced.
    Inactive,
}

/// Rollout state of a deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    /// Rolling out.
    #[default]
    InProgress,
    /// Reached steady state.
    Completed,
    /// The circuit breaker tripped or a hook failed.
    Failed,
}

/// Circuit breaker monitor state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerStatus {
    /// Counting failures.
    #[default]
    Monitoring,
    /// Stopped counting: the deployment finished.
    MonitoringComplete,
    /// Tripped.
    Triggered,
    /// Not enabled.
    Disabled,
}

/// Circuit breaker state of one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BreakerState {
    /// Monitor state.
    pub status: BreakerStatus,
    /// Failures counted so far.
    pub failure_count: u32,
    /// Failures at which it trips.
    pub threshold: u32,
}

/// One deployment of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Deployment {
    /// `ecs-svc/<number>`-style id, unique within the service.
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: DeploymentStatus,
    /// `family:revision` its tasks run.
    pub task_definition: String,
    /// Tasks this deployment should have now (the scheduler converges to it).
    pub desired_count: u32,
    /// Tasks in PENDING.
    pub pending_count: u32,
    /// Tasks in RUNNING.
    pub running_count: u32,
    /// Consecutive failed tasks.
    pub failed_tasks: u32,
    /// Created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: RolloutState,
    /// `ECS deployment <id> in progress.` and the like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_state_reason: Option<String>,
    /// Capacity provider strategy of its tasks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    /// ROLLING or BLUE_GREEN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Blue/green stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<LifecycleStage>,
    /// Circuit breaker state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<BreakerState>,
    /// Capstan: fingerprint of the service spec this deployment answers. A rollback deployment
    /// answers the spec it rolled back from, so that spec is not deployed again until it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_fingerprint: Option<String>,
    /// When the current lifecycle stage began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_started_at: Option<Timestamp>,
    /// Lifecycle hooks of the current stage and how far each has got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lifecycle_hook_details: Vec<HookDetail>,
    /// Target groups its tasks register with (blue/green: green's are the alternates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<LoadBalancer>,
    /// Set on a deployment started by a rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackInfo>,
}

/// How far one lifecycle hook has got at the current stage (ECS `DeploymentLifecycleHookDetail`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HookDetail {
    /// Index of the hook in the service's `lifecycleHooks`, as a string (`hookId`).
    pub hook_id: String,
    /// Stage it runs at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_stage: Option<LifecycleStage>,
    /// AWAITING_ACTION, IN_PROGRESS, SUCCEEDED, FAILED or TIMED_OUT.
    pub status: HookStatus,
    /// When it started at this stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the webhook is called next (IN_PROGRESS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_call_at: Option<Timestamp>,
    /// When it times out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Why it failed, or what it last answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// State of a lifecycle hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    /// A PAUSE hook waiting for ContinueServiceDeployment.
    AwaitingAction,
    /// A webhook answered IN_PROGRESS or has not been called yet.
    #[default]
    InProgress,
    /// Done; the stage may move on.
    Succeeded,
    /// Failed: the deployment rolls back.
    Failed,
    /// Timed out; its timeout action applies.
    TimedOut,
}

/// Why and from where a deployment rolled back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RollbackInfo {
    /// Why.
    pub reason: String,
    /// When.
    pub started_at: Timestamp,
    /// The deployment that failed.
    pub from_deployment: String,
}

//! Deployments in the shape of ECS's `Deployment` (written by the deployment controller).

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::capacity::CapacityProviderStrategyItem;
use crate::service::{DeploymentStrategy, LifecycleStage};

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
}

//! Service status (DescribeServices-shaped) and service events.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::deployment::Deployment;
use crate::service::ServiceStatus;

/// `/capstan/status/services/<cluster>/<service>`: what DescribeServices reports beyond the spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceStatusDoc {
    /// Service name.
    pub service_name: String,
    /// Cluster ARN.
    pub cluster_arn: String,
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: ServiceStatus,
    /// Desired tasks.
    pub desired_count: u32,
    /// RUNNING tasks over all deployments.
    pub running_count: u32,
    /// PENDING tasks over all deployments.
    pub pending_count: u32,
    /// `family:revision` of the PRIMARY deployment.
    pub task_definition: String,
    /// Deployments, PRIMARY first.
    pub deployments: Vec<Deployment>,
    /// Last update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// Why the spec could not be acted on (bad JSON, unknown task definition…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `/capstan/events/<cluster>/<service>/<eventId>`: one service event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceEvent {
    /// Unique id; sorts by time.
    pub id: String,
    /// When it happened.
    pub created_at: Timestamp,
    /// `service (web) has reached a steady state.` and the like.
    pub message: String,
}

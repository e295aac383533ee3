//! Capacity providers: ECS's `CreateCapacityProvider` with a node group in place of an Auto
//! Scaling group, and capacity provider strategies.

use serde::{Deserialize, Serialize};

use crate::Tag;
use crate::validate::{Issue, Report, ValidationError, check_name, join};

/// Most items in one capacity provider strategy.
pub const MAX_STRATEGY_ITEMS: usize = 20;

/// One item of a `capacityProviderStrategy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacityProviderStrategyItem {
    /// Provider name.
    pub capacity_provider: String,
    /// Relative share after bases are met (0–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Tasks placed on this provider first (0–100000); only one item may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u32>,
}

/// Checks a strategy: names, ranges, one base at most, some weight.
pub fn validate_capacity_provider_strategy(
    r: &mut Report,
    path: &str,
    items: &[CapacityProviderStrategyItem],
) {
    if items.len() > MAX_STRATEGY_ITEMS {
        r.error(
            path,
            format!("at most {MAX_STRATEGY_ITEMS} capacity providers per strategy"),
        );
    }
    let mut bases = 0;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        check_name(r, &join(&p, "capacityProvider"), &item.capacity_provider);
        if let Some(w) = item.weight {
            r.range(&join(&p, "weight"), w, 0, 1000);
        }
        if let Some(b) = item.base {
            r.range(&join(&p, "base"), b, 0, 100_000);
            if b > 0 {
                bases += 1;
            }
        }
    }
    if bases > 1 {
        r.error(
            path,
            "only one capacity provider in a strategy may have a base",
        );
    }
    if !items.is_empty() && items.iter().all(|i| i.weight.unwrap_or(0) == 0) {
        r.error(
            path,
            "at least one capacity provider needs a weight greater than 0",
        );
    }
}

/// Managed scaling settings (ECS `ManagedScaling`, plus the scale-in evaluation period).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ManagedScaling {
    /// ENABLED or DISABLED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Target CapacityProviderReservation, 1–100 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_capacity: Option<u32>,
    /// Fewest instances added per scale-out (1–10000, default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_scaling_step_size: Option<u32>,
    /// Most instances added per scale-out (1–10000, default 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_scaling_step_size: Option<u32>,
    /// Seconds a new instance is warming up (0–10000, default 300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_warmup_period: Option<u32>,
    /// Capstan: minutes an instance must be empty before scale-in (0–1440, default 15;
    /// ECS hard-codes 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_in_evaluation_period_minutes: Option<u32>,
}

/// The node group a capacity provider scales, in place of ECS's `autoScalingGroupProvider`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeGroupProvider {
    /// gRPC endpoint of the `capstan.nodegroup.v1.NodeGroupProvider` service.
    pub endpoint: String,
    /// Group id within that provider.
    pub group_id: String,
    /// Managed scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_scaling: Option<ManagedScaling>,
    /// ENABLED: instances with tasks are never terminated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_termination_protection: Option<String>,
    /// ENABLED: instances are drained before termination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_draining: Option<String>,
}

/// A capacity provider spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CapacityProvider {
    /// Name; must not start with `aws`, `ecs` or `fargate`.
    pub name: String,
    /// The node group it scales.
    pub node_group_provider: NodeGroupProvider,
    /// Up to 50 tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

fn check_enabled(r: &mut Report, path: &str, v: &Option<String>) {
    if let Some(v) = v
        && v != "ENABLED"
        && v != "DISABLED"
    {
        r.error(path, format!("must be ENABLED or DISABLED, got {v:?}"));
    }
}

impl CapacityProvider {
    /// Validates against ECS's rules.
    pub fn validate(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        check_name(&mut r, "name", &self.name);
        let lower = self.name.to_ascii_lowercase();
        if ["aws", "ecs", "fargate"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            r.error("name", "must not start with aws, ecs or fargate");
        }
        let ng = &self.node_group_provider;
        let base = "nodeGroupProvider";
        if ng.endpoint.is_empty() {
            r.error(join(base, "endpoint"), "endpoint is required");
        }
        if ng.group_id.is_empty() {
            r.error(join(base, "groupId"), "groupId is required");
        }
        check_enabled(
            &mut r,
            &join(base, "managedTerminationProtection"),
            &ng.managed_termination_protection,
        );
        check_enabled(&mut r, &join(base, "managedDraining"), &ng.managed_draining);
        if let Some(ms) = &ng.managed_scaling {
            let p = join(base, "managedScaling");
            check_enabled(&mut r, &join(&p, "status"), &ms.status);
            if let Some(v) = ms.target_capacity {
                r.range(&join(&p, "targetCapacity"), v, 1, 100);
            }
            if let Some(v) = ms.minimum_scaling_step_size {
                r.range(&join(&p, "minimumScalingStepSize"), v, 1, 10_000);
            }
            if let Some(v) = ms.maximum_scaling_step_size {
                r.range(&join(&p, "maximumScalingStepSize"), v, 1, 10_000);
            }
            if let (Some(lo), Some(hi)) =
                (ms.minimum_scaling_step_size, ms.maximum_scaling_step_size)
                && lo > hi
            {
                r.error(
                    &p,
                    "minimumScalingStepSize must not exceed maximumScalingStepSize",
                );
            }
            if let Some(v) = ms.instance_warmup_period {
                r.range(&join(&p, "instanceWarmupPeriod"), v, 0, 10_000);
            }
            if let Some(v) = ms.scale_in_evaluation_period_minutes {
                r.range(&join(&p, "scaleInEvaluationPeriodMinutes"), v, 0, 1440);
            }
        }
        if ng.managed_termination_protection.as_deref() == Some("ENABLED")
            && ng
                .managed_scaling
                .as_ref()
                .and_then(|m| m.status.as_deref())
                == Some("DISABLED")
        {
            r.error(
                join(base, "managedTerminationProtection"),
                "managed termination protection needs managed scaling",
            );
        }
        r.finish()
    }
}

/// `/capstan/status/capacityproviders/<name>` (scaler): the provider's reservation and group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CapacityProviderStatusDoc {
    /// CapacityProviderReservation, percent (M / N × 100).
    pub capacity_provider_reservation: f64,
    /// M: instances needed for its running non-daemon tasks plus the PROVISIONING ones.
    pub instances_needed: u32,
    /// N: instances running (registered).
    pub running_instances: u32,
    /// The group's desired capacity after this round.
    pub desired_capacity: u32,
    /// The group's bounds.
    pub min_size: u32,
    /// The group's bounds.
    pub max_size: u32,
    /// Tasks waiting in PROVISIONING for this provider.
    pub provisioning_tasks: u32,
    /// Since when each empty registered instance has been empty (container instance id → epoch s).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub empty_since: std::collections::BTreeMap<String, crate::Timestamp>,
    /// Why a scale-out was held back, or the provider could not be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<crate::Timestamp>,
}

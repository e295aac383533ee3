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

/// What UpdateCapacityProvider changes (ECS `AutoScalingGroupProviderUpdate`): the managed
/// settings only. The node group (endpoint, groupId) is fixed once created, as ECS fixes the
/// Auto Scaling group's ARN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeGroupProviderUpdate {
    /// Managed scaling, replaced as a whole when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_scaling: Option<ManagedScaling>,
    /// ENABLED or DISABLED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_termination_protection: Option<String>,
    /// ENABLED or DISABLED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_draining: Option<String>,
}

impl NodeGroupProviderUpdate {
    /// Whether it changes nothing (ECS refuses such an update).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Each field given replaces the node group's; the others stay as they are.
    pub fn apply(self, ng: &mut NodeGroupProvider) {
        if let Some(ms) = self.managed_scaling {
            ng.managed_scaling = Some(ms);
        }
        if let Some(v) = self.managed_termination_protection {
            ng.managed_termination_protection = Some(v);
        }
        if let Some(v) = self.managed_draining {
            ng.managed_draining = Some(v);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CapacityProvider {
        CapacityProvider {
            name: "pool".into(),
            node_group_provider: NodeGroupProvider {
                endpoint: "https://ng:7600".into(),
                group_id: "g".into(),
                managed_scaling: Some(ManagedScaling {
                    status: Some("ENABLED".into()),
                    target_capacity: Some(100),
                    ..ManagedScaling::default()
                }),
                managed_termination_protection: Some("ENABLED".into()),
                managed_draining: None,
            },
            tags: vec![],
        }
    }

    #[test]
    fn an_update_replaces_what_it_names_and_keeps_the_rest() {
        // (update, targetCapacity, termination protection, draining)
        type Case = (
            &'static str,
            Option<u32>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (
                r#"{"managedDraining":"ENABLED"}"#,
                Some(100),
                Some("ENABLED"),
                Some("ENABLED"),
            ),
            (
                r#"{"managedScaling":{"status":"ENABLED","targetCapacity":80}}"#,
                Some(80),
                Some("ENABLED"),
                None,
            ),
            (
                r#"{"managedScaling":{"status":"ENABLED"},"managedTerminationProtection":"DISABLED"}"#,
                None,
                Some("DISABLED"),
                None,
            ),
        ];
        for (doc, target, protection, draining) in cases {
            let u: NodeGroupProviderUpdate = crate::parse_json(doc.as_bytes()).expect(doc);
            assert!(!u.is_empty(), "{doc}");
            let mut cp = provider();
            u.apply(&mut cp.node_group_provider);
            let ng = &cp.node_group_provider;
            assert_eq!(ng.endpoint, "https://ng:7600", "{doc}");
            assert_eq!(
                ng.managed_scaling.as_ref().and_then(|m| m.target_capacity),
                *target,
                "{doc}"
            );
            assert_eq!(
                ng.managed_termination_protection.as_deref(),
                *protection,
                "{doc}"
            );
            assert_eq!(ng.managed_draining.as_deref(), *draining, "{doc}");
            cp.validate().expect(doc);
        }
    }

    #[test]
    fn an_update_cannot_move_the_node_group_and_may_not_be_empty() {
        for doc in [r#"{"endpoint":"https://other:7600"}"#, r#"{"groupId":"h"}"#] {
            assert!(
                crate::parse_json::<NodeGroupProviderUpdate>(doc.as_bytes()).is_err(),
                "{doc}"
            );
        }
        let u: NodeGroupProviderUpdate = crate::parse_json(b"{}").expect("parses");
        assert!(u.is_empty());
    }
}

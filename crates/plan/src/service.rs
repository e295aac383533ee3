//! What the deployer derives from one service besides the rollout itself, pure: the fingerprint
//! whose change starts a deployment, the DescribeServices-shaped status, the listener route
//! documents a decision's traffic moves imply, and the deployments a decision leaves.

use capstan_core::deployment::{Deployment, DeploymentStatus};
use capstan_core::keys::ServiceKey;
use capstan_core::lb::{ListenerRoute, TargetGroupTuple};
use capstan_core::service::{ServiceStatus, lb_object_name};
use capstan_core::{Service, ServiceStatusDoc};

use crate::deploy::{Decision, ListenerRole};

/// FNV-1a, 64 bits: a fingerprint that stays the same across builds (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fingerprint of the fields whose change starts a deployment: task definition, load balancers,
/// placement, capacity provider strategy, and — when `forceNewDeployment` is true — the write
/// itself (`mod_revision`). desiredCount, deployment configuration and the grace period are not
/// in it: they apply to the running deployment.
pub fn fingerprint(spec: &Service, mod_revision: i64) -> String {
    let force = spec.force_new_deployment == Some(true);
    let doc = serde_json::json!({
        "taskDefinition": spec.task_definition,
        "loadBalancers": spec.load_balancers,
        "placementConstraints": spec.placement_constraints,
        "placementStrategy": spec.placement_strategy,
        "capacityProviderStrategy": spec.capacity_provider_strategy,
        "forced": if force { mod_revision } else { 0 },
    });
    format!("{:016x}", fnv1a(doc.to_string().as_bytes()))
}

/// The DescribeServices-shaped status of a service: its non-INACTIVE deployments, PRIMARY
/// first, and their counts summed. Unstamped.
pub fn status_doc(
    key: &ServiceKey,
    desired: u32,
    deployments: &[Deployment],
    status: ServiceStatus,
    error: Option<String>,
) -> ServiceStatusDoc {
    let mut shown: Vec<Deployment> = deployments
        .iter()
        .filter(|d| d.status != DeploymentStatus::Inactive)
        .cloned()
        .collect();
    shown.sort_by_key(|d| d.status != DeploymentStatus::Primary);
    ServiceStatusDoc {
        service_name: key.service.clone(),
        cluster_arn: key.cluster.clone(),
        status,
        desired_count: desired,
        running_count: shown.iter().map(|d| d.running_count).sum(),
        pending_count: shown.iter().map(|d| d.pending_count).sum(),
        task_definition: shown
            .first()
            .map(|d| d.task_definition.clone())
            .unwrap_or_default(),
        deployments: shown,
        updated_at: None,
        error,
    }
}

/// The route documents (listener name, route) of a decision's listener moves: each moved
/// listener of the spec's load balancers forwards all its traffic to the deployment's target
/// group at the same position.
pub fn routes(
    key: &ServiceKey,
    spec: &Service,
    d: &Decision,
    deps: &[Deployment],
) -> Vec<(String, ListenerRoute)> {
    let mut out = Vec::new();
    for r in &d.routes {
        let Some(dep) = deps.iter().find(|x| x.id == r.deployment) else {
            continue;
        };
        for (i, lb) in spec.load_balancers.iter().enumerate() {
            let Some(adv) = &lb.advanced_configuration else {
                continue;
            };
            let listener = match r.role {
                ListenerRole::Test => adv.test_listener_rule.as_deref(),
                ListenerRole::Production => adv.production_listener_rule.as_deref(),
            };
            let (Some(listener), Some(tg)) = (
                listener,
                dep.load_balancers
                    .get(i)
                    .and_then(|l| l.target_group_arn.as_deref()),
            ) else {
                continue;
            };
            let route = ListenerRoute {
                target_groups: vec![TargetGroupTuple {
                    target_group_arn: lb_object_name(tg).to_string(),
                    weight: Some(100),
                }],
                service: format!("{}/{}", key.cluster, key.service),
                deployment: dep.id.clone(),
            };
            out.push((lb_object_name(listener).to_string(), route));
        }
    }
    out
}

/// The deployments after `decision`: deleted ones gone, changed ones replaced, new ones added.
pub fn apply(deps: Vec<Deployment>, decision: &Decision) -> Vec<Deployment> {
    let mut after: Vec<Deployment> = deps
        .into_iter()
        .filter(|d| !decision.delete.contains(&d.id))
        .map(|d| {
            decision
                .put
                .iter()
                .find(|p| p.id == d.id)
                .cloned()
                .unwrap_or(d)
        })
        .collect();
    for p in &decision.put {
        if !after.iter().any(|d| d.id == p.id) {
            after.push(p.clone());
        }
    }
    after
}

#[cfg(test)]
mod tests {
    use capstan_core::deployment::RolloutState;

    use super::*;
    use crate::deploy::Route;

    fn dep(id: &str, status: DeploymentStatus, running: u32) -> Deployment {
        Deployment {
            id: id.into(),
            status,
            running_count: running,
            task_definition: format!("web:{id}"),
            ..Default::default()
        }
    }

    #[test]
    fn the_fingerprint_moves_with_what_starts_a_deployment_only() {
        let spec = Service {
            task_definition: Some("web:1".into()),
            desired_count: Some(2),
            ..Default::default()
        };
        let base = fingerprint(&spec, 10);
        let scaled = Service {
            desired_count: Some(5),
            ..spec.clone()
        };
        assert_eq!(
            fingerprint(&scaled, 11),
            base,
            "desiredCount is not a new deployment"
        );
        let new_td = Service {
            task_definition: Some("web:2".into()),
            ..spec.clone()
        };
        assert_ne!(fingerprint(&new_td, 10), base);
        let forced = Service {
            force_new_deployment: Some(true),
            ..spec
        };
        assert_ne!(
            fingerprint(&forced, 10),
            fingerprint(&forced, 11),
            "each forced write"
        );
    }

    #[test]
    fn status_shows_live_deployments_primary_first_with_summed_counts() {
        let key = ServiceKey::new("default", "web");
        let deps = [
            dep("1", DeploymentStatus::Active, 2),
            dep("2", DeploymentStatus::Primary, 1),
            dep("0", DeploymentStatus::Inactive, 9),
        ];
        let s = status_doc(&key, 3, &deps, ServiceStatus::Active, None);
        let ids: Vec<&str> = s.deployments.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["2", "1"]);
        assert_eq!((s.running_count, s.desired_count), (3, 3));
        assert_eq!(s.task_definition, "web:2");
    }

    #[test]
    fn a_decision_applies_puts_and_deletes() {
        let mut changed = dep("1", DeploymentStatus::Active, 0);
        changed.rollout_state = RolloutState::Completed;
        let decision = Decision {
            put: vec![changed.clone(), dep("3", DeploymentStatus::Primary, 0)],
            delete: vec!["0".into()],
            ..Default::default()
        };
        let before = vec![
            dep("0", DeploymentStatus::Inactive, 0),
            dep("1", DeploymentStatus::Active, 0),
        ];
        let after = apply(before, &decision);
        let ids: Vec<&str> = after.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(after[0].rollout_state, RolloutState::Completed);
        assert!(
            routes(
                &ServiceKey::new("c", "s"),
                &Service::default(),
                &Decision {
                    routes: vec![Route {
                        role: ListenerRole::Test,
                        deployment: "3".into()
                    }],
                    ..Default::default()
                },
                &after
            )
            .is_empty(),
            "no advanced configuration, no route"
        );
    }
}

//! ECS's service deployments and service revisions (2024+) as views of Capstan's deployments.
//! Pure: the actions read the deployments and hand them here.
//!
//! - One Capstan deployment `ecs-svc/<n>` is one ECS service deployment
//!   `service-deployment/<cluster>/<service>/<n>` and one service revision
//!   `service-revision/<cluster>/<service>/<n>` (its task definition, capacity provider strategy
//!   and load balancers are fixed when it starts).
//! - ECS rolls back *inside* the failed service deployment; Capstan's deployer starts a new
//!   deployment of the last completed one. Such a rollback deployment (its `rollback` began when it
//!   was created) is not listed on its own: the failed deployment's status follows it
//!   (ROLLBACK_IN_PROGRESS, ROLLBACK_SUCCESSFUL, ROLLBACK_FAILED) and its
//!   `rollback.serviceRevisionArn` names it. A blue/green rollback hands back to blue, an older
//!   deployment, which stays listed.
//! - status: IN_PROGRESS → IN_PROGRESS (STOPPED once another deployment replaced it), COMPLETED
//!   → SUCCESSFUL, FAILED with no rollback → STOPPED (ECS: "stoppedAt … when it fails without
//!   rollback").
//! - sourceServiceRevisions: the deployment created just before it and, while it is in progress,
//!   every other deployment that still wants or runs tasks.

use capstan_core::deployment::{Deployment, DeploymentStatus, RolloutState};
use serde_json::{Map, Value, json};

use crate::shape::arn;

/// The prefix of Capstan's deployment ids.
const ID_PREFIX: &str = "ecs-svc/";

/// Which of the two ARN families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `service-deployment/…`.
    Deployment,
    /// `service-revision/…`.
    Revision,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::Deployment => "service-deployment",
            Kind::Revision => "service-revision",
        }
    }
}

/// The ARN of deployment `id` of `cluster`/`service` as `kind`.
pub fn arn_of(kind: Kind, cluster: &str, service: &str, id: &str) -> String {
    let tail = id.strip_prefix(ID_PREFIX).unwrap_or(id).replace('/', "-");
    arn(&format!("{}/{cluster}/{service}/{tail}", kind.segment()))
}

/// `(cluster, service, deployment id)` of an ARN of `kind` (any partition, region and account).
pub fn parse(kind: Kind, a: &str) -> Option<(String, String, String)> {
    let rest = a.split_once(&format!(":{}/", kind.segment()))?.1;
    let mut parts = rest.split('/');
    let (cluster, service, tail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [cluster, service, tail].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some((cluster.into(), service.into(), format!("{ID_PREFIX}{tail}")))
}

/// A deployment the deployer started to roll another back (listed as part of that one).
pub fn is_rollback_start(d: &Deployment) -> bool {
    d.rollback
        .as_ref()
        .is_some_and(|r| d.created_at.is_some_and(|c| c >= r.started_at))
}

/// The deployment that rolls `d` back, if any.
fn rolled_back_by<'a>(d: &Deployment, all: &'a [Deployment]) -> Option<&'a Deployment> {
    all.iter().find(|r| {
        r.id != d.id
            && r.rollback
                .as_ref()
                .is_some_and(|info| info.from_deployment == d.id)
    })
}

/// ECS's status of `d` among `all`, and when it finished or stopped (`finishedAt`/`stoppedAt`).
pub fn status(d: &Deployment, all: &[Deployment]) -> (&'static str, Option<f64>, Option<f64>) {
    match d.rollout_state {
        // A deployment replaced before it completed was stopped by the one that replaced it.
        RolloutState::InProgress if d.status != DeploymentStatus::Primary => {
            ("STOPPED", None, d.updated_at)
        }
        RolloutState::InProgress => ("IN_PROGRESS", None, None),
        RolloutState::Completed => ("SUCCESSFUL", d.updated_at, None),
        RolloutState::Failed => match rolled_back_by(d, all) {
            None => ("STOPPED", None, d.updated_at),
            Some(r) => match (r.rollout_state, is_rollback_start(r)) {
                (RolloutState::Completed, _) | (_, false) => {
                    ("ROLLBACK_SUCCESSFUL", r.updated_at, None)
                }
                (RolloutState::InProgress, true) => ("ROLLBACK_IN_PROGRESS", None, None),
                (RolloutState::Failed, true) => ("ROLLBACK_FAILED", r.updated_at, None),
            },
        },
    }
}

/// The deployments ECS lists, newest first.
pub fn listed(all: &[Deployment]) -> Vec<&Deployment> {
    let mut out: Vec<&Deployment> = all.iter().filter(|d| !is_rollback_start(d)).collect();
    out.sort_by(|a, b| {
        b.created_at
            .unwrap_or(0.0)
            .total_cmp(&a.created_at.unwrap_or(0.0))
            .then_with(|| b.id.cmp(&a.id))
    });
    out
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        m.insert(k.into(), v.into());
    }
}

fn owners(cluster: &str, service: &str) -> (String, String) {
    (
        arn(&format!("service/{cluster}/{service}")),
        arn(&format!("cluster/{cluster}")),
    )
}

/// ECS's `ServiceDeploymentBrief` of `d`.
pub fn brief(cluster: &str, service: &str, d: &Deployment, all: &[Deployment]) -> Value {
    let (service_arn, cluster_arn) = owners(cluster, service);
    let (st, finished, _) = status(d, all);
    let mut m = Map::new();
    m.insert(
        "serviceDeploymentArn".into(),
        arn_of(Kind::Deployment, cluster, service, &d.id).into(),
    );
    m.insert("serviceArn".into(), service_arn.into());
    m.insert("clusterArn".into(), cluster_arn.into());
    put(&mut m, "createdAt", d.created_at);
    put(&mut m, "startedAt", d.created_at);
    put(&mut m, "finishedAt", finished);
    m.insert(
        "targetServiceRevisionArn".into(),
        arn_of(Kind::Revision, cluster, service, &d.id).into(),
    );
    m.insert("status".into(), st.into());
    put(&mut m, "statusReason", d.rollout_state_reason.clone());
    Value::Object(m)
}

fn summary(cluster: &str, service: &str, d: &Deployment) -> Value {
    json!({
        "arn": arn_of(Kind::Revision, cluster, service, &d.id),
        "requestedTaskCount": d.desired_count,
        "runningTaskCount": d.running_count,
        "pendingTaskCount": d.pending_count,
    })
}

/// The revisions `d` moves from.
fn sources<'a>(d: &Deployment, all: &'a [Deployment]) -> Vec<&'a Deployment> {
    let created = d.created_at.unwrap_or(0.0);
    let before = all
        .iter()
        .filter(|o| o.id != d.id && o.created_at.unwrap_or(0.0) < created)
        .max_by(|a, b| {
            a.created_at
                .unwrap_or(0.0)
                .total_cmp(&b.created_at.unwrap_or(0.0))
        });
    let mut out: Vec<&Deployment> = before.into_iter().collect();
    if d.rollout_state == RolloutState::InProgress {
        for o in all {
            let busy = o.desired_count + o.running_count + o.pending_count > 0;
            if o.id != d.id
                && busy
                && o.status != DeploymentStatus::Primary
                && !out.iter().any(|x| x.id == o.id)
            {
                out.push(o);
            }
        }
    }
    out
}

/// ECS's `ServiceDeployment` of `d`.
pub fn full(cluster: &str, service: &str, d: &Deployment, all: &[Deployment]) -> Value {
    let mut v = brief(cluster, service, d, all);
    let (_, _, stopped) = status(d, all);
    let Value::Object(m) = &mut v else {
        return v;
    };
    m.remove("targetServiceRevisionArn");
    put(m, "updatedAt", d.updated_at);
    put(m, "stoppedAt", stopped);
    m.insert("targetServiceRevision".into(), summary(cluster, service, d));
    m.insert(
        "sourceServiceRevisions".into(),
        sources(d, all)
            .into_iter()
            .map(|s| summary(cluster, service, s))
            .collect(),
    );
    put(
        m,
        "lifecycleStage",
        d.lifecycle_stage.and_then(|s| serde_json::to_value(s).ok()),
    );
    if !d.lifecycle_hook_details.is_empty() {
        put(
            m,
            "lifecycleHookDetails",
            serde_json::to_value(&d.lifecycle_hook_details).ok(),
        );
    }
    put(
        m,
        "deploymentCircuitBreaker",
        d.circuit_breaker.and_then(|b| serde_json::to_value(b).ok()),
    );
    if let Some(r) = rolled_back_by(d, all)
        && let Some(info) = &r.rollback
    {
        m.insert(
            "rollback".into(),
            json!({
                "reason": info.reason,
                "startedAt": info.started_at,
                "serviceRevisionArn": arn_of(Kind::Revision, cluster, service, &r.id),
            }),
        );
    }
    v
}

/// ECS's `ServiceRevision` of `d`.
pub fn revision(cluster: &str, service: &str, d: &Deployment) -> Value {
    let (service_arn, cluster_arn) = owners(cluster, service);
    let mut m = Map::new();
    m.insert(
        "serviceRevisionArn".into(),
        arn_of(Kind::Revision, cluster, service, &d.id).into(),
    );
    m.insert("serviceArn".into(), service_arn.into());
    m.insert("clusterArn".into(), cluster_arn.into());
    m.insert(
        "taskDefinition".into(),
        arn(&format!("task-definition/{}", d.task_definition)).into(),
    );
    if d.capacity_provider_strategy.is_empty() {
        m.insert("launchType".into(), "EC2".into());
    } else {
        put(
            &mut m,
            "capacityProviderStrategy",
            serde_json::to_value(&d.capacity_provider_strategy).ok(),
        );
    }
    put(
        &mut m,
        "loadBalancers",
        serde_json::to_value(&d.load_balancers).ok(),
    );
    put(&mut m, "createdAt", d.created_at);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use capstan_core::deployment::RollbackInfo;

    use super::*;

    fn dep(n: u64, state: RolloutState, at: f64) -> Deployment {
        Deployment {
            id: format!("ecs-svc/{n}"),
            status: DeploymentStatus::Inactive,
            task_definition: format!("web:{n}"),
            rollout_state: state,
            created_at: Some(at),
            updated_at: Some(at + 5.0),
            ..Deployment::default()
        }
    }

    fn rollback_of(from: &Deployment, n: u64, state: RolloutState, at: f64) -> Deployment {
        Deployment {
            rollback: Some(RollbackInfo {
                reason: "tasks failed to start".into(),
                started_at: at,
                from_deployment: from.id.clone(),
            }),
            ..dep(n, state, at)
        }
    }

    #[test]
    fn arns_name_the_cluster_service_and_deployment_and_parse_back() {
        let a = arn_of(Kind::Deployment, "prod", "web", "ecs-svc/123");
        assert!(a.ends_with(":service-deployment/prod/web/123"), "{a}");
        assert_eq!(
            parse(Kind::Deployment, &a),
            Some(("prod".into(), "web".into(), "ecs-svc/123".into()))
        );
        // Any partition, region and account; the other family is not this one.
        let aws = "arn:aws:ecs:eu-west-3:123456789012:service-revision/prod/web/9";
        assert_eq!(
            parse(Kind::Revision, aws),
            Some(("prod".into(), "web".into(), "ecs-svc/9".into()))
        );
        assert_eq!(parse(Kind::Deployment, aws), None);
        for bad in [
            "web",
            "arn:aws:ecs:r:1:service-deployment/prod/web",
            "arn:aws:ecs:r:1:service-deployment/prod/web/1/2",
            "arn:aws:ecs:r:1:service-deployment//web/1",
        ] {
            assert_eq!(parse(Kind::Deployment, bad), None, "{bad}");
        }
    }

    #[test]
    fn statuses_follow_the_rollout_and_a_rollback_folds_into_what_it_rolled_back() {
        let ok = dep(1, RolloutState::Completed, 10.0);
        let mut going = dep(2, RolloutState::InProgress, 20.0);
        going.status = DeploymentStatus::Primary;
        let replaced = dep(5, RolloutState::InProgress, 50.0);
        let failed = dep(3, RolloutState::Failed, 30.0);
        let table: Vec<(Vec<Deployment>, &Deployment, &str)> = vec![
            (vec![ok.clone()], &ok, "SUCCESSFUL"),
            (vec![going.clone()], &going, "IN_PROGRESS"),
            (vec![replaced.clone()], &replaced, "STOPPED"),
            (vec![failed.clone()], &failed, "STOPPED"),
            (
                vec![
                    failed.clone(),
                    rollback_of(&failed, 4, RolloutState::InProgress, 40.0),
                ],
                &failed,
                "ROLLBACK_IN_PROGRESS",
            ),
            (
                vec![
                    failed.clone(),
                    rollback_of(&failed, 4, RolloutState::Completed, 40.0),
                ],
                &failed,
                "ROLLBACK_SUCCESSFUL",
            ),
            (
                vec![
                    failed.clone(),
                    rollback_of(&failed, 4, RolloutState::Failed, 40.0),
                ],
                &failed,
                "ROLLBACK_FAILED",
            ),
            // Blue/green hands back to blue, which began before the rollback: done at once.
            (
                vec![
                    rollback_of(&failed, 1, RolloutState::Completed, 40.0),
                    failed.clone(),
                ]
                .into_iter()
                .map(|mut d| {
                    if d.id == "ecs-svc/1" {
                        d.created_at = Some(10.0);
                    }
                    d
                })
                .collect(),
                &failed,
                "ROLLBACK_SUCCESSFUL",
            ),
        ];
        for (all, d, want) in table {
            assert_eq!(status(d, &all).0, want, "{all:?}");
        }
        let (_, finished, stopped) = status(&failed, std::slice::from_ref(&failed));
        assert_eq!((finished, stopped), (None, Some(35.0)));
        assert_eq!(status(&ok, std::slice::from_ref(&ok)).1, Some(15.0));
    }

    #[test]
    fn the_listing_is_newest_first_without_the_rollbacks_the_deployer_started() {
        let a = dep(1, RolloutState::Completed, 10.0);
        let b = dep(2, RolloutState::Failed, 20.0);
        let r = rollback_of(&b, 3, RolloutState::Completed, 30.0);
        let all = vec![a, r, b];
        let ids: Vec<&str> = listed(&all).iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["ecs-svc/2", "ecs-svc/1"]);
        let v = full("prod", "web", &all[2], &all);
        assert_eq!(v["status"], "ROLLBACK_SUCCESSFUL");
        assert!(
            v["rollback"]["serviceRevisionArn"]
                .as_str()
                .is_some_and(|s| s.ends_with("service-revision/prod/web/3"))
        );
        assert!(
            v["targetServiceRevision"]["arn"]
                .as_str()
                .is_some_and(|s| s.ends_with("service-revision/prod/web/2"))
        );
        let sources = v["sourceServiceRevisions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(sources.len(), 1);
        assert!(
            sources[0]["arn"]
                .as_str()
                .is_some_and(|s| s.ends_with("/web/1"))
        );
        let brief = brief("prod", "web", &all[2], &all);
        assert!(brief.get("targetServiceRevision").is_none());
        assert_eq!(brief["finishedAt"], 35.0);
    }

    #[test]
    fn an_in_progress_deployment_moves_from_every_deployment_with_tasks() {
        let mut a = dep(1, RolloutState::Completed, 10.0);
        a.status = DeploymentStatus::Active;
        a.running_count = 2;
        let b = dep(2, RolloutState::Failed, 20.0);
        let mut c = dep(3, RolloutState::InProgress, 30.0);
        c.status = DeploymentStatus::Primary;
        c.desired_count = 2;
        let all = vec![a, b, c];
        let v = full("prod", "web", &all[2], &all);
        let arns: Vec<&str> = v["sourceServiceRevisions"]
            .as_array()
            .map(|s| s.iter().filter_map(|x| x["arn"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(arns.len(), 2, "{arns:?}");
        assert!(arns[0].ends_with("/web/2") && arns[1].ends_with("/web/1"));
        assert_eq!(v["targetServiceRevision"]["requestedTaskCount"], 2);
        assert!(v.get("finishedAt").is_none() && v.get("stoppedAt").is_none());
        let r = revision("prod", "web", &all[0]);
        assert!(
            r["taskDefinition"]
                .as_str()
                .is_some_and(|t| t.ends_with("task-definition/web:1"))
        );
        assert_eq!(r["launchType"], "EC2");
    }
}

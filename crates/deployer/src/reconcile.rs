//! The deployer's loop body, per service: read the snapshot, run the blue/green hooks
//! (`capstan_plan::hooks`), plan the rollout (`capstan_plan::deploy`), write what changed in one
//! fenced transaction, record the events, and say when to look again.

use std::sync::Arc;
use std::time::Duration;

use capstan_core::deployment::{Deployment, DeploymentStatus, RolloutState};
use capstan_core::keys::{Family, ServiceKey};
use capstan_core::service::ServiceStatus;
use capstan_plan::deploy::{self, View};
use capstan_plan::hooks;
use capstan_plan::service::{self, status_doc};
use capstan_runtime::{Action, Events};
use capstan_store::{Claim, StoreError, Write};

use crate::execute::Executor;
use crate::snapshot::{self, routed};

/// Shared state of the deployer's reconcilers.
pub struct Ctx {
    /// Writer and caller.
    pub exec: Executor,
    /// Service events.
    pub events: Events,
    /// How long a task without health checks must run to count as healthy, seconds.
    pub grace_secs: f64,
    /// INACTIVE deployments kept per service.
    pub history: usize,
}

/// Safety-net requeue while a rollout is in progress.
const IN_PROGRESS_RESYNC: Duration = Duration::from_secs(30);

/// Reconciles one service.
pub async fn reconcile(
    key: ServiceKey,
    claim: Arc<Claim>,
    ctx: Arc<Ctx>,
) -> Result<Action, StoreError> {
    let exec = &ctx.exec;
    let caches = &exec.caches;
    if !caches.ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let keys = exec.store.keys().clone();
    let now = capstan_runtime::now();
    let spec_entry = caches
        .services
        .get(&keys.service(&key.cluster, &key.service));
    let entries = caches
        .deployments
        .list_prefix(&keys.list(Family::Deployments, &[&key.cluster, &key.service]));
    let originals: Vec<(Deployment, i64)> = entries
        .iter()
        .filter_map(|e| e.value.as_ref().ok().map(|d| (d.clone(), e.mod_revision)))
        .collect();
    let spec = match spec_entry.as_deref().map(|e| &e.value) {
        Some(Err(msg)) => {
            let msg = format!("the service spec is not valid: {msg}");
            let deps: Vec<Deployment> = originals.iter().map(|(d, _)| d.clone()).collect();
            let doc = status_doc(&key, 0, &deps, ServiceStatus::Active, Some(msg));
            let w = exec.status(Write::new(), &key, doc, now);
            exec.commit(&claim, w, false).await?;
            return Ok(Action::await_change());
        }
        Some(Ok(s)) if s.status() == ServiceStatus::Active => Some(s.clone()),
        _ => None,
    };
    let config = match &spec {
        Some(s) => match snapshot::config(
            caches,
            &keys,
            s,
            spec_entry.as_ref().map_or(0, |e| e.mod_revision),
            ctx.history,
        ) {
            Ok(c) => Some(c),
            Err(msg) => {
                let deps: Vec<Deployment> = originals.iter().map(|(d, _)| d.clone()).collect();
                let desired = s.desired_count.unwrap_or(0);
                let doc = status_doc(
                    &key,
                    desired,
                    &deps,
                    ServiceStatus::Active,
                    Some(msg.clone()),
                );
                let w = exec.status(Write::new(), &key, doc, now);
                exec.commit(&claim, w, false).await?;
                ctx.events
                    .record(
                        &claim,
                        &key.cluster,
                        &key.service,
                        format!("service ({}) was unable to deploy: {msg}", key.service),
                    )
                    .await?;
                return Ok(Action::await_change());
            }
        },
        None => None,
    };
    let mut deps: Vec<Deployment> = originals.iter().map(|(d, _)| d.clone()).collect();
    let tasks = snapshot::tasks_by_deployment(caches, &keys, &key);
    let tallies = snapshot::tallies(
        caches,
        &keys,
        spec.as_ref(),
        &deps,
        &tasks,
        ctx.grace_secs,
        now,
    );

    // Hooks of the PRIMARY's current stage.
    let continue_key = |id: &str| keys.continue_deployment(&key.cluster, &key.service, id);
    let mut hook_run = hooks::HookRun::default();
    let mut stop = false;
    let primary = deps
        .iter()
        .rposition(|d| d.status == DeploymentStatus::Primary);
    if let (Some(s), Some(p)) = (&spec, primary) {
        let blue = deps.iter().rev().find(|d| {
            d.status == DeploymentStatus::Active && d.rollout_state != RolloutState::Failed
        });
        let request = caches
            .continues
            .get(&continue_key(&deps[p].id))
            .and_then(|e| e.value.as_ref().ok().cloned());
        // A stop is not an answer to a hook: the planner rolls the deployment back itself.
        let (stop_request, request) = match request {
            Some(r) if r.stop_type.is_some() => (true, None),
            r => (false, r),
        };
        stop = stop_request;
        let stage = hooks::Stage {
            key: &key,
            spec: s,
            primary: &deps[p],
            blue,
            continue_request: request.as_ref(),
        };
        // The hooks' due webhook calls are made first; their answers move the hooks on.
        let answers = exec.call_hooks(&hooks::due(&stage, now)).await;
        hook_run = hooks::plan(&stage, &answers, now, &mut rand::rng());
        deps[p].lifecycle_hook_details = std::mem::take(&mut hook_run.details);
    }
    let new_id = format!("ecs-svc/{}", (now * 1e6) as u64);
    let routed = match (&spec, primary) {
        (Some(s), Some(p)) => routed(caches, &keys, s, &deps[p]),
        _ => deploy::Routed::default(),
    };
    let decision = deploy::plan(
        &View {
            service: &key.service,
            config: config.as_ref(),
            deployments: &deps,
            tallies: &tallies,
            hooks: hook_run.outcome.clone(),
            stop,
            new_id: &new_id,
            routed,
        },
        now,
        &mut rand::rng(),
    );

    // Apply the decision to the deployments, then write what differs from etcd.
    let mut after = service::apply(deps, &decision);
    let (mut w, touches_deployments) = exec.deployments(
        Write::new(),
        &key,
        &originals,
        &mut after,
        &decision.delete,
        now,
    );
    // ContinueServiceDeployment requests: used, or for a deployment no longer waiting.
    let waiting_on = after
        .iter()
        .find(|d| {
            d.status == DeploymentStatus::Primary && d.rollout_state == RolloutState::InProgress
        })
        .filter(|_| !hook_run.consumed_continue)
        .map(|d| continue_key(&d.id));
    for e in caches.continues.list_prefix(&keys.list(
        Family::ContinueDeploymentRequests,
        &[&key.cluster, &key.service],
    )) {
        if Some(&e.key) != waiting_on.as_ref() {
            w = w.delete(&e.key);
        }
    }
    let status_key = keys.service_status(&key.cluster, &key.service);
    match (&spec, &config) {
        (Some(s), Some(c)) => {
            let doc = status_doc(&key, c.desired, &after, ServiceStatus::Active, None);
            w = exec.status(w, &key, doc, now);
            w = exec.routes(w, &service::routes(&key, s, &decision, &after));
        }
        // Deleted: DRAINING while tasks remain, then INACTIVE (kept, as ECS shows deleted
        // services; `etcdctl del` of the status key forgets it).
        (None, _) if !after.is_empty() || caches.status.get(&status_key).is_some() => {
            let state = if after.is_empty() {
                ServiceStatus::Inactive
            } else {
                ServiceStatus::Draining
            };
            w = exec.status(w, &key, status_doc(&key, 0, &after, state, None), now);
        }
        _ => {}
    }
    exec.commit(&claim, w, touches_deployments).await?;
    for e in decision.events {
        ctx.events
            .record(&claim, &key.cluster, &key.service, e)
            .await?;
    }

    let wake = [decision.wake_at, hook_run.wake_at]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
    let rolling = after
        .iter()
        .any(|d| d.rollout_state == RolloutState::InProgress);
    Ok(if wake.is_finite() {
        let d = Duration::from_secs_f64((wake - now).clamp(0.0, IN_PROGRESS_RESYNC.as_secs_f64()));
        Action::requeue(d)
    } else if rolling {
        Action::requeue(IN_PROGRESS_RESYNC)
    } else {
        Action::await_change()
    })
}

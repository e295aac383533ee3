//! The scheduler's loop body: for each key, read the snapshot, plan with
//! `capstan_plan::{node_loss, scheduling}`, execute the plan, and say when to look again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::TaskDefinition;
use capstan_core::instance::ContainerInstance;
use capstan_core::keys::ServiceKey;
use capstan_core::task::StopCode;
use capstan_plan::node_loss;
use capstan_plan::scheduling::{self, Action as PlanAction, task_list};
use capstan_plan::tasks::{self, NewTask, Placing, StopStep};
use capstan_runtime::{Action, Events};
use capstan_store::{Claim, StoreError, Write};
use rand::SeedableRng;

use crate::Key;
use crate::execute::{self, Executor};
use crate::requests;
use crate::snapshot::{self, gather};

/// Shared state of the scheduler's reconcilers.
pub struct Ctx {
    /// Writer and caller.
    pub exec: Executor,
    /// How long an instance may be missing before its tasks are lost, seconds.
    pub grace: f64,
    /// When each missing instance was first seen missing (epoch seconds).
    pub missing_since: Mutex<BTreeMap<String, f64>>,
    /// Service events.
    pub events: Events,
    /// How long stopped tasks are kept.
    pub retention: Duration,
    /// Longest wait for the registrar's drained mark before StopTask, seconds.
    pub drain_timeout: f64,
}

/// Reconciles one key: the loop body `Runtime::serve` runs.
pub async fn reconcile_key(
    key: Key,
    claim: Arc<Claim>,
    ctx: Arc<Ctx>,
) -> Result<Action, StoreError> {
    if !ctx.exec.caches.ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let now = capstan_runtime::now();
    match key {
        Key::Service(k) => reconcile(k, claim, ctx, now).await,
        Key::RunTask { cluster, id } => {
            requests::run_task(&cluster, &id, &claim, &ctx, now).await?;
            Ok(Action::await_change())
        }
        Key::StopTask { cluster, task } => {
            requests::stop_task(&cluster, &task, &claim, &ctx, now).await?;
            Ok(Action::await_change())
        }
        Key::Waiting { cluster } => {
            requests::place_waiting(&cluster, &claim, &ctx, now).await?;
            Ok(Action::await_change())
        }
    }
}

/// A fresh task id.
pub fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What a new task of a service's deployment starts from.
fn service_task<'a>(
    key: &'a ServiceKey,
    group: &'a str,
    deployment: &'a str,
    td: &'a TaskDefinition,
    id: &'a str,
    now: f64,
    exec: bool,
) -> NewTask<'a> {
    NewTask {
        id,
        cluster: &key.cluster,
        group,
        started_by: Some(deployment),
        task_definition: td,
        now,
        enable_execute_command: exec,
    }
}

/// One task to stop, and why.
#[derive(Debug, Clone, Copy)]
pub struct StopOrder<'a> {
    /// Cluster.
    pub cluster: &'a str,
    /// Task id.
    pub task: &'a str,
    /// stoppedReason.
    pub reason: &'a str,
    /// stopCode.
    pub code: StopCode,
}

/// Stops a task: desired STOPPED (DEACTIVATING), then its first stop step (StopTask, unless its
/// targets must drain first).
pub async fn stop(
    ctx: &Ctx,
    claim: &Claim,
    order: StopOrder<'_>,
    instances: &BTreeMap<String, ContainerInstance>,
    now: f64,
) -> Result<(), StoreError> {
    let StopOrder {
        cluster,
        task,
        reason,
        code,
    } = order;
    let Some(t) = ctx
        .exec
        .begin_stop(claim, cluster, task, reason, code, now)
        .await?
    else {
        return Ok(());
    };
    let (caches, keys) = (&ctx.exec.caches, &ctx.exec.keys);
    let step = snapshot::stop_step(caches, keys, &t, instances, ctx.drain_timeout, now);
    ctx.exec.stop_step(claim, &t, &step, now).await
}

impl Ctx {
    /// Records a service event.
    async fn event(
        &self,
        claim: &Claim,
        key: &ServiceKey,
        message: String,
    ) -> Result<(), StoreError> {
        self.events
            .record(claim, &key.cluster, &key.service, message)
            .await
    }

    /// Node loss ([`node_loss::plan`]): tasks on instances missing for longer than the grace are
    /// recorded STOPPED. Returns how many were, and when to look again for tasks still within
    /// their grace.
    async fn handle_lost(
        &self,
        claim: &Claim,
        snap: &snapshot::Context,
        now: f64,
    ) -> Result<(usize, Option<Duration>), StoreError> {
        let plan = {
            let mut since = self
                .missing_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let input = snapshot::node_loss_input(snap, std::mem::take(&mut *since), self.grace);
            let plan = node_loss::plan(&input, now, &mut rand::rng());
            *since = plan.missing_since.clone();
            plan
        };
        for lost in &plan.lost {
            let Some(t) = snap
                .tasks
                .get(&lost.task)
                .and_then(|e| e.value.as_ref().ok())
            else {
                continue;
            };
            let reason = format!(
                "Task stopped because its host (container instance {}) was lost",
                lost.instance
            );
            let code = StopCode::InfrastructureHealth;
            self.exec
                .mark_stopped(claim, &lost.task, t.cluster(), code, &reason, now)
                .await?;
        }
        Ok((plan.lost.len(), plan.recheck.map(Duration::from_secs_f64)))
    }
}

async fn reconcile(
    key: ServiceKey,
    claim: Arc<Claim>,
    ctx: Arc<Ctx>,
    now: f64,
) -> Result<Action, StoreError> {
    let caches = &ctx.exec.caches;
    if !ctx.exec.sees_own_tasks() {
        // Planning now would miss tasks just created and place them a second time.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    let keys = ctx.exec.keys.clone();
    let (input, snap) = gather(caches, &keys, &key, now);
    let (lost, recheck) = ctx.handle_lost(&claim, &snap, now).await?;
    if lost > 0 {
        return Ok(Action::requeue(Duration::ZERO));
    }
    // Tasks whose instance is missing (within the grace) are neither live nor replaceable yet.
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let planning = std::time::Instant::now();
    let plan = scheduling::plan(&input, now, &mut rng);
    metrics::histogram!("capstan_scheduler_plan_seconds").record(planning.elapsed().as_secs_f64());

    let group = key.group();
    let exec = snap.enable_execute_command;
    let mut launches = Vec::new();
    let mut stops = Vec::new();
    let mut provisioning = Vec::new();
    let mut waiting: BTreeMap<String, u32> = BTreeMap::new();
    for a in plan.actions {
        match a {
            PlanAction::Launch {
                deployment,
                instance,
            } => {
                let (Some((_, Some(td))), Some(ci)) = (
                    snap.deployments.get(&deployment),
                    snap.instances.get(&instance),
                ) else {
                    continue;
                };
                let id = new_task_id();
                let t = tasks::new_task(
                    service_task(&key, &group, &deployment, td, &id, now, exec),
                    Placing::On(ci, &instance),
                );
                launches.push((t, td.clone(), ci.agent_endpoint.clone(), None));
            }
            PlanAction::Place { task, instance } => {
                let (Some(entry), Some(ci)) =
                    (snap.tasks.get(&task), snap.instances.get(&instance))
                else {
                    continue;
                };
                let Ok(t) = &entry.value else { continue };
                let Some((_, Some(td))) =
                    t.started_by.as_ref().and_then(|d| snap.deployments.get(d))
                else {
                    continue;
                };
                launches.push((
                    tasks::placed(t, ci, &instance),
                    td.clone(),
                    ci.agent_endpoint.clone(),
                    Some(entry.mod_revision),
                ));
            }
            PlanAction::Provision {
                deployment,
                provider,
            } => {
                if let Some((_, Some(td))) = snap.deployments.get(&deployment) {
                    *waiting.entry(provider.clone()).or_insert(0) += 1;
                    let id = new_task_id();
                    provisioning.push(tasks::new_task(
                        service_task(&key, &group, &deployment, td, &id, now, exec),
                        Placing::Waiting(&provider),
                    ));
                }
            }
            PlanAction::Stop { task, reason } => stops.push((task, reason)),
        }
    }
    if !provisioning.is_empty() {
        ctx.exec.provision(&claim, &provisioning).await?;
        for (provider, n) in &waiting {
            ctx.event(
                &claim,
                &key,
                format!(
                    "service ({}) has {n} tasks waiting in PROVISIONING for capacity provider ({provider}).",
                    key.service
                ),
            )
            .await?;
        }
    }
    if !launches.is_empty() {
        let ids: Vec<String> = launches
            .iter()
            .map(|(t, _, _, _)| t.id().to_string())
            .collect();
        let n = ids.len();
        let launching = std::time::Instant::now();
        ctx.exec.launch(&claim, launches, Write::new(), now).await?;
        tracing::debug!(service = %key.service, tasks = n, seconds = launching.elapsed().as_secs_f64(), "launched");
        metrics::counter!("capstan_scheduler_tasks_launched_total").increment(n as u64);
        ctx.event(
            &claim,
            &key,
            format!(
                "service ({}) has started {n} tasks: {}.",
                key.service,
                task_list(ids.iter().map(String::as_str))
            ),
        )
        .await?;
    }
    for (task, reason) in &stops {
        let order = StopOrder {
            cluster: &key.cluster,
            task,
            reason,
            code: StopCode::ServiceSchedulerInitiated,
        };
        stop(&ctx, &claim, order, &snap.instances, now).await?;
    }
    if !stops.is_empty() {
        ctx.event(
            &claim,
            &key,
            format!(
                "service ({}) has stopped {} running tasks: {}.",
                key.service,
                stops.len(),
                task_list(stops.iter().map(|(i, _)| i.as_str()))
            ),
        )
        .await?;
    }
    // StopTask calls that did not get through, or waited for draining, are sent again.
    let mut drain_recheck: Option<f64> = None;
    for e in snap.tasks.values() {
        if let Ok(t) = &e.value
            && tasks::stop_pending(t)
        {
            let step =
                snapshot::stop_step(caches, &keys, t, &snap.instances, ctx.drain_timeout, now);
            if let StopStep::Wait(u) = step {
                drain_recheck = Some(drain_recheck.map_or(u, |d: f64| d.min(u)));
            } else if !stops.iter().any(|(id, _)| id == t.id()) {
                ctx.exec.stop_step(&claim, t, &step, now).await?;
            }
        }
    }
    if let Some(f) = plan.failure {
        ctx.event(&claim, &key, f.message(&key.service)).await?;
    }
    if plan.throttled.is_some() {
        ctx.event(
            &claim,
            &key,
            format!(
                "service ({}) is unable to consistently start tasks successfully.",
                key.service
            ),
        )
        .await?;
    }
    // Stopped tasks stay visible for the retention period, then go.
    let retention = ctx.retention.as_secs_f64();
    let expired: Vec<String> = snap
        .tasks
        .values()
        .filter(|e| {
            e.value
                .as_ref()
                .is_ok_and(|t| tasks::expired(t, retention, now))
        })
        .map(|e| e.key.clone())
        .collect();
    for chunk in expired.chunks(execute::TXN_OPS) {
        let mut w = Write::new();
        for k in chunk {
            w = w.delete(k);
        }
        ctx.exec.store.commit(w, Some(&claim)).await?;
    }
    let mut next = Duration::from_secs(30);
    if let Some(r) = recheck {
        next = next.min(r + Duration::from_millis(50));
    }
    if let Some(t) = plan.throttled {
        next = next.min(Duration::from_secs_f64(t) + Duration::from_millis(50));
    }
    if let Some(u) = drain_recheck {
        next = next.min(Duration::from_secs_f64((u - now).max(0.0)) + Duration::from_millis(50));
    }
    Ok(Action::requeue(next))
}

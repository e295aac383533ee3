//! The Capstan service scheduler: converges each deployment to its own task count, places tasks
//! with ECS's filters and strategies, starts and stops them through the agents, follows the
//! agents' task streams, replaces failed tasks and tasks lost with their host.
//!
//! It is the only writer of `/capstan/tasks/…` and the only caller of StartTask/StopTask.

pub mod execute;
pub mod requests;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::keys::Family;
use capstan_core::task::{StopCode, TaskStatus};
use capstan_plan::scheduling::{self, Action as PlanAction};
use capstan_proto::agent::v1 as pb;
use capstan_proto::tls::TlsFiles;
use capstan_runtime::{
    Action, CommonArgs, Controller, ControllerConfig, Events, Runtime, RuntimeError,
};
use capstan_store::{Claim, Leadership, StoreError, Write};
use futures::FutureExt;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::execute::{Agents, Executor, new_task, now, unacknowledged};
use crate::snapshot::{
    Caches, ServiceKey, gather, last_segment, spec_decoder, status_decoder, stop_pending,
};

/// Command-line arguments of `capstan-scheduler`.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-scheduler", version)]
pub struct SchedulerArgs {
    /// etcd, prefix, admin address, election and logging.
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long an instance may be missing before its tasks are recorded STOPPED and replaced;
    /// the election TTL by default.
    #[arg(long, env = "CAPSTAN_NODE_LOSS_GRACE")]
    pub node_loss_grace: Option<humantime::Duration>,
    /// How long stopped tasks stay visible before their records are deleted.
    #[arg(long, env = "CAPSTAN_TASK_RETENTION", default_value = "1h")]
    pub task_retention: humantime::Duration,
    /// Longest wait in DEACTIVATING for the registrar's drained mark before StopTask (ELB's
    /// default deregistration delay is 300 s).
    #[arg(long, env = "CAPSTAN_DRAIN_TIMEOUT", default_value = "330s")]
    pub drain_timeout: humantime::Duration,
    /// Reconciles at once.
    #[arg(long, env = "CAPSTAN_SCHEDULER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Least time between two reconciles of one service: task reports arriving meanwhile are
    /// handled by one reconcile (a service with thousands of tasks would otherwise re-plan for
    /// each). 0 reconciles on every change.
    #[arg(long, env = "CAPSTAN_SCHEDULER_SETTLE", default_value = "100ms")]
    pub settle: humantime::Duration,
    /// Client certificate for agents (mutual TLS, with --agent-tls-key and --agent-tls-ca).
    #[arg(long, env = "CAPSTAN_AGENT_CLIENT_CERT", requires_all = ["agent_tls_key", "agent_tls_ca"])]
    pub agent_tls_cert: Option<std::path::PathBuf>,
    /// Client key for agents.
    #[arg(long, env = "CAPSTAN_AGENT_CLIENT_KEY", requires_all = ["agent_tls_cert", "agent_tls_ca"])]
    pub agent_tls_key: Option<std::path::PathBuf>,
    /// CA that signed the agents' certificates.
    #[arg(long, env = "CAPSTAN_AGENT_CA", requires_all = ["agent_tls_cert", "agent_tls_key"])]
    pub agent_tls_ca: Option<std::path::PathBuf>,
}

/// Shared state of the scheduler's reconcilers.
pub struct Ctx {
    exec: Executor,
    grace: Duration,
    /// When each missing instance was first seen missing.
    missing_since: Mutex<HashMap<String, Instant>>,
    /// Service events.
    events: Events,
    /// How long stopped tasks are kept.
    retention: Duration,
}

fn caches_ready(c: &Caches) -> bool {
    c.services.is_ready()
        && c.deployments.is_ready()
        && c.taskdefs.is_ready()
        && c.tasks.is_ready()
        && c.instances.is_ready()
        && c.runtask.is_ready()
        && c.stoptask.is_ready()
        && c.targets.is_ready()
}

/// What the scheduler reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A service's deployments.
    Service(ServiceKey),
    /// A RunTask request.
    RunTask {
        /// Cluster.
        cluster: String,
        /// Request id.
        id: String,
    },
    /// A StopTask request.
    StopTask {
        /// Cluster.
        cluster: String,
        /// Task id.
        task: String,
    },
    /// One-off tasks of a cluster waiting in PROVISIONING for capacity.
    Waiting {
        /// Cluster.
        cluster: String,
    },
}

async fn dispatch(key: Key, claim: Arc<Claim>, ctx: Arc<Ctx>) -> Result<Action, StoreError> {
    if !caches_ready(&ctx.exec.caches) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    match key {
        Key::Service(k) => reconcile(k, claim, ctx).await,
        Key::RunTask { cluster, id } => {
            requests::run_task(&cluster, &id, &claim, &ctx).await?;
            Ok(Action::await_change())
        }
        Key::StopTask { cluster, task } => {
            requests::stop_task(&cluster, &task, &claim, &ctx).await?;
            Ok(Action::await_change())
        }
        Key::Waiting { cluster } => {
            requests::place_waiting(&cluster, &claim, &ctx).await?;
            Ok(Action::await_change())
        }
    }
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

    /// Tasks on instances missing for longer than the grace period: recorded STOPPED. Returns how
    /// many were, and when to look again for tasks still within their grace.
    async fn handle_lost(
        &self,
        claim: &Claim,
        key: &ServiceKey,
        ctx: &snapshot::Context,
    ) -> Result<(usize, Option<Duration>), StoreError> {
        let mut lost = Vec::new();
        let mut recheck: Option<Duration> = None;
        {
            let mut since = self
                .missing_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            since.retain(|id, _| !ctx.instances.contains_key(id));
            for e in ctx.tasks.values() {
                let Ok(t) = &e.value else { continue };
                if t.last_status == TaskStatus::Stopped {
                    continue;
                }
                let Some(inst) = t.container_instance_arn.as_deref().map(last_segment) else {
                    continue;
                };
                if ctx.instances.contains_key(inst) {
                    continue;
                }
                let first = *since.entry(inst.to_string()).or_insert_with(Instant::now);
                if first.elapsed() >= self.grace {
                    lost.push((t.id().to_string(), inst.to_string()));
                } else {
                    let left = self.grace - first.elapsed();
                    recheck = Some(recheck.map_or(left, |r| r.min(left)));
                }
            }
        }
        for (task, inst) in &lost {
            let reason =
                format!("Task stopped because its host (container instance {inst}) was lost");
            self.exec
                .mark_stopped(
                    claim,
                    task,
                    &key.cluster,
                    StopCode::InfrastructureHealth,
                    &reason,
                )
                .await?;
        }
        Ok((lost.len(), recheck))
    }
}

/// Task ids listed in an event: ECS's `(task <id>)` items, the first few only, so an event about
/// thousands of tasks stays a small document.
fn task_list<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let n = ids.len();
    let mut out = ids
        .take(SHOWN)
        .map(|i| format!("(task {i})"))
        .collect::<Vec<_>>()
        .join(" ");
    if n > SHOWN {
        out.push_str(&format!(" and {} more", n - SHOWN));
    }
    out
}

async fn reconcile(
    key: ServiceKey,
    claim: Arc<Claim>,
    ctx: Arc<Ctx>,
) -> Result<Action, StoreError> {
    let caches = &ctx.exec.caches;
    if !ctx.exec.sees_own_tasks() {
        // Planning now would miss tasks just created and place them a second time.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    let keys = ctx.exec.keys.clone();
    let (input, snap) = gather(caches, &keys, &key);
    let (lost, recheck) = ctx.handle_lost(&claim, &key, &snap).await?;
    if lost > 0 {
        return Ok(Action::requeue(Duration::ZERO));
    }
    // Tasks whose instance is missing (within the grace) are neither live nor replaceable yet.
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let planning = std::time::Instant::now();
    let plan = scheduling::plan(&input, &mut rng);
    metrics::histogram!("capstan_scheduler_plan_seconds").record(planning.elapsed().as_secs_f64());

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
                let t = new_task(&key, &deployment, td, ci, &instance);
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
                    execute::placed_task(t, ci, &instance),
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
                    provisioning.push(execute::new_provisioning_task(
                        &key,
                        &deployment,
                        td,
                        &provider,
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
        ctx.exec.launch(&claim, launches, Write::new()).await?;
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
        ctx.exec
            .stop(
                &claim,
                &key.cluster,
                task,
                reason,
                StopCode::ServiceSchedulerInitiated,
                &snap.instances,
            )
            .await?;
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
            && stop_pending(t)
        {
            if let Some(u) = snapshot::drain_until(caches, &keys, t, ctx.exec.drain_timeout, now())
            {
                drain_recheck = Some(drain_recheck.map_or(u, |d: f64| d.min(u)));
            } else if !stops.iter().any(|(id, _)| id == t.id()) {
                ctx.exec.send_stop(&claim, t, &snap.instances).await?;
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
    let cutoff = now() - ctx.retention.as_secs_f64();
    let expired: Vec<String> = snap
        .tasks
        .values()
        .filter(|e| {
            e.value.as_ref().is_ok_and(|t| {
                t.last_status == TaskStatus::Stopped && t.stopped_at.is_some_and(|s| s < cutoff)
            })
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
        next = next.min(Duration::from_secs_f64((u - now()).max(0.0)) + Duration::from_millis(50));
    }
    Ok(Action::requeue(next))
}

/// Follows one agent's task stream while this replica leads.
async fn watch_agent(
    ctx: Arc<Ctx>,
    claim: Arc<Claim>,
    reports: mpsc::Sender<Reports>,
    cluster: String,
    instance: String,
    endpoint: String,
    stop: CancellationToken,
) {
    let backoff = Duration::from_millis(500);
    while !stop.is_cancelled() {
        let stream = match ctx.exec.agents.client(&endpoint) {
            Ok(mut c) => c
                .watch_tasks(pb::WatchTasksRequest {})
                .await
                .map(|r| r.into_inner()),
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "agent client");
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff) => continue }
            }
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(status) => {
                tracing::debug!(%endpoint, %status, "WatchTasks failed; retrying");
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff) => continue }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.message() => m,
            };
            let Ok(Some(ev)) = msg else { break };
            let mut snapshot = false;
            let mut states = Vec::new();
            let push =
                |ev: pb::TaskEvent, snapshot: &mut bool, states: &mut Vec<pb::TaskState>| match ev
                    .event
                {
                    Some(pb::task_event::Event::Snapshot(s)) => {
                        *snapshot = true;
                        states.extend(s.tasks);
                    }
                    Some(pb::task_event::Event::Update(t)) => states.push(t),
                    None => {}
                };
            push(ev, &mut snapshot, &mut states);
            // Take whatever else has already arrived, to write it in one transaction.
            while states.len() < execute::TXN_OPS {
                match stream.message().now_or_never() {
                    Some(Ok(Some(ev))) => push(ev, &mut snapshot, &mut states),
                    _ => break,
                }
            }
            // One writer records every agent's reports; wait for ours (keeps this agent's order).
            let (done, applied) = oneshot::channel();
            let sent = reports
                .send(Reports {
                    cluster: cluster.clone(),
                    states: states.clone(),
                    done,
                })
                .await;
            if sent.is_err() {
                return;
            }
            let intruders = tokio::select! {
                _ = stop.cancelled() => return,
                r = applied => match r { Ok(ids) => ids, Err(_) => return },
            };
            // A task id never runs twice: tasks the scheduler did not place there, or recorded
            // STOPPED (their host was declared lost), are stopped.
            for id in intruders {
                let req = pb::StopTaskRequest {
                    task_id: id.clone(),
                    reason: "Task is not expected on this container instance".into(),
                    timeout: None,
                    fencing_token: claim.fencing_token(),
                    stop_code: pb::StopCode::ServiceSchedulerInitiated as i32,
                };
                if let Err(e) = ctx.exec.agents.stop(&endpoint, req).await {
                    tracing::warn!(task = %id, error = %e, "cannot stop an unexpected task");
                }
            }
            if snapshot {
                let known: HashSet<String> = states.iter().map(|s| s.task_id.clone()).collect();
                let lost = unacknowledged(
                    &ctx.exec.caches,
                    &ctx.exec.keys,
                    &cluster,
                    &instance,
                    &known,
                );
                for t in lost {
                    let td = snapshot::task_definition(
                        &ctx.exec.caches,
                        &ctx.exec.keys,
                        &t.task_definition_arn,
                    );
                    let Some(td) = td else { continue };
                    tracing::info!(task = %t.id(), %instance, "re-sending StartTask the agent never got");
                    let req = pb::StartTaskRequest {
                        task_id: t.id().to_string(),
                        cluster: cluster.clone(),
                        task_definition_arn: t.task_definition_arn.clone(),
                        task_definition_json: serde_json::to_string(&td).unwrap_or_default(),
                        overrides_json: String::new(),
                        fencing_token: claim.fencing_token(),
                    };
                    if let Err(e) = ctx.exec.agents.start(&endpoint, req).await {
                        tracing::warn!(task = %t.id(), error = %e, "StartTask failed");
                    }
                }
            }
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff) => {} }
    }
}

/// Reports from one agent's stream, waiting to be recorded.
struct Reports {
    cluster: String,
    states: Vec<pb::TaskState>,
    /// Answered with the task ids the agent runs that it must not.
    done: oneshot::Sender<Vec<String>>,
}

/// Batches waiting for the report writer.
const REPORT_QUEUE: usize = 4096;
/// Most task reports one round of the writer records.
const REPORT_BATCH: usize = 1000;

/// Records every agent's reports while this replica leads: batches from many agents merge into a
/// few large fenced transactions written one round at a time, so a thousand agents reporting at
/// once cost a handful of etcd transactions instead of a thousand concurrent small ones (which
/// starve etcd, the leader's lease keep-alive with it). A failed round is retried, never dropped.
async fn write_reports(
    ctx: Arc<Ctx>,
    claim: Arc<Claim>,
    mut rx: mpsc::Receiver<Reports>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let mut n = first.states.len();
        let mut round = vec![first];
        while n < REPORT_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.states.len();
                    round.push(r);
                }
                Err(_) => break,
            }
        }
        let mut by_cluster: BTreeMap<&str, Vec<pb::TaskState>> = BTreeMap::new();
        for r in &round {
            by_cluster
                .entry(r.cluster.as_str())
                .or_default()
                .extend(r.states.iter().cloned());
        }
        let mut delay = Duration::from_millis(100);
        let intruders: HashSet<String> = loop {
            let mut out = HashSet::new();
            let mut failed = None;
            for (cluster, states) in &by_cluster {
                match ctx.exec.apply_reports(&claim, cluster, states).await {
                    Ok(ids) => out.extend(ids),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => break out,
                Some(StoreError::NotLeader { .. }) => return,
                Some(e) => {
                    tracing::warn!(error = %e, reports = n, "cannot record agent reports; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        };
        metrics::counter!("capstan_scheduler_reports_recorded_total").increment(n as u64);
        for r in round {
            let mine = r
                .states
                .iter()
                .filter(|s| intruders.contains(&s.task_id))
                .map(|s| s.task_id.clone())
                .collect();
            let _ = r.done.send(mine);
        }
    }
}

/// Runs one watcher per registered instance while this replica leads.
async fn manage_agents(ctx: Arc<Ctx>, mut leadership: Leadership, cancel: CancellationToken) {
    loop {
        let claim = tokio::select! {
            _ = cancel.cancelled() => return,
            c = leadership.acquired() => match c { Some(c) => c, None => return },
        };
        let term = cancel.child_token();
        let (reports, rx) = mpsc::channel(REPORT_QUEUE);
        tokio::spawn(write_reports(ctx.clone(), claim.clone(), rx, term.clone()));
        let mut watchers: BTreeMap<String, (String, CancellationToken)> = BTreeMap::new();
        let keys = ctx.exec.keys.clone();
        loop {
            let mut seen = HashSet::new();
            for e in ctx.exec.caches.instances.list() {
                let Ok(ci) = &e.value else { continue };
                let Some(p) = keys.parse(&e.key) else {
                    continue;
                };
                let (cluster, instance) = (p.parts[0].clone(), p.parts[1].clone());
                seen.insert(e.key.clone());
                let fresh = watchers
                    .get(&e.key)
                    .is_none_or(|(ep, _)| *ep != ci.agent_endpoint);
                if fresh {
                    if let Some((_, old)) = watchers.remove(&e.key) {
                        old.cancel();
                    }
                    let stop = term.child_token();
                    tokio::spawn(watch_agent(
                        ctx.clone(),
                        claim.clone(),
                        reports.clone(),
                        cluster,
                        instance,
                        ci.agent_endpoint.clone(),
                        stop.clone(),
                    ));
                    watchers.insert(e.key.clone(), (ci.agent_endpoint.clone(), stop));
                }
            }
            watchers.retain(|k, (_, stop)| {
                let keep = seen.contains(k);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = leadership.lost(&claim) => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        term.cancel();
    }
}

/// Runs the scheduler until SIGTERM/SIGINT.
pub async fn run(args: SchedulerArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("scheduler", &args.common).await?;
    let resync = Duration::from_secs(300);
    let caches = Caches {
        services: rt.cache(Family::Services, spec_decoder(), resync),
        deployments: rt.cache(Family::Deployments, status_decoder(), resync),
        taskdefs: rt.cache(Family::TaskDefinitions, spec_decoder(), resync),
        tasks: rt.cache(Family::Tasks, status_decoder(), resync),
        instances: rt.cache(Family::ContainerInstances, status_decoder(), resync),
        runtask: rt.cache(Family::RunTaskRequests, spec_decoder(), resync),
        stoptask: rt.cache(Family::StopTaskRequests, spec_decoder(), resync),
        targets: rt.cache(Family::TargetGroupStatus, status_decoder(), resync),
        clusters: rt.cache(Family::Clusters, spec_decoder(), resync),
    };
    let tls = match (
        &args.agent_tls_cert,
        &args.agent_tls_key,
        &args.agent_tls_ca,
    ) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    };
    let grace = args
        .node_loss_grace
        .map_or_else(|| args.common.election_ttl(), Into::into);
    let keys = rt.store.keys().clone();
    let ctx = Arc::new(Ctx {
        exec: Executor {
            store: rt.store.clone(),
            keys: keys.clone(),
            agents: Agents::new(tls),
            caches: caches.clone(),
            drain_timeout: Duration::from(args.drain_timeout).as_secs_f64(),
            created: std::sync::atomic::AtomicI64::new(0),
        },
        grace,
        missing_since: Mutex::new(HashMap::new()),
        events: Events::new(rt.store.clone()),
        retention: args.task_retention.into(),
    });

    let service_of = |keys: &capstan_core::Keys, k: &str| -> Vec<Key> {
        keys.parse(k)
            .map(|p| {
                Key::Service(ServiceKey {
                    cluster: p.parts[0].clone(),
                    service: p.parts[1].clone(),
                })
            })
            .into_iter()
            .collect()
    };
    let mut config = ControllerConfig::new("scheduler");
    config.concurrency = args.concurrency;
    config.settle = args.settle.into();
    let k1 = keys.clone();
    let k2 = keys.clone();
    let k3 = keys.clone();
    let tasks = caches.tasks.clone();
    let all = caches.clone();
    let k4 = keys.clone();
    let k5 = keys.clone();
    let k6 = keys.clone();
    let k7 = keys.clone();
    let deps7 = caches.deployments.clone();
    let controller = Controller::new(config)
        .watches(&caches.deployments, move |k| service_of(&k1, k))
        .watches(&caches.services, move |k| service_of(&k2, k))
        .watches(&caches.tasks, move |k| {
            let Some(p) = k3.parse(k) else { return vec![] };
            let Some(t) = tasks.get(k) else { return vec![] };
            let Ok(t) = &t.value else { return vec![] };
            if snapshot::waiting_one_off(t) {
                return vec![Key::Waiting {
                    cluster: p.parts[0].clone(),
                }];
            }
            t.group
                .as_deref()
                .and_then(|g| g.strip_prefix("service:"))
                .map(|service| {
                    Key::Service(ServiceKey {
                        cluster: p.parts[0].clone(),
                        service: service.to_string(),
                    })
                })
                .into_iter()
                .collect()
        })
        .watches(&caches.instances, move |k| {
            // An instance came, went or changed: every service of its cluster may move.
            let Some(p) = k4.parse(k) else { return vec![] };
            let cluster = p.parts[0].clone();
            let mut out: Vec<Key> = all
                .deployments
                .list_prefix(&k4.list(Family::Deployments, &[&cluster]))
                .iter()
                .filter_map(|e| k4.parse(&e.key))
                .map(|p| {
                    Key::Service(ServiceKey {
                        cluster: cluster.clone(),
                        service: p.parts[1].clone(),
                    })
                })
                .collect();
            out.dedup();
            out.push(Key::Waiting { cluster });
            out
        })
        .watches(&caches.runtask, move |k| {
            k5.parse(k)
                .map(|p| Key::RunTask {
                    cluster: p.parts[0].clone(),
                    id: p.parts[1].clone(),
                })
                .into_iter()
                .collect()
        })
        .watches(&caches.targets, move |k| {
            // A target drained: services whose deployments use that group may stop tasks now.
            let Some(tg) = k7.parse(k).and_then(|p| p.parts.first().cloned()) else {
                return vec![];
            };
            let mut out: Vec<Key> = deps7
                .list()
                .iter()
                .filter(|e| {
                    e.value.as_ref().is_ok_and(|d| {
                        d.load_balancers.iter().any(|lb| {
                            lb.target_group_arn
                                .as_deref()
                                .map(capstan_core::service::lb_object_name)
                                == Some(tg.as_str())
                        })
                    })
                })
                .filter_map(|e| k7.parse(&e.key))
                .map(|p| {
                    Key::Service(ServiceKey {
                        cluster: p.parts[0].clone(),
                        service: p.parts[1].clone(),
                    })
                })
                .collect();
            out.dedup();
            out
        })
        .watches(&caches.stoptask, move |k| {
            k6.parse(k)
                .map(|p| Key::StopTask {
                    cluster: p.parts[0].clone(),
                    task: p.parts[1].clone(),
                })
                .into_iter()
                .collect()
        });
    tokio::spawn(manage_agents(
        ctx.clone(),
        rt.leadership.clone(),
        rt.cancel.clone(),
    ));
    rt.serve(controller, ctx, |k, c, x| dispatch(k, c, x).boxed())
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::task_list;

    #[test]
    fn events_list_the_first_ten_tasks_and_count_the_rest() {
        let few = ["a", "b"];
        assert_eq!(task_list(few.iter().copied()), "(task a) (task b)");
        let many: Vec<String> = (0..25).map(|n| format!("t{n}")).collect();
        let text = task_list(many.iter().map(String::as_str));
        assert!(text.starts_with("(task t0) (task t1)"), "{text}");
        assert!(
            text.contains("(task t9)") && !text.contains("(task t10)"),
            "{text}"
        );
        assert!(text.ends_with(" and 15 more"), "{text}");
    }
}

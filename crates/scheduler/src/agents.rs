//! What only the scheduler has: it follows every agent's task stream while it leads. Reports
//! from all agents are recorded by one writer in large fenced transactions; tasks an agent runs
//! that it must not are stopped; tasks recorded PENDING that an agent's snapshot does not know
//! (a leader died between the write and StartTask) are started again with the same request.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use capstan_agent_client::{start_request, stop_request};
use capstan_core::keys::{ClusterKey, Family};
use capstan_core::task::{StopCode, Task, TaskStatus};
use capstan_plan::tasks;
use capstan_proto::agent::v1 as pb;
use capstan_store::{Claim, StoreError, Write};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::execute::{self, Executor, TXN_OPS};
use crate::reconcile::Ctx;
use crate::snapshot;

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
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let mut stream = match ctx.exec.agents.watch(&endpoint).await {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                failures += 1;
                // A moment's failure is normal (an agent restarting); one that lasts is not.
                if failures == 10 {
                    tracing::warn!(%endpoint, error = %e, "WatchTasks keeps failing; still retrying");
                } else {
                    tracing::debug!(%endpoint, error = %e, "WatchTasks failed; retrying");
                }
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff) => continue }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.next() => m,
            };
            let Some(Ok(ev)) = msg else { break };
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
                match stream.next().now_or_never() {
                    Some(Some(Ok(ev))) => push(ev, &mut snapshot, &mut states),
                    _ => break,
                }
            }
            // One writer records every agent's reports; wait for ours (keeps this agent's order).
            let (done, applied) = oneshot::channel();
            let sent = reports
                .send(Reports {
                    cluster: cluster.clone(),
                    instance: instance.clone(),
                    states: states.clone(),
                    done,
                })
                .await;
            if sent.is_err() {
                tracing::warn!(%endpoint, "the report writer is gone: this agent is no longer followed");
                return;
            }
            let intruders = tokio::select! {
                _ = stop.cancelled() => return,
                r = applied => match r { Ok(ids) => ids, Err(_) => return },
            };
            // A task id never runs twice: tasks the scheduler did not place there, or recorded
            // STOPPED (their host was declared lost), are stopped.
            for id in intruders {
                let req = stop_request(
                    &id,
                    "Task is not expected on this container instance",
                    StopCode::ServiceSchedulerInitiated,
                    claim.fencing_token(),
                );
                if let Err(e) = ctx.exec.agents.stop(&endpoint, req).await {
                    tracing::warn!(task = %id, error = %e, "cannot stop an unexpected task");
                }
            }
            if snapshot {
                let known: HashSet<String> = states.iter().map(|s| s.task_id.clone()).collect();
                let caches = &ctx.exec.caches;
                let keys = &ctx.exec.keys;
                let recorded = caches
                    .tasks
                    .list_prefix(&keys.list(Family::Tasks, &[&cluster]));
                let lost = tasks::unacknowledged(
                    recorded.iter().filter_map(|e| e.value.as_ref().ok()),
                    &instance,
                    &known,
                );
                for t in lost {
                    let td = snapshot::task_definition(caches, keys, &t.task_definition_arn);
                    let Some(td) = td else { continue };
                    tracing::info!(task = %t.id(), %instance, "re-sending StartTask the agent never got");
                    // The same request as at launch: a RunTask's overrides go again too.
                    let td_json = serde_json::to_string(&td).unwrap_or_default();
                    let req = start_request(t, td_json, claim.fencing_token());
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
    /// The container instance whose agent sent them: only its own tasks are recorded.
    instance: String,
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
        // One batch per cluster, whatever agent sent it (few large transactions); each report
        // keeps the instance it came from.
        let mut by_cluster: BTreeMap<&str, Vec<(String, pb::TaskState)>> = BTreeMap::new();
        for r in &round {
            by_cluster
                .entry(r.cluster.as_str())
                .or_default()
                .extend(r.states.iter().map(|s| (r.instance.clone(), s.clone())));
        }
        let mut delay = Duration::from_millis(100);
        let intruders: HashSet<(String, String)> = loop {
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
                Some(StoreError::NotLeader { .. }) => {
                    tracing::warn!(
                        reports = n,
                        "not the leader any more: reports are left to the next one"
                    );
                    return;
                }
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
                .filter(|s| intruders.contains(&(r.instance.clone(), s.task_id.clone())))
                .map(|s| s.task_id.clone())
                .collect();
            let _ = r.done.send(mine);
        }
    }
}

/// Runs one watcher per registered instance for one term of leadership (see
/// `capstan_runtime::spawn_while_leading`), until `term` is cancelled.
pub async fn follow_agents(ctx: Arc<Ctx>, claim: Arc<Claim>, term: CancellationToken) {
    let (reports, rx) = mpsc::channel(REPORT_QUEUE);
    tokio::spawn(write_reports(ctx.clone(), claim.clone(), rx, term.clone()));
    let mut watchers: BTreeMap<String, (String, CancellationToken)> = BTreeMap::new();
    let keys = ctx.exec.keys.clone();
    loop {
        let mut seen = HashSet::new();
        for e in ctx.exec.caches.instances.list() {
            let Ok(ci) = &e.value else { continue };
            let Some(ClusterKey {
                cluster,
                id: instance,
            }) = keys.cluster_key(Family::ContainerInstances, &e.key)
            else {
                continue;
            };
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
            _ = term.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

impl Executor {
    /// Applies a batch of agent reports, each with the instance whose agent sent it: one fenced
    /// transaction per chunk of 100 for the tasks the cache knows (each compared on its mod
    /// revision), the per-task path for the rest and on any conflict. A report about a task
    /// placed on another instance is never recorded (an agent speaks only for its own tasks).
    /// Returns (instance, task id) for each task an agent runs that it must not.
    pub async fn apply_reports(
        &self,
        claim: &Claim,
        cluster: &str,
        states: &[(String, pb::TaskState)],
    ) -> Result<Vec<(String, String)>, StoreError> {
        // A report can outrun the watch event of its task's own record: wait for the cache to
        // show what this scheduler created, rather than take the slow per-task path.
        if !self.sees_own_tasks() {
            let created = self.created.load(Ordering::SeqCst);
            let wait = self.caches.tasks.wait_revision(created);
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
        // Reports are cumulative: the last one per task and sender is enough.
        let mut latest: BTreeMap<(&str, &str), &pb::TaskState> = BTreeMap::new();
        for (instance, s) in states {
            latest.insert((s.task_id.as_str(), instance.as_str()), s);
        }
        let mut slow: Vec<(&str, &pb::TaskState)> = Vec::new();
        let mut batch: Vec<(&str, &pb::TaskState, String, Task, i64)> = Vec::new();
        for (&(_, instance), &s) in &latest {
            let key = self.keys.task(cluster, &s.task_id);
            let Some(entry) = self.caches.tasks.get(&key) else {
                slow.push((instance, s));
                continue;
            };
            let Ok(current) = &entry.value else {
                slow.push((instance, s));
                continue;
            };
            if current.last_status == TaskStatus::Stopped || current.instance_id() != Some(instance)
            {
                slow.push((instance, s));
                continue;
            }
            let mut reported = current.clone();
            if s.apply_to(&mut reported).is_err() {
                continue;
            }
            let Some(mut next) = tasks::merge_report(current, reported) else {
                continue;
            };
            next.version += 1;
            batch.push((instance, s, key, next, entry.mod_revision));
        }
        for chunk in batch.chunks(TXN_OPS) {
            let mut w = Write::new();
            for (_, _, key, next, rev) in chunk {
                w = w.put_json(key, next).if_unchanged(key, *rev);
            }
            match self.store.commit(w, Some(claim)).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => {
                    slow.extend(chunk.iter().map(|(i, s, _, _, _)| (*i, *s)))
                }
                Err(e) => return Err(e),
            }
        }
        let mut intruders = Vec::new();
        for (instance, s) in slow {
            if let Some(id) = self.apply_report(claim, cluster, instance, s).await? {
                intruders.push((instance.to_string(), id));
            }
        }
        Ok(intruders)
    }

    /// Applies one report from `instance`'s agent to its task record. Returns the task id if
    /// the agent runs it and must not (unknown to the scheduler, recorded STOPPED, or placed on
    /// another instance: a task id never runs twice, and no agent rewrites another's task).
    pub async fn apply_report(
        &self,
        claim: &Claim,
        cluster: &str,
        instance: &str,
        state: &pb::TaskState,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.task(cluster, &state.task_id);
        let agent_status =
            capstan_proto::convert::task_status("last_status", state.last_status).ok();
        // The cache may not have seen a task this scheduler has just written: ask etcd itself.
        let cached = self.caches.tasks.get(&key);
        let read = match cached.as_ref().map(|e| &e.value) {
            Some(Ok(t)) => Ok(Some(t.clone())),
            Some(Err(reason)) => Err(reason.clone()),
            None => match self.store.get_json::<Task>(&key).await {
                Ok(v) => Ok(v.map(|v| v.value)),
                Err(StoreError::Decode { message, .. }) => Err(message),
                Err(e) => return Err(e),
            },
        };
        let current = match read {
            Ok(t) => t,
            Err(reason) => {
                // Someone wrote a record that does not decode: this report cannot be applied,
                // and it must not hold up the others in its batch (retried, it would fail the
                // same way forever). The task is neither recorded nor stopped.
                tracing::warn!(task = %state.task_id, %key, %reason,
                    "skipped a report: its task record does not decode");
                metrics::counter!("capstan_scheduler_undecodable_records_total").increment(1);
                return Ok(None);
            }
        };
        if current
            .as_ref()
            .is_none_or(|t| t.last_status == TaskStatus::Stopped)
        {
            // Not a task of ours, its record removed, or its host declared lost.
            let reported_stopped = agent_status == Some(TaskStatus::Stopped);
            let refuse = tasks::must_not_run(current.as_ref(), reported_stopped);
            return Ok(refuse.then(|| state.task_id.clone()));
        }
        if current.as_ref().and_then(Task::instance_id) != Some(instance) {
            tracing::warn!(task = %state.task_id, %instance, placed = ?current.as_ref().and_then(Task::instance_id),
                "ignored a report about a task placed on another instance");
            metrics::counter!("capstan_scheduler_foreign_reports_total").increment(1);
            let reported_stopped = agent_status == Some(TaskStatus::Stopped);
            return Ok((!reported_stopped).then(|| state.task_id.clone()));
        }
        self.update_task(claim, cluster, &state.task_id, |t| {
            let mut reported = t.clone();
            if state.apply_to(&mut reported).is_err() {
                return false;
            }
            match tasks::merge_report(t, reported) {
                Some(next) => {
                    *t = next;
                    true
                }
                None => false,
            }
        })
        .await?;
        Ok(None)
    }
}

//! The scheduler's IO: fenced writes of task records and the agent calls that go with them. It
//! decides nothing: records come from `capstan_plan::tasks`, stop steps from the snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use capstan_agent_client::{AgentApi, start_request, stop_request};
use capstan_core::Keys;
use capstan_core::TaskDefinition;
use capstan_core::keys::Family;
use capstan_core::task::{StopCode, Task};
use capstan_core::taskdef::TaskDefinitionRef;
use capstan_plan::tasks::{self, StopStep};
use capstan_store::{Claim, Store, StoreError, Write};
use futures::StreamExt;

use crate::snapshot::Caches;

/// Most operations in one etcd transaction (etcd's default `--max-txn-ops` is 128).
pub const TXN_OPS: usize = 100;
/// Most StartTask calls in flight from one launch.
pub const START_CONCURRENCY: usize = 4096;

/// A task to write and start: record, task definition, agent endpoint, and the record's mod
/// revision when it exists already (a placed PROVISIONING task).
pub type Launch = (Task, Arc<TaskDefinition>, String, Option<i64>);

/// The scheduler's writer and caller.
pub struct Executor {
    /// The store.
    pub store: Store,
    /// Key layout.
    pub keys: Keys,
    /// Agent clients.
    pub agents: Arc<dyn AgentApi>,
    /// Caches (to read current records).
    pub caches: Caches,
    /// Revision of the newest task records this scheduler created: plans wait for the task cache
    /// to reach it, so they never count without tasks just written.
    pub created: AtomicI64,
}

impl Executor {
    /// The task definition `reference` names, read from etcd itself (the cache may not have
    /// seen one registered a moment ago).
    pub async fn read_task_definition(
        &self,
        reference: &str,
    ) -> Result<Option<TaskDefinition>, StoreError> {
        let Ok(r) = TaskDefinitionRef::parse(reference) else {
            return Ok(None);
        };
        let decode = |bytes: &[u8]| capstan_core::accept::<TaskDefinition>(bytes).ok();
        Ok(match r.revision {
            Some(rev) => self
                .store
                .get(&self.keys.task_definition(&r.family, rev))
                .await?
                .and_then(|kv| decode(&kv.value).map(|a| a.value)),
            None => {
                let prefix = self.keys.list(Family::TaskDefinitions, &[&r.family]);
                let all: Vec<TaskDefinition> = self
                    .store
                    .list(&prefix)
                    .await?
                    .kvs
                    .iter()
                    .filter_map(|kv| decode(&kv.value).map(|a| a.value))
                    .collect();
                crate::requests::latest_active(all.iter()).cloned()
            }
        })
    }

    /// Writes task records (fenced, in batches) and asks their agents to start them: new records
    /// (`None`) are created, placed PROVISIONING ones (`Some(mod_revision)`) updated if unchanged.
    /// Tasks an agent refuses are recorded STOPPED with the reason, to be replaced.
    pub async fn launch(
        &self,
        claim: &Claim,
        tasks: Vec<Launch>,
        with: Write,
        now: f64,
    ) -> Result<Vec<String>, StoreError> {
        // One agent's tasks together: its StartTask calls then share a chunk and go out at once,
        // so HTTP/2 carries them (and the agent its reports) in a few writes instead of one each.
        // Grouped rather than sorted: each (large) record moves once.
        let mut by_agent: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for t in tasks {
            by_agent.entry(t.2.clone()).or_default().push(t);
        }
        let tasks: Vec<_> = by_agent.into_values().flatten().collect();
        let mut with = Some(with);
        if tasks.is_empty()
            && let Some(w) = with.take()
            && !w.is_empty()
        {
            self.store.commit(w, Some(claim)).await?;
        }
        // Records are written a chunk per transaction; each chunk's StartTask calls go out as
        // soon as it commits, while the next chunk is being written.
        let (ready, committed) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let mut last_revision = 0;
        let writer = async {
            for (i, chunk) in tasks.chunks(TXN_OPS).enumerate() {
                // The extra writes (consuming a request) commit with the first batch.
                let mut w = with.take().unwrap_or_default();
                for (t, _, _, expected) in chunk {
                    let key = self.task_key(t);
                    w = match expected {
                        None => w.put_json(&key, t).if_absent(&key),
                        Some(rev) => w.put_json(&key, t).if_unchanged(&key, *rev),
                    };
                }
                let probe = chunk.first().map(|(t, _, _, _)| t);
                last_revision = self.commit_records(claim, w, probe).await?;
                // Before any StartTask of the chunk: its agents' reports wait for these records.
                self.created.fetch_max(last_revision, Ordering::SeqCst);
                let _ = ready.send(i);
            }
            drop(ready);
            Ok::<(), StoreError>(())
        };
        let token = claim.fencing_token();
        let n = tasks.len();
        // Most launches share a task definition: serialize each once.
        let mut td_json: HashMap<&str, String> = HashMap::new();
        for (t, td, _, _) in &tasks {
            td_json
                .entry(t.task_definition_arn.as_str())
                .or_insert_with(|| serde_json::to_string(td.as_ref()).unwrap_or_default());
        }
        let td_json = &td_json;
        let request = |j: usize| {
            let (t, _, _, _) = &tasks[j];
            let td = td_json
                .get(t.task_definition_arn.as_str())
                .cloned()
                .unwrap_or_default();
            start_request(t, td, token)
        };
        let request = &request;
        let all = &tasks;
        // Each committed chunk's tasks go out as one StartTasks call per agent.
        let caller = futures::stream::unfold(committed, |mut rx| async move {
            rx.recv().await.map(|i| (i, rx))
        })
        .flat_map(|i| {
            let range = i * TXN_OPS..((i + 1) * TXN_OPS).min(n);
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for j in range {
                match groups.last_mut() {
                    Some(g) if g.first().is_some_and(|&f| all[f].2 == all[j].2) => g.push(j),
                    _ => groups.push(vec![j]),
                }
            }
            futures::stream::iter(groups)
        })
        .map(|group| async move {
            let endpoint = &all[group[0]].2;
            let reqs = group.iter().map(|&j| request(j)).collect();
            let results = self.agents.start_many(endpoint, reqs).await;
            group.into_iter().zip(results).collect::<Vec<_>>()
        })
        .buffer_unordered(START_CONCURRENCY)
        .flat_map(futures::stream::iter)
        .collect::<Vec<_>>();
        let (written, results) = tokio::join!(writer, caller);
        written?;
        self.caught_up(last_revision).await;
        let mut started = Vec::new();
        for (j, r) in results {
            let t = &tasks[j].0;
            match r {
                Ok(_) => started.push(t.id().to_string()),
                Err(e) => {
                    tracing::warn!(task = %t.id(), error = %e, "StartTask failed");
                    let reason = format!("TaskFailedToStart: {e}");
                    self.mark_stopped(
                        claim,
                        t.id(),
                        t.cluster(),
                        StopCode::TaskFailedToStart,
                        &reason,
                        now,
                    )
                    .await?;
                }
            }
        }
        Ok(started)
    }

    /// Writes PROVISIONING task records (fenced, in batches); nothing is started.
    pub async fn provision(&self, claim: &Claim, tasks: &[Task]) -> Result<(), StoreError> {
        let mut last_revision = 0;
        for chunk in tasks.chunks(TXN_OPS) {
            let mut w = Write::new();
            for t in chunk {
                let key = self.task_key(t);
                w = w.put_json(&key, t).if_absent(&key);
            }
            last_revision = self.commit_records(claim, w, chunk.first()).await?;
        }
        self.caught_up(last_revision).await;
        Ok(())
    }

    async fn commit_records(
        &self,
        claim: &Claim,
        w: Write,
        probe: Option<&Task>,
    ) -> Result<i64, StoreError> {
        let probe = probe.map(|t| (self.task_key(t), t));
        commit_task_records(
            &self.store,
            claim,
            w,
            probe.as_ref().map(|(k, t)| (k.as_str(), *t)),
        )
        .await
    }

    /// Waits (a few seconds at most) for the task cache to show task records created at
    /// `revision`: the next plan must count them, or it would place the same tasks again.
    async fn caught_up(&self, revision: i64) {
        if revision > 0 {
            self.created.fetch_max(revision, Ordering::SeqCst);
            let wait = self.caches.tasks.wait_revision(revision);
            if tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .is_err()
            {
                tracing::warn!(revision, "task cache is behind this scheduler's own writes");
            }
        }
    }

    /// Whether the task cache shows every task record this scheduler has created.
    pub fn sees_own_tasks(&self) -> bool {
        self.caches.tasks.revision() >= self.created.load(Ordering::SeqCst)
    }

    fn task_key(&self, t: &Task) -> String {
        self.keys.task(t.cluster(), t.id())
    }

    /// Read-modify-write of one task record, fenced ([`Store::update_json`]); a change bumps
    /// the record's version.
    pub async fn update_task(
        &self,
        claim: &Claim,
        cluster: &str,
        task_id: &str,
        mut f: impl FnMut(&mut Task) -> bool,
    ) -> Result<Option<Task>, StoreError> {
        let key = self.keys.task(cluster, task_id);
        self.store
            .update_json(&key, Some(claim), |t: &mut Task| {
                let changed = f(t);
                if changed {
                    t.version += 1;
                }
                changed
            })
            .await
    }

    /// Records a task STOPPED without asking an agent (it never ran, or its host is gone).
    pub async fn mark_stopped(
        &self,
        claim: &Claim,
        task_id: &str,
        cluster: &str,
        code: StopCode,
        reason: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        self.update_task(claim, cluster, task_id, |t| {
            tasks::mark_stopped(t, code, reason, now)
        })
        .await?;
        Ok(())
    }

    /// Begins a task's stop (desired STOPPED, DEACTIVATING). Returns the record when it changed
    /// (its stop step is then due), `None` when it was stopping already or is gone.
    pub async fn begin_stop(
        &self,
        claim: &Claim,
        cluster: &str,
        task_id: &str,
        reason: &str,
        code: StopCode,
        now: f64,
    ) -> Result<Option<Task>, StoreError> {
        let mut changed = false;
        let t = self
            .update_task(claim, cluster, task_id, |t| {
                changed = tasks::begin_stop(t, code, reason, now);
                changed
            })
            .await?;
        Ok(t.filter(|_| changed))
    }

    /// Carries out one step of a pending stop: StopTask on the agent (idempotent; a failure is
    /// logged and the step retried by a later reconcile), or the STOPPED record.
    pub async fn stop_step(
        &self,
        claim: &Claim,
        t: &Task,
        step: &StopStep,
        now: f64,
    ) -> Result<(), StoreError> {
        match step {
            StopStep::Wait(_) | StopStep::Nothing => Ok(()),
            StopStep::RecordStopped => {
                let reason = t.stopped_reason.clone().unwrap_or_default();
                let code = StopCode::ServiceSchedulerInitiated;
                self.mark_stopped(claim, t.id(), t.cluster(), code, &reason, now)
                    .await
            }
            StopStep::Call(endpoint) => {
                let req = stop_request(
                    t.id(),
                    t.stopped_reason.as_deref().unwrap_or_default(),
                    t.stop_code.unwrap_or(StopCode::ServiceSchedulerInitiated),
                    claim.fencing_token(),
                );
                if let Err(e) = self.agents.stop(endpoint, req).await {
                    tracing::warn!(task = %t.id(), error = %e, "StopTask failed; will retry");
                }
                Ok(())
            }
        }
    }
}

/// Commits a chunk of task records, `probe` (key, record) being one of them. The store replays a
/// commit that timed out, and the replay of one that did land fails its compares (`if_absent`, the
/// request it consumes): a conflict whose probe key holds exactly what was written is that case,
/// and counts as committed — otherwise the tasks would be recorded but never started.
pub async fn commit_task_records(
    store: &Store,
    claim: &Claim,
    w: Write,
    probe: Option<(&str, &Task)>,
) -> Result<i64, StoreError> {
    match store.commit(w, Some(claim)).await {
        Err(StoreError::Conflict { keys }) => {
            if let Some((key, t)) = probe
                && let Some(found) = store.get(key).await?
                && serde_json::to_vec(t).is_ok_and(|written| written == found.value)
            {
                return Ok(found.mod_revision);
            }
            Err(StoreError::Conflict { keys })
        }
        other => other,
    }
}

//! The scheduler's IO: fenced writes of task records, agent calls, and the agents' task streams.
//! It decides nothing; the plan does.

use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use capstan_core::Keys;
use capstan_core::TaskDefinition;
use capstan_core::instance::ContainerInstance;
use capstan_core::task::{Container, DesiredStatus, StopCode, Task, TaskStatus};
use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_client::AgentClient;
use capstan_proto::tls::TlsFiles;
use capstan_store::{Claim, Store, StoreError, Write};
use tonic::transport::{Channel, Endpoint};

use crate::snapshot::{Caches, ServiceKey, last_segment};

/// Timeout of one unary agent call.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most operations in one etcd transaction (etcd's default `--max-txn-ops` is 128).
pub const TXN_OPS: usize = 100;
/// Most StartTask calls in flight from one launch.
pub const START_CONCURRENCY: usize = 4096;

pub use capstan_runtime::events::now;

/// Why an agent call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentCallError {
    /// The endpoint is malformed or TLS files are unreadable.
    #[error("cannot reach agent {endpoint}: {message}")]
    Connect {
        /// Endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The agent answered with an error.
    #[error("agent {endpoint}: {status}")]
    Status {
        /// Endpoint.
        endpoint: String,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The agent did not answer in time.
    #[error("agent {endpoint} did not answer within {AGENT_CALL_TIMEOUT:?}")]
    Timeout {
        /// Endpoint.
        endpoint: String,
    },
}

/// gRPC clients of the agents, one channel per endpoint.
pub struct Agents {
    clients: Mutex<HashMap<String, AgentClient<Channel>>>,
    tls: Option<TlsFiles>,
    /// Agents that answered StartTasks with UNIMPLEMENTED.
    single_only: Mutex<HashSet<String>>,
}

impl Agents {
    /// A pool; with `tls`, calls use mutual TLS.
    pub fn new(tls: Option<TlsFiles>) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            tls,
            single_only: Mutex::new(HashSet::new()),
        }
    }

    /// The client for `endpoint` (connected lazily).
    pub fn client(&self, endpoint: &str) -> Result<AgentClient<Channel>, AgentCallError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        let err = |m: String| AgentCallError::Connect {
            endpoint: endpoint.to_string(),
            message: m,
        };
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.client().map_err(|e| err(e.to_string()))?)
                .map_err(|e| err(e.to_string()))?;
        }
        let client = AgentClient::new(ep.connect_lazy());
        clients.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    /// Starts a task on the agent at `endpoint`.
    pub async fn start(
        &self,
        endpoint: &str,
        req: pb::StartTaskRequest,
    ) -> Result<pb::TaskState, AgentCallError> {
        let mut c = self.client(endpoint)?;
        timed(endpoint, c.start_task(req))
            .await
            .map(|r| r.task.unwrap_or_default())
    }

    /// Starts several tasks on the agent at `endpoint` in one StartTasks call (StartTask per task
    /// with an agent that does not have it). One result per request, in order.
    pub async fn start_many(
        &self,
        endpoint: &str,
        reqs: Vec<pb::StartTaskRequest>,
    ) -> Vec<Result<pb::TaskState, AgentCallError>> {
        let batch = reqs.len() > 1
            && !self
                .single_only
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(endpoint);
        if batch {
            let n = reqs.len();
            let call = async {
                let mut c = self.client(endpoint)?;
                let req = pb::StartTasksRequest {
                    tasks: reqs.clone(),
                };
                timed(endpoint, c.start_tasks(req)).await.map(|r| r.results)
            };
            match call.await {
                Ok(results) if results.len() == n => {
                    return results
                        .into_iter()
                        .map(|r| match r.task {
                            Some(t) if r.code == 0 => Ok(t),
                            _ => Err(AgentCallError::Status {
                                endpoint: endpoint.into(),
                                status: tonic::Status::new(r.code.into(), r.message),
                            }),
                        })
                        .collect();
                }
                Ok(results) => {
                    let status = tonic::Status::internal(format!(
                        "StartTasks answered {} results for {n} tasks",
                        results.len()
                    ));
                    let e = AgentCallError::Status {
                        endpoint: endpoint.into(),
                        status,
                    };
                    return vec![Err(e); n];
                }
                Err(AgentCallError::Status { status, .. })
                    if status.code() == tonic::Code::Unimplemented =>
                {
                    // An agent from before StartTasks: one call per task from now on.
                    self.single_only
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(endpoint.to_string());
                }
                Err(e) => return vec![Err(e); n],
            }
        }
        futures::future::join_all(reqs.into_iter().map(|r| self.start(endpoint, r))).await
    }

    /// Stops a task on the agent at `endpoint`.
    pub async fn stop(
        &self,
        endpoint: &str,
        req: pb::StopTaskRequest,
    ) -> Result<(), AgentCallError> {
        let mut c = self.client(endpoint)?;
        match timed(endpoint, c.stop_task(req)).await {
            // Already gone: what the stop wanted.
            Err(AgentCallError::Status { status, .. })
                if status.code() == tonic::Code::NotFound =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

/// One agent call under [`AGENT_CALL_TIMEOUT`], its failures as [`AgentCallError`].
async fn timed<T>(
    endpoint: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, AgentCallError> {
    match tokio::time::timeout(AGENT_CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(AgentCallError::Status {
            endpoint: endpoint.into(),
            status,
        }),
        Err(_) => Err(AgentCallError::Timeout {
            endpoint: endpoint.into(),
        }),
    }
}

/// A task to write and start: record, task definition, agent endpoint, and the record's mod
/// revision when it exists already (a placed PROVISIONING task).
pub type Launch = (Task, std::sync::Arc<TaskDefinition>, String, Option<i64>);

/// The scheduler's writer and caller.
pub struct Executor {
    /// The store.
    pub store: Store,
    /// Key layout.
    pub keys: Keys,
    /// Agent clients.
    pub agents: Agents,
    /// Caches (to read current records).
    pub caches: Caches,
    /// Longest wait for the registrar's drained mark before StopTask, seconds.
    pub drain_timeout: f64,
    /// Revision of the newest task records this scheduler created: plans wait for the task cache
    /// to reach it, so they never count without tasks just written.
    pub created: std::sync::atomic::AtomicI64,
}

fn arn(kind: &str, cluster: &str, id: &str) -> String {
    format!("arn:capstan:ecs:local:000000000000:{kind}/{cluster}/{id}")
}

/// A new task record for a deployment's task placed on `instance`.
pub fn new_task(
    key: &ServiceKey,
    deployment: &str,
    td: &TaskDefinition,
    instance: &ContainerInstance,
    instance_id: &str,
) -> Task {
    new_standalone_task(
        &key.cluster,
        &key.group(),
        Some(deployment.to_string()),
        td,
        instance,
        instance_id,
    )
}

/// The containers of a new task of `td`, all in `status`.
fn containers(td: &TaskDefinition, status: TaskStatus) -> Vec<Container> {
    td.container_definitions
        .iter()
        .map(|c| Container {
            name: c.name.clone(),
            image: c.image.clone(),
            last_status: status,
            ..Default::default()
        })
        .collect()
}

/// A new task record of a capacity-provider deployment whose provider has no room yet: it
/// waits in PROVISIONING, on no instance, until the scaler adds capacity.
pub fn new_provisioning_task(
    key: &ServiceKey,
    deployment: &str,
    td: &TaskDefinition,
    provider: &str,
) -> Task {
    new_waiting_task(
        &key.cluster,
        &key.group(),
        Some(deployment.to_string()),
        td,
        provider,
    )
}

/// A new task record in task group `group` waiting in PROVISIONING for capacity `provider`.
pub fn new_waiting_task(
    cluster: &str,
    group: &str,
    started_by: Option<String>,
    td: &TaskDefinition,
    provider: &str,
) -> Task {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Task {
        task_arn: arn("task", cluster, &id),
        cluster_arn: format!("arn:capstan:ecs:local:000000000000:cluster/{cluster}"),
        task_definition_arn: td.family_revision(),
        last_status: TaskStatus::Provisioning,
        desired_status: DesiredStatus::Running,
        cpu: Some(td.reserved_cpu().to_string()),
        memory: Some(td.reserved_memory().to_string()),
        containers: containers(td, TaskStatus::Provisioning),
        started_by,
        group: Some(group.to_string()),
        version: 1,
        capacity_provider_name: Some(provider.to_string()),
        created_at: Some(now()),
        ..Default::default()
    }
}

/// A PROVISIONING task placed on `instance`: PENDING there, to be started.
pub fn placed_task(t: &Task, instance: &ContainerInstance, instance_id: &str) -> Task {
    let mut t = t.clone();
    t.container_instance_arn = Some(instance_id.to_string());
    t.last_status = TaskStatus::Pending;
    for c in &mut t.containers {
        c.last_status = TaskStatus::Pending;
    }
    t.availability_zone = instance
        .attribute("ecs.availability-zone")
        .map(str::to_string);
    t.version += 1;
    t
}

/// A new task record placed on `instance`, in task group `group`.
pub fn new_standalone_task(
    cluster: &str,
    group: &str,
    started_by: Option<String>,
    td: &TaskDefinition,
    instance: &ContainerInstance,
    instance_id: &str,
) -> Task {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Task {
        task_arn: arn("task", cluster, &id),
        cluster_arn: format!("arn:capstan:ecs:local:000000000000:cluster/{cluster}"),
        task_definition_arn: td.family_revision(),
        container_instance_arn: Some(instance_id.to_string()),
        last_status: TaskStatus::Pending,
        desired_status: DesiredStatus::Running,
        cpu: Some(td.reserved_cpu().to_string()),
        memory: Some(td.reserved_memory().to_string()),
        containers: containers(td, TaskStatus::Pending),
        started_by,
        group: Some(group.to_string()),
        version: 1,
        availability_zone: instance
            .attribute("ecs.availability-zone")
            .map(str::to_string),
        capacity_provider_name: instance.capacity_provider_name.clone().or_else(|| {
            instance
                .attribute(capstan_plan::scheduling::PROVIDER_ATTRIBUTE)
                .map(str::to_string)
        }),
        created_at: Some(now()),
        ..Default::default()
    }
}

impl Executor {
    /// Writes task records (fenced, in batches) and asks their agents to start them: new records
    /// (`None`) are created, placed PROVISIONING ones (`Some(mod_revision)`) updated if unchanged.
    /// Tasks an agent refuses are recorded STOPPED with the reason, to be replaced.
    pub async fn launch(
        &self,
        claim: &Claim,
        tasks: Vec<Launch>,
        with: Write,
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
                self.created
                    .fetch_max(last_revision, std::sync::atomic::Ordering::SeqCst);
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
            pb::StartTaskRequest {
                task_id: t.id().to_string(),
                cluster: last_segment(&t.cluster_arn).to_string(),
                task_definition_arn: t.task_definition_arn.clone(),
                task_definition_json: td_json
                    .get(t.task_definition_arn.as_str())
                    .cloned()
                    .unwrap_or_default(),
                overrides_json: t
                    .overrides
                    .as_ref()
                    .and_then(|o| serde_json::to_string(o).ok())
                    .unwrap_or_default(),
                fencing_token: token,
            }
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
                        last_segment(&t.cluster_arn),
                        StopCode::TaskFailedToStart,
                        &reason,
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
            self.created
                .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
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
        self.caches.tasks.revision() >= self.created.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn task_key(&self, t: &Task) -> String {
        self.keys.task(last_segment(&t.cluster_arn), t.id())
    }

    /// Read-modify-write of one task record, fenced; retried on conflicts with fresh reads.
    pub async fn update_task(
        &self,
        claim: &Claim,
        cluster: &str,
        task_id: &str,
        f: impl Fn(&mut Task) -> bool,
    ) -> Result<Option<Task>, StoreError> {
        let key = self.keys.task(cluster, task_id);
        for _ in 0..5 {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(None);
            };
            let mut t: Task = kv.json()?;
            if !f(&mut t) {
                return Ok(Some(t));
            }
            t.version += 1;
            match self
                .store
                .commit(
                    Write::new()
                        .put_json(&key, &t)
                        .if_unchanged(&key, kv.mod_revision),
                    Some(claim),
                )
                .await
            {
                Ok(_) => return Ok(Some(t)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict { keys: key })
    }

    /// Records a task STOPPED without asking an agent (it never ran, or its host is gone).
    pub async fn mark_stopped(
        &self,
        claim: &Claim,
        task_id: &str,
        cluster: &str,
        code: StopCode,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.update_task(claim, cluster, task_id, |t| {
            if t.last_status == TaskStatus::Stopped {
                return false;
            }
            t.desired_status = DesiredStatus::Stopped;
            t.last_status = TaskStatus::Stopped;
            t.stop_code.get_or_insert(code);
            t.stopped_reason.get_or_insert_with(|| reason.to_string());
            t.stopped_at = Some(now());
            for c in &mut t.containers {
                c.last_status = TaskStatus::Stopped;
            }
            true
        })
        .await?;
        Ok(())
    }

    /// Stops a task: desired STOPPED (DEACTIVATING), then StopTask on its agent.
    pub async fn stop(
        &self,
        claim: &Claim,
        cluster: &str,
        task_id: &str,
        reason: &str,
        code: StopCode,
        instances: &BTreeMap<String, ContainerInstance>,
    ) -> Result<(), StoreError> {
        let Some(t) = self
            .update_task(claim, cluster, task_id, |t| {
                if t.desired_status == DesiredStatus::Stopped {
                    return false;
                }
                t.desired_status = DesiredStatus::Stopped;
                if t.last_status >= TaskStatus::Activating
                    && t.last_status < TaskStatus::Deactivating
                {
                    t.last_status = TaskStatus::Deactivating;
                }
                t.stop_code = Some(code);
                t.stopped_reason = Some(reason.to_string());
                t.stopping_at = Some(now());
                true
            })
            .await?
        else {
            return Ok(());
        };
        self.send_stop(claim, &t, instances).await
    }

    /// Asks the task's agent to stop it (idempotent). A task whose instance is unknown and that
    /// never reached RUNNING is recorded STOPPED at once.
    pub async fn send_stop(
        &self,
        claim: &Claim,
        t: &Task,
        instances: &BTreeMap<String, ContainerInstance>,
    ) -> Result<(), StoreError> {
        // A load-balanced task stays DEACTIVATING until its targets have drained.
        if crate::snapshot::drain_until(&self.caches, &self.keys, t, self.drain_timeout, now())
            .is_some()
        {
            return Ok(());
        }
        let cluster = last_segment(&t.cluster_arn).to_string();
        let instance = t.container_instance_arn.as_deref().map(last_segment);
        let Some(ci) = instance.and_then(|i| instances.get(i)) else {
            if t.last_status <= TaskStatus::Pending {
                let reason = t.stopped_reason.clone().unwrap_or_default();
                self.mark_stopped(
                    claim,
                    t.id(),
                    &cluster,
                    StopCode::ServiceSchedulerInitiated,
                    &reason,
                )
                .await?;
            }
            return Ok(());
        };
        let req = pb::StopTaskRequest {
            task_id: t.id().to_string(),
            reason: t.stopped_reason.clone().unwrap_or_default(),
            timeout: None,
            fencing_token: claim.fencing_token(),
            stop_code: pb::StopCode::from(
                t.stop_code.unwrap_or(StopCode::ServiceSchedulerInitiated),
            ) as i32,
        };
        if let Err(e) = self.agents.stop(&ci.agent_endpoint, req).await {
            tracing::warn!(task = %t.id(), error = %e, "StopTask failed; will retry");
        }
        Ok(())
    }

    /// Applies a batch of agent reports: one fenced transaction per chunk of 100 for the tasks the
    /// cache knows (each compared on its mod revision), the per-task path for the rest and on any
    /// conflict. Returns the task ids the agent runs that it must not.
    pub async fn apply_reports(
        &self,
        claim: &Claim,
        cluster: &str,
        states: &[pb::TaskState],
    ) -> Result<Vec<String>, StoreError> {
        // A report can outrun the watch event of its task's own record: wait for the cache to
        // show what this scheduler created, rather than take the slow per-task path.
        if !self.sees_own_tasks() {
            let created = self.created.load(std::sync::atomic::Ordering::SeqCst);
            let wait = self.caches.tasks.wait_revision(created);
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
        // Reports are cumulative: the last one per task is enough.
        let mut latest: BTreeMap<&str, &pb::TaskState> = BTreeMap::new();
        for s in states {
            latest.insert(s.task_id.as_str(), s);
        }
        let mut slow: Vec<&pb::TaskState> = Vec::new();
        let mut batch: Vec<(&pb::TaskState, String, Task, i64)> = Vec::new();
        for s in latest.values() {
            let key = self.keys.task(cluster, &s.task_id);
            let Some(entry) = self.caches.tasks.get(&key) else {
                slow.push(s);
                continue;
            };
            let Ok(current) = &entry.value else {
                slow.push(s);
                continue;
            };
            if current.last_status == TaskStatus::Stopped {
                slow.push(s);
                continue;
            }
            let mut next = current.clone();
            if s.apply_to(&mut next).is_err() {
                continue;
            }
            next.last_status = next.last_status.max(current.last_status);
            if next == *current {
                continue;
            }
            next.version += 1;
            batch.push((s, key, next, entry.mod_revision));
        }
        for chunk in batch.chunks(TXN_OPS) {
            let mut w = Write::new();
            for (_, key, next, rev) in chunk {
                w = w.put_json(key, next).if_unchanged(key, *rev);
            }
            match self.store.commit(w, Some(claim)).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => {
                    slow.extend(chunk.iter().map(|(s, _, _, _)| *s))
                }
                Err(e) => return Err(e),
            }
        }
        let mut intruders = Vec::new();
        for s in slow {
            if let Some(id) = self.apply_report(claim, cluster, s).await? {
                intruders.push(id);
            }
        }
        Ok(intruders)
    }

    /// Applies one agent report to its task record. Returns the task ids the agent runs that it
    /// must not (unknown to the scheduler, or recorded STOPPED).
    pub async fn apply_report(
        &self,
        claim: &Claim,
        cluster: &str,
        state: &pb::TaskState,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys.task(cluster, &state.task_id);
        let agent_status =
            capstan_proto::convert::task_status("last_status", state.last_status).ok();
        // The cache may not have seen a task this scheduler has just written: ask etcd itself.
        let current: Option<Task> = match self
            .caches
            .tasks
            .get(&key)
            .and_then(|e| e.value.as_ref().ok().cloned())
        {
            Some(t) => Some(t),
            None => self.store.get_json::<Task>(&key).await?.map(|v| v.value),
        };
        let Some(current) = current else {
            // Not a task of ours (or its record was removed): it must not run.
            return Ok((agent_status != Some(TaskStatus::Stopped)).then(|| state.task_id.clone()));
        };
        if current.last_status == TaskStatus::Stopped {
            return Ok((agent_status != Some(TaskStatus::Stopped)).then(|| state.task_id.clone()));
        }
        self.update_task(claim, cluster, &state.task_id, |t| {
            let mut next = t.clone();
            if state.apply_to(&mut next).is_err() {
                return false;
            }
            // Never move backwards: DEACTIVATING (ours) outranks RUNNING (the agent's).
            next.last_status = next.last_status.max(t.last_status);
            if next == *t {
                return false;
            }
            *t = next;
            true
        })
        .await?;
        Ok(None)
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

/// Task ids recorded on `instance` in PENDING that the agent's snapshot does not know: their
/// StartTask was lost (a leader died between the write and the call), so it is sent again.
pub fn unacknowledged(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
    instance: &str,
    known: &HashSet<String>,
) -> Vec<Task> {
    caches
        .tasks
        .list_prefix(&keys.list(capstan_core::keys::Family::Tasks, &[cluster]))
        .iter()
        .filter_map(|e| e.value.as_ref().ok())
        .filter(|t| {
            t.container_instance_arn.as_deref().map(last_segment) == Some(instance)
                && t.last_status == TaskStatus::Pending
                && t.desired_status == DesiredStatus::Running
                && !known.contains(t.id())
        })
        .cloned()
        .collect()
}

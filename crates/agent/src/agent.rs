//! The agent's core: the task table, fencing, and one supervisor per task that drives ECS's task
//! state machine (PENDING → ACTIVATING → RUNNING → STOPPING → STOPPED) through a runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::task::{DesiredStatus, HealthStatus, StopCode, TaskStatus, task_health};
use capstan_core::taskdef::{DependencyCondition, HealthCheck};
use capstan_proto::agent::v1 as pb;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::model::{Handle, TaskRecord, now};
use crate::runtime::{
    ContainerOptions, ContainerRuntime, ContainerSpec, ExecRequest, ExecSession, Exit, Mount,
    MountSource, TermSize,
};
use crate::state::StateDir;

/// How long a container waits for its dependencies when the task definition sets no
/// `startTimeout` (ECS agent's `ECS_CONTAINER_START_TIMEOUT`).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(180);
/// ECS's reason for a task whose essential container exited.
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";

/// Why the agent refused a call.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The caller's fencing token is stale: it is not the current leader.
    #[error(
        "fencing token {got} is lower than {highest}, the highest this agent has seen: the caller is no longer the leader"
    )]
    Fenced {
        /// Token of the call.
        got: u64,
        /// Highest token seen.
        highest: u64,
    },
    /// No such task.
    #[error("task {0} is not known to this agent")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The task is not in a state that allows the call.
    #[error("{0}")]
    Precondition(String),
    /// The state dir could not be written.
    #[error("cannot write the agent's state dir: {0}")]
    State(#[from] std::io::Error),
}

impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        match &e {
            AgentError::Fenced { .. } => tonic::Status::failed_precondition(e.to_string()),
            AgentError::NotFound(_) => tonic::Status::not_found(e.to_string()),
            AgentError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
            AgentError::Precondition(_) => tonic::Status::failed_precondition(e.to_string()),
            AgentError::State(_) => tonic::Status::internal(e.to_string()),
        }
    }
}

struct Slot {
    record: TaskRecord,
    stop: watch::Sender<bool>,
}

/// A stop asked for by StopTask.
#[derive(Debug, Clone)]
pub struct StopRequest {
    /// Free-text reason, recorded as stoppedReason.
    pub reason: String,
    /// Stop code; UserInitiated when absent.
    pub code: Option<StopCode>,
    /// SIGTERM → SIGKILL grace; each container's stopTimeout when absent.
    pub timeout: Option<Duration>,
}

/// The agent: its runtime, its tasks and the highest fencing token it has seen.
pub struct Agent {
    runtime: Arc<dyn ContainerRuntime>,
    state: StateDir,
    cluster: String,
    /// Opens the secrets containers ask for.
    secrets: crate::secrets::Secrets,
    tasks: Mutex<HashMap<String, Slot>>,
    updates: broadcast::Sender<pb::TaskState>,
    fencing: Mutex<u64>,
    changed: Notify,
    /// Host directories task volumes may bind-mount.
    host_paths: Vec<std::path::PathBuf>,
}

fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Agent {
    /// An agent over `runtime`, keeping its state in `state`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        state: StateDir,
        cluster: String,
        secrets: crate::secrets::Secrets,
        host_paths: Vec<std::path::PathBuf>,
    ) -> Arc<Self> {
        let (updates, _) = broadcast::channel(4096);
        let fencing = state.fencing_token();
        Arc::new(Self {
            runtime,
            state,
            cluster,
            secrets,
            tasks: Mutex::new(HashMap::new()),
            updates,
            fencing: Mutex::new(fencing),
            changed: Notify::new(),
            host_paths,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.runtime
    }

    /// The cluster this agent serves.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Highest fencing token seen.
    pub fn fencing_token(&self) -> u64 {
        *self
            .fencing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses `token` if lower than the highest seen; records it durably if higher.
    pub fn check_fencing(&self, token: u64) -> Result<(), AgentError> {
        let mut highest = self
            .fencing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if token < *highest {
            return Err(AgentError::Fenced {
                got: token,
                highest: *highest,
            });
        }
        if token > *highest {
            self.state.set_fencing_token(token)?;
            *highest = token;
        }
        Ok(())
    }

    /// Resolves when the task table changes (for the registration's counts).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Every change of any task, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<pb::TaskState> {
        self.updates.subscribe()
    }

    /// Every task's state.
    pub fn list(&self) -> Vec<pb::TaskState> {
        let mut v: Vec<pb::TaskState> = self.lock().values().map(|s| s.record.to_proto()).collect();
        v.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        v
    }

    /// Every task record (for resource accounting).
    pub fn records(&self) -> Vec<TaskRecord> {
        self.lock().values().map(|s| s.record.clone()).collect()
    }

    /// One task's state.
    pub fn get(&self, task_id: &str) -> Option<pb::TaskState> {
        self.lock().get(task_id).map(|s| s.record.to_proto())
    }

    /// Starts a task; for a task id it already has, returns the current state and starts nothing.
    pub fn start_task(
        self: &Arc<Self>,
        req: &pb::StartTaskRequest,
    ) -> Result<pb::TaskState, AgentError> {
        self.check_fencing(req.fencing_token)?;
        if !valid_task_id(&req.task_id) {
            return Err(AgentError::Invalid(format!(
                "task id {:?} must be 1-255 letters, digits, hyphens or underscores",
                req.task_id
            )));
        }
        if let Some(existing) = self.get(&req.task_id) {
            return Ok(existing);
        }
        let td = req
            .task_definition()
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let overrides = req
            .overrides()
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let arn = if req.task_definition_arn.is_empty() {
            td.family_revision()
        } else {
            req.task_definition_arn.clone()
        };
        let cluster = if req.cluster.is_empty() {
            self.cluster.clone()
        } else {
            req.cluster.clone()
        };
        let mut record = TaskRecord::new(req.task_id.clone(), cluster, arn, td, overrides);
        record.enable_execute_command = req.enable_execute_command;
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            let mut tasks = self.lock();
            // Checked again under the lock: two concurrent StartTasks must not both start.
            if let Some(existing) = tasks.get(&req.task_id) {
                return Ok(existing.record.to_proto());
            }
            self.state.save_task(&record)?;
            tasks.insert(
                req.task_id.clone(),
                Slot {
                    record: record.clone(),
                    stop: stop_tx,
                },
            );
        }
        let state = record.to_proto();
        let _ = self.updates.send(state.clone());
        self.changed.notify_waiters();
        tracing::info!(task = %req.task_id, task_definition = %record.task_definition_arn, "task accepted");
        tokio::spawn(self.clone().supervise(req.task_id.clone(), stop_rx));
        Ok(state)
    }

    /// Asks a task to stop; a second call, or a call for a stopped task, changes nothing.
    pub fn stop_task(
        &self,
        task_id: &str,
        stop: StopRequest,
        token: u64,
    ) -> Result<pb::TaskState, AgentError> {
        self.check_fencing(token)?;
        let state = {
            let mut tasks = self.lock();
            let slot = tasks
                .get_mut(task_id)
                .ok_or_else(|| AgentError::NotFound(task_id.to_string()))?;
            if slot.record.desired_status == DesiredStatus::Stopped || slot.record.is_stopped() {
                return Ok(slot.record.to_proto());
            }
            let r = &mut slot.record;
            r.desired_status = DesiredStatus::Stopped;
            r.stop_code = Some(stop.code.unwrap_or(StopCode::UserInitiated));
            r.stopped_reason = Some(if stop.reason.is_empty() {
                "Task stopped by the caller".into()
            } else {
                stop.reason
            });
            r.stop_timeout_secs = stop.timeout.map(|t| t.as_secs());
            r.version += 1;
            self.state.save_task(r)?;
            let _ = slot.stop.send(true);
            r.to_proto()
        };
        let _ = self.updates.send(state.clone());
        Ok(state)
    }

    /// Stops every task not stopped yet and waits, up to `within`, until all are.
    pub async fn stop_all(&self, reason: &str, within: Duration) {
        let token = self.fencing_token();
        for r in self.records().iter().filter(|r| !r.is_stopped()) {
            let stop = StopRequest {
                reason: reason.to_string(),
                code: Some(StopCode::UserInitiated),
                timeout: None,
            };
            if let Err(e) = self.stop_task(&r.task_id, stop, token) {
                tracing::warn!(task = %r.task_id, error = %e, "cannot stop task");
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.records().iter().any(|r| !r.is_stopped()) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("tasks still running after {within:?}; leaving them");
                return;
            }
            // `changed` wakes on every update; the timeout covers one missed between the check
            // and the wait.
            let _ = tokio::time::timeout(Duration::from_millis(200), self.changed()).await;
        }
    }

    /// Applies `f` to a task's record, then persists and publishes it.
    fn update(&self, task_id: &str, f: impl FnOnce(&mut TaskRecord)) -> Option<TaskRecord> {
        let rec = {
            let mut tasks = self.lock();
            let slot = tasks.get_mut(task_id)?;
            f(&mut slot.record);
            slot.record.version += 1;
            slot.record.health_status = task_health(
                slot.record
                    .containers
                    .iter()
                    .filter(|c| c.essential)
                    .map(|c| &c.health_status),
            );
            if let Err(e) = self.state.save_task(&slot.record) {
                tracing::error!(task = %task_id, error = %e, "cannot persist task record");
            }
            slot.record.clone()
        };
        let _ = self.updates.send(rec.to_proto());
        self.changed.notify_waiters();
        Some(rec)
    }

    /// One task's record, if the agent knows it.
    pub fn record(&self, task_id: &str) -> Option<TaskRecord> {
        self.lock().get(task_id).map(|s| s.record.clone())
    }

    /// The task's directory in the state dir (its process containers' logs).
    pub fn task_dir(&self, task_id: &str) -> std::path::PathBuf {
        self.state.task_dir(task_id)
    }

    /// Loads the tasks of a previous run from the state dir and re-adopts the ones not stopped:
    /// live containers are watched again, dead ones are reported, nothing is started twice.
    pub fn adopt(self: &Arc<Self>) -> usize {
        let mut adopted = 0;
        for record in self.state.load_tasks() {
            let id = record.task_id.clone();
            let stopped = record.is_stopped();
            let (stop_tx, stop_rx) =
                watch::channel(record.desired_status == DesiredStatus::Stopped);
            self.lock().insert(
                id.clone(),
                Slot {
                    record,
                    stop: stop_tx,
                },
            );
            if !stopped {
                adopted += 1;
                tracing::info!(task = %id, "re-adopting task");
                tokio::spawn(self.clone().supervise(id, stop_rx));
            }
        }
        adopted
    }

    /// Removes stopped tasks older than `retention`, and what the runtime kept of them.
    pub async fn clean_up(&self, retention: Duration) {
        let cutoff = now() - retention.as_secs_f64();
        let old: Vec<TaskRecord> = {
            let tasks = self.lock();
            tasks
                .values()
                .filter(|s| {
                    s.record.is_stopped() && s.record.stopped_at.is_some_and(|t| t < cutoff)
                })
                .map(|s| s.record.clone())
                .collect()
        };
        for rec in old {
            for c in &rec.containers {
                if let Some(h) = &c.handle {
                    self.runtime.remove(h).await;
                }
            }
            self.runtime.remove_task(&rec.task_id).await;
            self.state.remove_task(&rec.task_id);
            self.lock().remove(&rec.task_id);
        }
    }

    fn spec(&self, rec: &TaskRecord, i: usize) -> ContainerSpec {
        let c = &rec.task_definition.container_definitions[i];
        let ov = rec
            .overrides
            .as_ref()
            .and_then(|o| o.container_overrides.iter().find(|o| o.name == c.name));
        let mut env: Vec<(String, String)> = c
            .environment
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        if let Some(ov) = ov {
            for e in &ov.environment {
                env.retain(|(k, _)| *k != e.name);
                env.push((e.name.clone(), e.value.clone()));
            }
        }
        // A re-adopted process keeps the ports it was given; its health check needs them again.
        let bindings = &rec.containers[i].bindings;
        if let Some(first) = bindings.first() {
            env.push(("PORT".into(), first.host_port.to_string()));
        }
        for b in bindings {
            env.push((
                format!("CAPSTAN_PORT_{}", b.container_port),
                b.host_port.to_string(),
            ));
        }
        // A definition registered before modes were checked gets the default.
        let log_mode =
            capstan_core::logging::LogMode::of(c.log_configuration.as_ref()).unwrap_or_default();
        ContainerSpec {
            task_id: rec.task_id.clone(),
            cluster: rec.cluster.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            entry_point: c.entry_point.clone().unwrap_or_default(),
            command: ov
                .and_then(|o| o.command.clone())
                .or_else(|| c.command.clone())
                .unwrap_or_default(),
            env,
            ports: c.port_mappings.clone(),
            cpu: ov.and_then(|o| o.cpu).or(c.cpu),
            memory: ov.and_then(|o| o.memory).or(c.memory),
            memory_reservation: ov
                .and_then(|o| o.memory_reservation)
                .or(c.memory_reservation),
            working_directory: c.working_directory.clone(),
            health_check: c.health_check.clone(),
            task_dir: self.state.task_dir(&rec.task_id),
            labels: c
                .docker_labels
                .as_ref()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            user: c.user.clone(),
            privileged: c.privileged.unwrap_or(false),
            readonly_root_filesystem: c.readonly_root_filesystem.unwrap_or(false),
            mounts: self.mounts(rec, c),
            volumes_from: c
                .volumes_from
                .iter()
                .filter_map(|v| Some((v.source_container.clone()?, v.read_only.unwrap_or(false))))
                .collect(),
            options: options(&rec.task_definition, c, log_mode),
            log_mode,
        }
    }

    /// The container's mount points, each with what its volume is on this node: a host path,
    /// a directory of the task's (scratch volumes; Docker volumes under the process runtime,
    /// shared ones in the state dir) or a Docker volume.
    fn mounts(
        &self,
        rec: &TaskRecord,
        c: &capstan_core::taskdef::ContainerDefinition,
    ) -> Vec<Mount> {
        use capstan_core::container::VolumeScope;
        let docker = self.runtime.kind() == "docker";
        let task_dir = self.state.task_dir(&rec.task_id);
        c.mount_points
            .iter()
            .filter_map(|m| {
                let name = m.source_volume.as_deref()?;
                let vol = rec
                    .task_definition
                    .volumes
                    .iter()
                    .find(|v| v.name == name)?;
                let source = match (&vol.host, &vol.docker_volume_configuration) {
                    (Some(h), _) if h.source_path.is_some() => {
                        MountSource::HostPath(h.source_path.clone()?.into())
                    }
                    (_, Some(d)) if docker => MountSource::DockerVolume {
                        name: match d.scope() {
                            VolumeScope::Shared => vol.name.clone(),
                            VolumeScope::Task => format!("capstan-{}-{}", rec.task_id, vol.name),
                        },
                        config: d.clone(),
                    },
                    (_, Some(d)) if d.scope() == VolumeScope::Shared => {
                        MountSource::Dir(self.state.root().join(SHARED_VOLUMES_DIR).join(&vol.name))
                    }
                    _ => MountSource::Dir(task_dir.join(TASK_VOLUMES_DIR).join(&vol.name)),
                };
                Some(Mount {
                    volume: vol.name.clone(),
                    source,
                    target: m.container_path.clone()?,
                    read_only: m.read_only.unwrap_or(false),
                })
            })
            .collect()
    }

    /// Makes the directories of a container's mounts, and refuses host paths outside the
    /// agent's `--allow-host-path` prefixes.
    fn prepare_mounts(&self, spec: &ContainerSpec) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for m in &spec.mounts {
            match &m.source {
                MountSource::HostPath(p) => {
                    if !host_path_allowed(p, &self.host_paths) {
                        return Err(format!(
                            "volume {} binds host path {}, which this agent does not allow (allowed: {}; see --allow-host-path)",
                            m.volume,
                            p.display(),
                            if self.host_paths.is_empty() {
                                "none".to_string()
                            } else {
                                self.host_paths
                                    .iter()
                                    .map(|p| p.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ));
                    }
                }
                MountSource::Dir(d) => {
                    // Anyone may write, as in /tmp: the container's user is not the agent's.
                    std::fs::create_dir_all(d)
                        .and_then(|()| {
                            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777))
                        })
                        .map_err(|e| {
                            format!(
                                "cannot make volume {}'s directory {}: {e}",
                                m.volume,
                                d.display()
                            )
                        })?;
                }
                MountSource::DockerVolume { .. } => {}
            }
        }
        Ok(())
    }

    /// Adds a container's environment files and secrets to its environment (in memory only):
    /// `environment` wins over environment files; secrets win over both.
    async fn resolve_env(
        &self,
        spec: &mut ContainerSpec,
        def: &capstan_core::taskdef::ContainerDefinition,
    ) -> Result<(), String> {
        let got = self.secrets.resolve(def).await?;
        for (k, v) in got.files {
            if !spec.env.iter().any(|(e, _)| *e == k) {
                spec.env.push((k, v));
            }
        }
        spec.env
            .retain(|(k, _)| !got.secrets.iter().any(|(s, _)| s == k));
        spec.env.extend(got.secrets);
        Ok(())
    }

    /// Opens an exec session (ECS Exec) in a running container of a task that was started with
    /// execute command enabled. The container is the one named, or the task's only one.
    pub async fn exec(&self, start: &pb::ExecStart) -> Result<ExecSession, AgentError> {
        let id = &start.task_id;
        let rec = self
            .record(id)
            .ok_or_else(|| AgentError::NotFound(id.clone()))?;
        if !rec.enable_execute_command {
            return Err(AgentError::Precondition(format!(
                "task {id} was not started with enableExecuteCommand: exec is not allowed on it"
            )));
        }
        if rec.last_status != TaskStatus::Running || rec.desired_status == DesiredStatus::Stopped {
            return Err(AgentError::Precondition(format!(
                "task {id} is {} and {}: exec needs a RUNNING task",
                rec.last_status.as_str(),
                if rec.desired_status == DesiredStatus::Stopped {
                    "stopping"
                } else {
                    "not stopping"
                }
            )));
        }
        let i = exec_container(&rec, &start.container)?;
        let c = &rec.containers[i];
        let handle = match (&c.handle, c.last_status) {
            (Some(h), TaskStatus::Running) => h.clone(),
            _ => {
                return Err(AgentError::Precondition(format!(
                    "container {} of task {id} is {}: exec needs it RUNNING",
                    c.name,
                    c.last_status.as_str()
                )));
            }
        };
        if start.command.first().is_none_or(String::is_empty) {
            return Err(AgentError::Invalid("the command is empty".into()));
        }
        let mut spec = self.spec(&rec, i);
        // A process session is made with the container's environment; Docker's inherits it.
        if self.runtime.kind() == "process"
            && let Err(e) = self
                .resolve_env(&mut spec, &rec.task_definition.container_definitions[i])
                .await
        {
            tracing::warn!(task = %id, error = %e, "exec session without the container's secrets");
        }
        let request = ExecRequest {
            command: start.command.clone(),
            tty: start.tty,
            interactive: start.interactive,
            size: start.size.as_ref().map(|s| TermSize {
                rows: u16::try_from(s.rows).unwrap_or(u16::MAX),
                cols: u16::try_from(s.cols).unwrap_or(u16::MAX),
            }),
        };
        tracing::info!(task = %id, container = %c.name, program = %start.command[0], tty = start.tty, "exec session");
        self.runtime
            .exec(&handle, &spec, request)
            .await
            .map_err(|e| AgentError::Invalid(format!("cannot exec in container {}: {e}", c.name)))
    }

    /// Starts one container, its environment files and secrets added to its environment first
    /// (in memory only).
    /// The error is the container's stopped reason.
    async fn start_container(
        &self,
        spec: &mut ContainerSpec,
        def: &capstan_core::taskdef::ContainerDefinition,
    ) -> Result<crate::runtime::Started, String> {
        self.resolve_env(spec, def).await.map_err(|e| {
            format!("ResourceInitializationError: unable to pull secrets or environment files: {e}")
        })?;
        self.prepare_mounts(spec)
            .map_err(|e| format!("CannotStartContainerError: {e}"))?;
        self.runtime
            .start(spec)
            .await
            .map_err(|e| format!("CannotStartContainerError: {e}"))
    }

    /// Drives one task from where its record stands to STOPPED.
    async fn supervise(self: Arc<Self>, task_id: String, mut stop_rx: watch::Receiver<bool>) {
        let Some(rec) = self.record(&task_id) else {
            return;
        };
        let defs = rec.task_definition.container_definitions.clone();
        let n = defs.len();
        let mut specs: Vec<ContainerSpec> = (0..n).map(|i| self.spec(&rec, i)).collect();
        let mut handles: Vec<Option<Handle>> =
            rec.containers.iter().map(|c| c.handle.clone()).collect();
        // Some(code) once a container has exited (the code itself may be unknown).
        let mut exited: Vec<Option<Option<i32>>> = vec![None; n];
        let mut health: Vec<HealthStatus> =
            rec.containers.iter().map(|c| c.health_status).collect();
        let mut start_order: Vec<usize> = Vec::new();
        let mut exits = FuturesUnordered::new();
        let (health_tx, mut health_rx) = mpsc::unbounded_channel::<(usize, HealthStatus)>();
        let mut checkers = JoinSet::new();
        // Each container's health checker, so a restart can replace it.
        let mut checker_of: Vec<Option<tokio::task::AbortHandle>> = vec![None; n];
        // Since when each container has run (its restart policy counts from there).
        let mut ran_since: Vec<Option<Instant>> = vec![None; n];
        let mut failure: Option<(StopCode, String)> = None;

        // Re-adoption: watch live containers again; report the ones that died meanwhile.
        for i in 0..n {
            let c = &rec.containers[i];
            if c.last_status == TaskStatus::Stopped {
                exited[i] = Some(c.exit_code);
                continue;
            }
            if handles[i].is_none() && rec.last_status > TaskStatus::Pending {
                // Started but not recorded before a crash: find it rather than start it twice.
                if let Some(h) = self.runtime.find(&task_id, &c.name).await {
                    tracing::info!(task = %task_id, container = %c.name, "found an unrecorded container by label");
                    handles[i] = Some(h.clone());
                    self.update(&task_id, |r| r.containers[i].handle = Some(h));
                }
            }
            let Some(h) = handles[i].clone() else {
                continue;
            };
            start_order.push(i);
            if self.runtime.alive(&h).await {
                ran_since[i] = Some(Instant::now());
                let wait = self.runtime.wait(&h);
                exits.push(async move { (i, wait.await) }.boxed());
                if let Some(check) = specs[i].health_check.clone() {
                    checker_of[i] = Some(checkers.spawn(health_loop(
                        self.runtime.clone(),
                        h,
                        specs[i].clone(),
                        check,
                        i,
                        health_tx.clone(),
                    )));
                }
            } else {
                // Docker still knows the exit code of a dead container; a process's is lost.
                let exit = tokio::time::timeout(Duration::from_secs(5), self.runtime.wait(&h))
                    .await
                    .unwrap_or(Exit::Unknown(String::new()));
                exited[i] = Some(exit.code());
                let reason = format!(
                    "exited while the agent was not running{}",
                    if exit.code().is_some() {
                        ""
                    } else {
                        "; exit code unknown"
                    }
                );
                self.update(&task_id, |r| {
                    r.containers[i].last_status = TaskStatus::Stopped;
                    r.containers[i].exit_code = exit.code();
                    r.containers[i].reason = Some(reason);
                });
                if defs[i].is_essential() {
                    failure.get_or_insert((
                        StopCode::EssentialContainerExited,
                        ESSENTIAL_EXITED.into(),
                    ));
                }
            }
        }
        if rec.last_status < TaskStatus::Activating {
            self.update(&task_id, |r| r.last_status = TaskStatus::Activating);
        }
        let waiting_since = Instant::now();

        while !*stop_rx.borrow() && failure.is_none() {
            // Start every container whose dependencies are met, in definition order.
            let mut deadline: Option<Instant> = None;
            for i in 0..n {
                if handles[i].is_some() || exited[i].is_some() {
                    continue;
                }
                match dependencies(&defs, i, &handles, &exited, &health) {
                    Deps::Wait => {
                        let t = defs[i]
                            .start_timeout
                            .map_or(DEFAULT_START_TIMEOUT, |s| Duration::from_secs(u64::from(s)));
                        let at = waiting_since + t;
                        if Instant::now() >= at {
                            failure = Some((
                                StopCode::TaskFailedToStart,
                                format!(
                                    "container {} gave up waiting for its dependencies after {}s",
                                    defs[i].name,
                                    t.as_secs()
                                ),
                            ));
                            break;
                        }
                        deadline = Some(deadline.map_or(at, |d: Instant| d.min(at)));
                    }
                    Deps::Blocked(reason) => {
                        failure = Some((StopCode::TaskFailedToStart, reason));
                        break;
                    }
                    Deps::Ready => match self.start_container(&mut specs[i], &defs[i]).await {
                        Ok(started) => {
                            let h = started.handle.clone();
                            handles[i] = Some(h.clone());
                            ran_since[i] = Some(Instant::now());
                            start_order.push(i);
                            self.update(&task_id, |r| {
                                let c = &mut r.containers[i];
                                c.last_status = TaskStatus::Running;
                                c.handle = Some(started.handle);
                                c.bindings = started.bindings;
                                c.ip = started.ip;
                            });
                            let wait = self.runtime.wait(&h);
                            exits.push(async move { (i, wait.await) }.boxed());
                            if let Some(check) = specs[i].health_check.clone() {
                                checker_of[i] = Some(checkers.spawn(health_loop(
                                    self.runtime.clone(),
                                    h,
                                    specs[i].clone(),
                                    check,
                                    i,
                                    health_tx.clone(),
                                )));
                            }
                        }
                        Err(reason) => {
                            tracing::warn!(task = %task_id, container = %defs[i].name, %reason, "container failed to start");
                            self.update(&task_id, |r| {
                                r.containers[i].last_status = TaskStatus::Stopped;
                                r.containers[i].reason = Some(reason.clone());
                            });
                            exited[i] = Some(None);
                            failure = Some((StopCode::TaskFailedToStart, reason));
                            break;
                        }
                    },
                }
            }
            if failure.is_some() {
                break;
            }
            let all_started = (0..n).all(|i| handles[i].is_some() || exited[i].is_some());
            if all_started {
                self.update(&task_id, |r| {
                    if r.last_status < TaskStatus::Running {
                        r.last_status = TaskStatus::Running;
                        r.started_at = Some(now());
                    }
                });
            }
            tokio::select! {
                _ = stop_rx.changed() => {}
                Some((i, exit)) = exits.next() => {
                    let ran = ran_since[i].map_or(0.0, |t| t.elapsed().as_secs_f64());
                    let restart = !*stop_rx.borrow()
                        && defs[i].restart_policy.as_ref().is_some_and(|p| p.restarts(exit.code(), ran));
                    if restart && let Some(h) = handles[i].clone() {
                        match self.runtime.restart(&h, &specs[i]).await {
                            Ok(started) => {
                                let h = started.handle.clone();
                                handles[i] = Some(h.clone());
                                ran_since[i] = Some(Instant::now());
                                let code = exit.code().map_or("unknown".to_string(), |c| c.to_string());
                                tracing::info!(task = %task_id, container = %defs[i].name, exit = %code, "container restarted in place by its restartPolicy");
                                self.update(&task_id, |r| {
                                    let c = &mut r.containers[i];
                                    c.handle = Some(started.handle);
                                    c.bindings = started.bindings;
                                    c.ip = started.ip;
                                    c.restart_count += 1;
                                    c.reason = Some(format!("restarted by its restartPolicy after exit code {code}"));
                                });
                                let wait = self.runtime.wait(&h);
                                exits.push(async move { (i, wait.await) }.boxed());
                                if let Some(check) = specs[i].health_check.clone() {
                                    if let Some(old) = checker_of[i].take() {
                                        old.abort();
                                    }
                                    checker_of[i] = Some(checkers.spawn(health_loop(
                                        self.runtime.clone(),
                                        h,
                                        specs[i].clone(),
                                        check,
                                        i,
                                        health_tx.clone(),
                                    )));
                                }
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(task = %task_id, container = %defs[i].name, error = %e, "restart in place failed; the exit stands");
                            }
                        }
                    }
                    exited[i] = Some(exit.code());
                    let reason = match &exit { Exit::Unknown(r) => Some(r.clone()), Exit::Code(_) => None };
                    self.update(&task_id, |r| {
                        let c = &mut r.containers[i];
                        c.last_status = TaskStatus::Stopped;
                        c.exit_code = exit.code();
                        c.reason = reason;
                    });
                    if defs[i].is_essential() {
                        failure = Some((StopCode::EssentialContainerExited, ESSENTIAL_EXITED.into()));
                    }
                }
                Some((i, h)) = health_rx.recv() => {
                    health[i] = h;
                    self.update(&task_id, |r| r.containers[i].health_status = h);
                }
                _ = sleep_until_opt(deadline) => {}
            }
        }

        // Stop: every running container, in reverse start order (dependents before dependencies).
        let fail = failure.clone();
        let rec = self.update(&task_id, |r| {
            r.desired_status = DesiredStatus::Stopped;
            r.last_status = TaskStatus::Stopping;
            if let Some((code, reason)) = fail
                && r.stop_code.is_none()
            {
                r.stop_code = Some(code);
                r.stopped_reason = Some(reason);
            }
        });
        let requested = rec
            .as_ref()
            .and_then(|r| r.stop_timeout_secs)
            .map(Duration::from_secs);
        for &i in start_order.iter().rev() {
            if exited[i].is_some() {
                continue;
            }
            let Some(h) = handles[i].clone() else {
                continue;
            };
            let timeout = requested
                .unwrap_or_else(|| Duration::from_secs(u64::from(defs[i].stop_timeout_secs())));
            self.runtime.stop(&h, timeout).await;
            let exit = tokio::time::timeout(Duration::from_secs(5), self.runtime.wait(&h))
                .await
                .unwrap_or(Exit::Unknown("did not report its exit".into()));
            exited[i] = Some(exit.code());
            self.update(&task_id, |r| {
                let c = &mut r.containers[i];
                c.last_status = TaskStatus::Stopped;
                c.exit_code = exit.code();
            });
        }
        checkers.abort_all();
        self.update(&task_id, |r| {
            for c in &mut r.containers {
                if c.last_status != TaskStatus::Stopped {
                    c.last_status = TaskStatus::Stopped;
                    c.reason
                        .get_or_insert_with(|| "not started: the task stopped first".into());
                }
            }
            r.last_status = TaskStatus::Stopped;
            r.stopped_at = Some(now());
        });
        tracing::info!(task = %task_id, "task stopped");
    }
}

/// Where scratch volumes (and process-runtime Docker volumes) live in a task's directory.
pub const TASK_VOLUMES_DIR: &str = "volumes";
/// Where process-runtime shared Docker volumes live in the state dir.
pub const SHARED_VOLUMES_DIR: &str = "volumes";

/// Whether `path` is (lexically, with no `..`) under one of the `allowed` prefixes.
pub fn host_path_allowed(path: &std::path::Path, allowed: &[std::path::PathBuf]) -> bool {
    use std::path::Component;
    path.is_absolute()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
        && allowed.iter().any(|a| path.starts_with(a))
}

/// The container-definition fields the docker runtime acts on, with the task's modes.
fn options(
    td: &capstan_core::TaskDefinition,
    c: &capstan_core::taskdef::ContainerDefinition,
    mode: capstan_core::logging::LogMode,
) -> ContainerOptions {
    // Docker keeps every container's logs (json-file, rotated as the process runtime's are,
    // unless json-file or local is asked for with options of its own), delivered in the mode
    // the task definition asks for.
    let config = c.log_configuration.as_ref();
    let driver = config
        .and_then(|l| l["logDriver"].as_str())
        .filter(|d| ["json-file", "local"].contains(d));
    let mut opts: std::collections::HashMap<String, String> = match driver {
        Some(_) => config
            .and_then(|l| l["options"].as_object())
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        None => [
            ("max-size", format!("{}b", crate::logs::DEFAULT_MAX_BYTES)),
            ("max-file", "2".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    opts.remove("max-buffer-size");
    opts.extend(mode.docker_options());
    let log_driver = Some((driver.unwrap_or("json-file").to_string(), opts));
    ContainerOptions {
        linux: c.linux_parameters.clone(),
        ulimits: c.ulimits.clone(),
        hostname: c.hostname.clone(),
        dns_servers: c.dns_servers.clone(),
        dns_search_domains: c.dns_search_domains.clone(),
        extra_hosts: c.extra_hosts.clone(),
        security_options: c.docker_security_options.clone(),
        system_controls: c.system_controls.clone(),
        interactive: c.interactive.unwrap_or(false),
        pseudo_terminal: c.pseudo_terminal.unwrap_or(false),
        disable_networking: c.disable_networking.unwrap_or(false),
        gpus: c
            .resource_requirements
            .iter()
            .filter_map(capstan_core::container::ResourceRequirement::gpus)
            .sum(),
        network_mode: td.network_mode,
        pid_mode: td.pid_mode,
        ipc_mode: td.ipc_mode,
        log_driver,
    }
}

/// The container an exec session runs in: the one named, or the task's only one.
fn exec_container(rec: &TaskRecord, name: &str) -> Result<usize, AgentError> {
    if name.is_empty() {
        return match rec.containers.len() {
            1 => Ok(0),
            _ => Err(AgentError::Invalid(format!(
                "task {} has containers {}: name one",
                rec.task_id,
                rec.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    rec.containers
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| {
            AgentError::Invalid(format!("task {} has no container {name:?}", rec.task_id))
        })
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

enum Deps {
    Ready,
    Wait,
    Blocked(String),
}

fn dependencies(
    defs: &[capstan_core::taskdef::ContainerDefinition],
    i: usize,
    handles: &[Option<Handle>],
    exited: &[Option<Option<i32>>],
    health: &[HealthStatus],
) -> Deps {
    for d in &defs[i].depends_on {
        let Some(j) = defs.iter().position(|c| c.name == d.container_name) else {
            return Deps::Blocked(format!("dependency {} does not exist", d.container_name));
        };
        let met = match d.condition {
            DependencyCondition::Start => handles[j].is_some() || exited[j].is_some(),
            DependencyCondition::Complete => exited[j].is_some(),
            DependencyCondition::Success => match exited[j] {
                Some(Some(0)) => true,
                Some(code) => {
                    return Deps::Blocked(format!(
                        "dependency {} of container {} exited with {} instead of succeeding",
                        d.container_name,
                        defs[i].name,
                        code.map_or("an unknown code".to_string(), |c| format!("code {c}"))
                    ));
                }
                None => false,
            },
            DependencyCondition::Healthy => {
                if health[j] == HealthStatus::Healthy {
                    true
                } else if exited[j].is_some() {
                    return Deps::Blocked(format!(
                        "dependency {} of container {} exited before it was healthy",
                        d.container_name, defs[i].name
                    ));
                } else {
                    false
                }
            }
        };
        if !met {
            return Deps::Wait;
        }
    }
    // volumesFrom needs its source created first, as an implicit START dependency.
    for v in &defs[i].volumes_from {
        let Some(j) = v
            .source_container
            .as_ref()
            .and_then(|s| defs.iter().position(|c| c.name == *s))
        else {
            continue;
        };
        if handles[j].is_none() {
            return if exited[j].is_some() {
                Deps::Blocked(format!(
                    "container {} takes volumes from {}, which never started",
                    defs[i].name, defs[j].name
                ))
            } else {
                Deps::Wait
            };
        }
    }
    Deps::Ready
}

/// Runs a container's health check every interval and reports each change: HEALTHY on a pass,
/// UNHEALTHY after `retries` consecutive failures outside the start period.
async fn health_loop(
    runtime: Arc<dyn ContainerRuntime>,
    handle: Handle,
    spec: ContainerSpec,
    check: HealthCheck,
    idx: usize,
    tx: mpsc::UnboundedSender<(usize, HealthStatus)>,
) {
    let interval = Duration::from_secs(u64::from(check.interval_secs()));
    let start_period = Duration::from_secs(u64::from(check.start_period_secs()));
    let started = Instant::now();
    let mut failures = 0;
    let mut status = HealthStatus::Unknown;
    loop {
        tokio::time::sleep(interval).await;
        let next = if runtime.check(&handle, &spec, &check).await {
            failures = 0;
            HealthStatus::Healthy
        } else if started.elapsed() < start_period {
            continue;
        } else {
            failures += 1;
            if failures >= check.retries() {
                HealthStatus::Unhealthy
            } else {
                status
            }
        };
        if next != status {
            status = next;
            if tx.send((idx, status)).is_err() {
                return;
            }
        }
    }
}

//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks, Update/GetTaskProtection.

use capstan_core::task::{
    DEFAULT_PROTECTION_MINUTES, MAX_PROTECTION_MINUTES, TaskProtection, TaskStatus,
};

use super::*;

impl Api {
    pub(crate) async fn task(&self, cluster: &str, id: &str) -> ApiResult<Option<Task>> {
        Ok(self
            .get::<Task>(&self.keys().task(cluster, id))
            .await?
            .map(|(t, _)| t))
    }

    /// Writes a RunTask request and waits for the scheduler's answer.
    pub(crate) async fn submit_run_task(
        &self,
        cluster: &str,
        request: &RunTaskRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        // With a client token the request's id is the token's (per cluster), so a retry finds
        // the first request (queued or answered) instead of starting more tasks.
        let id = match &request.client_token {
            Some(token) => hex::encode(
                &ring::digest::digest(
                    &ring::digest::SHA256,
                    format!("{cluster}\n{token}").as_bytes(),
                )
                .as_ref()[..16],
            ),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let key = self.keys().key(Family::RunTaskRequests, &[cluster, &id]);
        let result_key = self.keys().key(Family::RunTaskResults, &[cluster, &id]);
        let answered = if request.client_token.is_some() {
            self.store.get(&result_key).await?
        } else {
            None
        };
        let kv = match answered {
            Some(kv) => kv,
            None => {
                let submitted = self
                    .store
                    .commit(
                        Write::new()
                            .if_absent(&key)
                            .if_absent(&result_key)
                            .put_json(&key, request),
                        None,
                    )
                    .await;
                let after = match submitted {
                    Ok(rev) => rev,
                    // The same token's request is queued or was just answered.
                    Err(StoreError::Conflict { .. }) => match self.store.get(&result_key).await? {
                        Some(kv) => return self.run_task_answer(cluster, &kv).await,
                        None => self
                            .store
                            .get(&key)
                            .await?
                            .map(|kv| kv.mod_revision)
                            .unwrap_or_default(),
                    },
                    Err(e) => return Err(e.into()),
                };
                let Some(kv) = self
                    .store
                    .wait_for_put(&result_key, after, self.run_task_timeout)
                    .await?
                else {
                    return Err(ApiError::new(
                        Exception::Server,
                        format!(
                            "the scheduler did not answer within {:?}; is capstan-scheduler running? The request stays queued as {key}",
                            self.run_task_timeout
                        ),
                    ));
                };
                kv
            }
        };
        self.run_task_answer(cluster, &kv).await
    }

    /// RunTask's answer from the scheduler's result record.
    async fn run_task_answer(
        &self,
        cluster: &str,
        kv: &KeyValue,
    ) -> ApiResult<pb::DescribeResponse> {
        let result: RunTaskResult = decode(kv).unwrap_or_default();
        let mut out = pb::DescribeResponse::default();
        for t in &result.tasks {
            if let Some(task) = self.task(cluster, t).await? {
                out.items_json.push(to_json(&task));
            }
        }
        out.failures = result
            .failures
            .into_iter()
            .map(|f| pb::Failure {
                arn: String::new(),
                reason: f.reason,
                detail: f.detail,
            })
            .collect();
        Ok(out)
    }

    /// RunTask: places and starts up to 10 tasks through the scheduler.
    pub async fn run_task(&self, req: pb::RunTaskRequest) -> ApiResult<pb::DescribeResponse> {
        let accepted = accept::<RunTaskRequest>(req.run_task_json.as_bytes())?;
        let mut r = accepted.value;
        let cluster = match (&r.cluster, req.cluster.as_str()) {
            (Some(c), "") => name_of(c).to_string(),
            _ => cluster_or_default(&req.cluster).to_string(),
        };
        self.require_cluster(&cluster).await?;
        self.usable_task_definition(&r.task_definition).await?;
        for cp in &r.capacity_provider_strategy {
            self.require_capacity_provider(&cp.capacity_provider)
                .await?;
        }
        r.cluster = Some(cluster.clone());
        self.submit_run_task(&cluster, &r).await
    }

    /// StartTask: one task on each named container instance.
    pub async fn start_task(&self, req: pb::StartTaskRequest) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.container_instances.is_empty() || req.container_instances.len() > 10 {
            return Err(ApiError::invalid(
                "containerInstances must name 1 to 10 container instances",
            ));
        }
        self.usable_task_definition(&req.task_definition).await?;
        let overrides: Option<TaskOverride> = if req.overrides_json.trim().is_empty() {
            None
        } else {
            Some(capstan_core::parse_json(req.overrides_json.as_bytes())?)
        };
        let mut out = pb::DescribeResponse::default();
        for ci in &req.container_instances {
            let id = name_of(ci);
            if self
                .store
                .get(&self.keys().container_instance(&cluster, id))
                .await?
                .is_none()
            {
                out.failures
                    .push(missing(format!("container-instance/{cluster}/{id}")));
                continue;
            }
            let r = RunTaskRequest {
                task_definition: req.task_definition.clone(),
                count: Some(1),
                group: (!req.group.is_empty()).then(|| req.group.clone()),
                started_by: (!req.started_by.is_empty()).then(|| req.started_by.clone()),
                placement_constraints: vec![PlacementConstraint {
                    kind: PlacementConstraintType::MemberOf,
                    expression: Some(format!("ec2InstanceId == {id}")),
                }],
                overrides: overrides.clone(),
                cluster: Some(cluster.clone()),
                enable_execute_command: req.enable_execute_command.then_some(true),
                ..Default::default()
            };
            let bytes = serde_json::to_vec(&r).unwrap_or_default();
            let r = accept::<RunTaskRequest>(&bytes)?.value;
            let part = self.submit_run_task(&cluster, &r).await?;
            out.items_json.extend(part.items_json);
            out.failures.extend(part.failures.into_iter().map(|mut f| {
                f.arn = arn(&format!("container-instance/{cluster}/{id}"));
                f
            }));
        }
        Ok(out)
    }

    /// StopTask: writes the request key the scheduler consumes.
    pub async fn stop_task(&self, req: pb::StopTaskRequest) -> ApiResult<pb::TaskResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let id = name_of(&req.task).to_string();
        let Some(mut task) = self.task(&cluster, &id).await? else {
            return Err(ApiError::invalid(format!(
                "The referenced task was not found: {id} in cluster {cluster}."
            )));
        };
        let body = StopTaskRequest {
            reason: (!req.reason.is_empty()).then(|| req.reason.clone()),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let body = accept::<StopTaskRequest>(&bytes)?.value;
        if task.desired_status == DesiredStatus::Running {
            self.store
                .put_json(
                    &self.keys().key(Family::StopTaskRequests, &[&cluster, &id]),
                    &body,
                )
                .await?;
            // As ECS answers: the task with the stop accepted.
            task.desired_status = DesiredStatus::Stopped;
            if task.stopped_reason.is_none() {
                task.stopped_reason = body.reason;
            }
        }
        Ok(pb::TaskResponse {
            task_json: to_json(&task),
        })
    }

    /// DescribeTasks.
    pub async fn describe_tasks(
        &self,
        req: pb::DescribeTasksRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.tasks.is_empty() || req.tasks.len() > 100 {
            return Err(ApiError::invalid("tasks must name 1 to 100 tasks"));
        }
        let mut out = pb::DescribeResponse::default();
        for t in &req.tasks {
            let id = name_of(t);
            match self.task(&cluster, id).await? {
                Some(task) => out.items_json.push(to_json(&task)),
                None => out.failures.push(missing(format!("task/{cluster}/{id}"))),
            }
        }
        Ok(out)
    }

    /// ListTasks.
    pub async fn list_tasks(&self, req: pb::ListTasksRequest) -> ApiResult<pb::ListResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let filter = TaskFilter {
            family: req.family,
            service_name: name_of(&req.service_name).to_string(),
            desired_status: req.desired_status,
            container_instance: req.container_instance,
            started_by: req.started_by,
        };
        filter.validate()?;
        let ids: Vec<String> = self
            .list::<Task>(&self.keys().list(Family::Tasks, &[&cluster]))
            .await?
            .iter()
            .filter(|(t, _)| filter.matches(t))
            .map(|(_, kv)| name_of(&kv.key).to_string())
            .collect();
        arn_page(
            ids,
            req.max_results,
            &req.next_token,
            &format!("task/{cluster}/"),
        )
    }
}

/// The agent client type the API holds for calls to agents.
type AgentClient = capstan_proto::agent::v1::agent_client::AgentClient<tonic::transport::Channel>;

impl Api {
    /// The task `id` of `cluster` and a client for the agent it was placed on; `what` names
    /// what was asked for, in errors.
    async fn task_agent(
        &self,
        cluster: &str,
        id: &str,
        what: &str,
    ) -> ApiResult<(Task, AgentClient)> {
        let task = self.task(cluster, id).await?.ok_or_else(|| {
            ApiError::new(
                Exception::InvalidParameter,
                format!("task {id} is not known in cluster {cluster}"),
            )
        })?;
        let instance = task.instance_id().ok_or_else(|| {
            ApiError::invalid(format!("task {id} has not been placed yet: no {what}"))
        })?;
        let ci = self
            .get::<capstan_core::ContainerInstance>(
                &self.keys().container_instance(cluster, instance),
            )
            .await?
            .map(|(ci, _)| ci)
            .ok_or_else(|| {
                ApiError::new(
                    Exception::Client,
                    format!(
                        "task {id} ran on container instance {instance}, which is gone: no {what}"
                    ),
                )
            })?;
        let client = self
            .agents
            .client(&ci.agent_endpoint)
            .map_err(|e| agent_unreachable(id, what, &e.to_string()))?;
        Ok((task, client))
    }

    /// Opens a task's log stream on the agent that runs (or ran) it.
    pub(crate) async fn task_logs(
        &self,
        r: pb::GetTaskLogsRequest,
    ) -> ApiResult<tonic::Streaming<capstan_proto::agent::v1::LogEvent>> {
        let cluster = cluster_name(&r.cluster);
        let id = crate::shape::name_of(&r.task);
        let (_, mut client) = self.task_agent(cluster, id, "logs").await?;
        let req = capstan_proto::agent::v1::TaskLogsRequest {
            task_id: id.to_string(),
            container: r.container,
            follow: r.follow,
            since: r.since,
            tail: r.tail,
        };
        match client.task_logs(req).await {
            Ok(stream) => Ok(stream.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(ApiError::new(
                Exception::Client,
                format!("task {id}'s agent no longer has it (cleaned up after --task-retention)"),
            )),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                Err(ApiError::invalid(s.message().to_string()))
            }
            Err(s) => Err(agent_unreachable(id, "logs", s.message())),
        }
    }

    /// ECS Exec: checks that the task allows it and is running, then opens the session on its
    /// agent, whose first message is `start` and the rest `input`.
    pub(crate) async fn execute_command(
        &self,
        start: pb::ExecuteCommandStart,
        input: impl futures::Stream<Item = capstan_proto::agent::v1::ExecInput> + Send + 'static,
    ) -> ApiResult<tonic::Streaming<capstan_proto::agent::v1::ExecOutput>> {
        use capstan_proto::agent::v1 as agent;
        use futures::StreamExt;
        let cluster = cluster_name(&start.cluster);
        let id = crate::shape::name_of(&start.task);
        if start.command.first().is_none_or(String::is_empty) {
            return Err(ApiError::invalid("command is required"));
        }
        let (task, mut client) = self.task_agent(cluster, id, "execute command").await?;
        if !task.enable_execute_command {
            return Err(ApiError::invalid(format!(
                "The execute command failed because execute command was not enabled when the task {id} was run. Run a new task (or deploy the service) with enableExecuteCommand and try again."
            )));
        }
        if task.last_status != capstan_core::task::TaskStatus::Running
            || task.desired_status == DesiredStatus::Stopped
        {
            return Err(ApiError::invalid(format!(
                "The execute command failed because task {id} is {}: it needs to be RUNNING.",
                task.last_status.as_str()
            )));
        }
        let container = match (start.container.as_str(), task.containers.as_slice()) {
            ("", [only]) => only.name.clone(),
            ("", many) => {
                return Err(ApiError::invalid(format!(
                    "task {id} has containers {}: name one with --container",
                    many.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            (name, all) if all.iter().any(|c| c.name == name) => name.to_string(),
            (name, _) => {
                return Err(ApiError::invalid(format!(
                    "task {id} has no container {name:?}"
                )));
            }
        };
        let first = agent::ExecInput {
            input: Some(agent::exec_input::Input::Start(agent::ExecStart {
                task_id: id.to_string(),
                container,
                command: start.command,
                tty: start.tty,
                interactive: start.interactive,
                size: start.size.map(|s| agent::TerminalSize {
                    rows: s.rows,
                    cols: s.cols,
                }),
            })),
        };
        let outbound = futures::stream::once(async move { first }).chain(input);
        match client.exec(outbound).await {
            Ok(stream) => Ok(stream.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                Err(ApiError::invalid(s.message().to_string()))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Err(ApiError::invalid(format!(
                "task {id}'s agent does not have it"
            ))),
            Err(s) => Err(agent_unreachable(id, "execute command", s.message())),
        }
    }
}

/// A task's agent could not be reached for `what`.
fn agent_unreachable(id: &str, what: &str, e: &str) -> ApiError {
    ApiError::new(
        Exception::Server,
        format!("cannot reach task {id}'s agent for {what}: {e}"),
    )
}

impl Api {
    /// UpdateTaskProtection: turns on (for `expires_in_minutes`, under an etcd lease that ends
    /// with it) or off the scale-in protection of up to 10 service tasks.
    pub async fn update_task_protection(
        &self,
        req: pb::UpdateTaskProtectionRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.tasks.is_empty() || req.tasks.len() > 10 {
            return Err(ApiError::invalid("tasks must name 1 to 10 tasks"));
        }
        let minutes = match req.expires_in_minutes {
            0 => DEFAULT_PROTECTION_MINUTES,
            m => u32::try_from(m)
                .ok()
                .filter(|m| (1..=MAX_PROTECTION_MINUTES).contains(m))
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "expiresInMinutes must be between 1 and {MAX_PROTECTION_MINUTES}, got {m}"
                    ))
                })?,
        };
        let mut out = pb::DescribeResponse::default();
        for t in &req.tasks {
            let id = name_of(t);
            let task = match self.protectable(&cluster, id).await? {
                Ok(task) => task,
                Err(failure) => {
                    out.failures.push(failure);
                    continue;
                }
            };
            let key = self.keys().key(Family::TaskProtection, &[&cluster, id]);
            let doc = if req.protection_enabled {
                let ttl = i64::from(minutes) * 60;
                let protection = TaskProtection {
                    protection_enabled: true,
                    expiration_date: (now() + ttl as f64).floor(),
                };
                let lease = self.store.grant_lease(ttl).await?;
                self.store
                    .commit(
                        Write::new().put_json_with_lease(&key, &protection, lease),
                        None,
                    )
                    .await?;
                protected_task(&task, Some(&protection))
            } else {
                self.store.delete(&key).await?;
                protected_task(&task, None)
            };
            out.items_json.push(doc.to_string());
        }
        Ok(out)
    }

    /// GetTaskProtection: the named tasks' protection, or every protected task of the cluster.
    pub async fn get_task_protection(
        &self,
        req: pb::GetTaskProtectionRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.tasks.len() > 100 {
            return Err(ApiError::invalid("tasks must name at most 100 tasks"));
        }
        let ids: Vec<String> = if req.tasks.is_empty() {
            self.list::<TaskProtection>(&self.keys().list(Family::TaskProtection, &[&cluster]))
                .await?
                .iter()
                .map(|(_, kv)| name_of(&kv.key).to_string())
                .collect()
        } else {
            req.tasks.iter().map(|t| name_of(t).to_string()).collect()
        };
        let mut out = pb::DescribeResponse::default();
        for id in &ids {
            let Some(task) = self.task(&cluster, id).await? else {
                out.failures.push(missing(format!("task/{cluster}/{id}")));
                continue;
            };
            let protection = self
                .get::<TaskProtection>(&self.keys().key(Family::TaskProtection, &[&cluster, id]))
                .await?
                .map(|(p, _)| p)
                .filter(|p| p.active(now()));
            out.items_json
                .push(protected_task(&task, protection.as_ref()).to_string());
        }
        Ok(out)
    }

    /// The task `id` if its protection may change, else the failure to report (ECS's reasons).
    async fn protectable(&self, cluster: &str, id: &str) -> ApiResult<Result<Task, pb::Failure>> {
        let Some(task) = self.task(cluster, id).await? else {
            return Ok(Err(missing(format!("task/{cluster}/{id}"))));
        };
        let invalid = |detail: &str| pb::Failure {
            arn: arn(&format!("task/{cluster}/{id}")),
            reason: "TASK_NOT_VALID".into(),
            detail: detail.into(),
        };
        if task.service().is_none() {
            return Ok(Err(invalid(
                "The task is not part of a service; only service tasks can be protected",
            )));
        }
        if task.desired_status != DesiredStatus::Running || task.last_status == TaskStatus::Stopped
        {
            return Ok(Err(invalid("The task is stopping or stopped")));
        }
        Ok(Ok(task))
    }
}

/// ECS's `ProtectedTask` for `task`.
fn protected_task(task: &Task, protection: Option<&TaskProtection>) -> Value {
    let arn = task.task_arn.clone();
    match protection {
        Some(p) => json!({
            "taskArn": arn,
            "protectionEnabled": true,
            "expirationDate": p.expiration_date,
        }),
        None => json!({"taskArn": arn, "protectionEnabled": false}),
    }
}

//! The `capstan.agent.v1.Agent` gRPC service over an [`Agent`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_server::AgentServer;
use capstan_proto::convert::{start_result, stop_code};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent::{Agent, StopRequest};
use crate::fence::Fence;
use crate::registration::Resources;

/// The gRPC face of an agent.
pub struct AgentService {
    agent: Arc<Agent>,
    fence: Fence,
    instance_id: String,
    resources: Arc<Resources>,
    version: String,
}

impl AgentService {
    /// A tonic server for `agent`.
    pub fn server(
        agent: Arc<Agent>,
        fence: Fence,
        instance_id: String,
        resources: Arc<Resources>,
    ) -> AgentServer<Self> {
        AgentServer::new(Self {
            agent,
            fence,
            instance_id,
            resources,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogEvent, Status>> + Send>>;
type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

fn resources(list: &[capstan_core::instance::Resource]) -> Vec<pb::Resource> {
    list.iter()
        .map(|r| pb::Resource {
            name: r.name.clone(),
            integer_value: r.integer_value.unwrap_or(0),
            string_set_value: r.string_set_value.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        self.fence
            .admit(&self.agent, request.get_ref().fencing_token)
            .await?;
        let task = self.agent.start_task(request.get_ref())?;
        Ok(Response::new(pb::StartTaskResponse { task: Some(task) }))
    }

    async fn start_tasks(
        &self,
        request: Request<pb::StartTasksRequest>,
    ) -> Result<Response<pb::StartTasksResponse>, Status> {
        // One check per distinct token in the batch (a batch comes from one leader).
        let mut tokens: Vec<u64> = request
            .get_ref()
            .tasks
            .iter()
            .map(|t| t.fencing_token)
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        for t in tokens {
            self.fence.admit(&self.agent, t).await?;
        }
        let results = request
            .get_ref()
            .tasks
            .iter()
            .map(|r| start_result(&r.task_id, self.agent.start_task(r).map_err(Status::from)))
            .collect();
        Ok(Response::new(pb::StartTasksResponse { results }))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let r = request.into_inner();
        self.fence.admit(&self.agent, r.fencing_token).await?;
        let timeout = r
            .timeout
            .map(|d| Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0)));
        let task = self.agent.stop_task(
            &r.task_id,
            StopRequest {
                reason: r.reason,
                code: stop_code(r.stop_code),
                timeout,
            },
            r.fencing_token,
        )?;
        Ok(Response::new(pb::StopTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        _request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        Ok(Response::new(pb::ListTasksResponse {
            tasks: self.agent.list(),
        }))
    }

    type WatchTasksStream = EventStream;

    async fn watch_tasks(
        &self,
        _request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        // Subscribe before the snapshot, so no change falls between them.
        let mut updates = self.agent.subscribe();
        let agent = self.agent.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let snapshot = |agent: &Agent| pb::TaskEvent {
                event: Some(pb::task_event::Event::Snapshot(pb::TaskSnapshot {
                    tasks: agent.list(),
                })),
            };
            if tx.send(Ok(snapshot(&agent))).await.is_err() {
                return;
            }
            loop {
                let event = match updates.recv().await {
                    Ok(state) => pb::TaskEvent {
                        event: Some(pb::task_event::Event::Update(state)),
                    },
                    // A slow watcher missed updates: a fresh snapshot makes it whole again.
                    Err(RecvError::Lagged(_)) => snapshot(&agent),
                    Err(RecvError::Closed) => return,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TaskLogsStream = LogStream;

    async fn task_logs(
        &self,
        request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        let r = request.into_inner();
        let req = crate::logs::Request {
            task_id: r.task_id,
            container: (!r.container.is_empty()).then_some(r.container),
            since: r.since,
            tail: r.tail.map(|t| t as usize),
            follow: r.follow,
        };
        let rx = crate::logs::serve(&self.agent, req)?;
        let events = ReceiverStream::new(rx).map(|l| {
            Ok(pb::LogEvent {
                timestamp: l.timestamp,
                container: l.container,
                stream: l.stream.as_str().to_string(),
                message: l.message,
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    type ExecStream = ExecStream;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = request.into_inner();
        let start = crate::exec::start(&mut inbound).await?;
        let session = self.agent.exec(&start).await?;
        let container = match start.container.as_str() {
            "" => self
                .agent
                .record(&start.task_id)
                .and_then(|r| r.containers.first().map(|c| c.name.clone()))
                .unwrap_or_default(),
            c => c.to_string(),
        };
        let rx = crate::exec::relay(&self.agent, start.task_id, container, session, inbound);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let (registered, remaining) = self.resources.compute(&self.agent.records());
        Ok(Response::new(pb::DescribeResponse {
            container_instance_id: self.instance_id.clone(),
            cluster: self.agent.cluster().to_string(),
            runtime: self.agent.runtime().kind().to_string(),
            version: self.version.clone(),
            registered_resources: resources(&registered),
            remaining_resources: resources(&remaining),
            attributes: self.resources.attributes.clone().into_iter().collect(),
            fencing_token: self.agent.fencing_token(),
        }))
    }
}

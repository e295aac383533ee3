//! Fake agents served over real gRPC on loopback: they run nothing, report every task RUNNING at
//! once, and remember the StartTask requests they were sent, so a test can check what a
//! controller asked for and a benchmark can measure a controller without real tasks.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_server::{Agent, AgentServer};
use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// An agent that runs nothing and reports every task RUNNING at once.
#[derive(Clone)]
pub struct FakeAgent {
    tasks: Arc<Mutex<HashMap<String, pb::TaskState>>>,
    updates: broadcast::Sender<pb::TaskState>,
    /// Every StartTask request received (through StartTask or StartTasks), in order.
    started: Arc<Mutex<Vec<pb::StartTaskRequest>>>,
    /// The task id of every StopTask request received, in order.
    stopped: Arc<Mutex<Vec<String>>>,
}

impl Default for FakeAgent {
    fn default() -> Self {
        Self {
            tasks: Arc::default(),
            updates: broadcast::channel(1024).0,
            started: Arc::default(),
            stopped: Arc::default(),
        }
    }
}

fn now_ts() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl FakeAgent {
    fn set(&self, state: pb::TaskState) -> pb::TaskState {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(state.task_id.clone(), state.clone());
        let _ = self.updates.send(state.clone());
        state
    }

    /// The StartTask requests received so far, in order.
    pub fn started(&self) -> Vec<pb::StartTaskRequest> {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The task ids of the StopTask requests received so far, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Streams `state` to watchers as if this agent ran it (a lying agent, for tests).
    pub fn report(&self, state: pb::TaskState) {
        self.set(state);
    }

    /// Starts a task: RUNNING at once (or the state of one it already has).
    fn start(&self, r: &pb::StartTaskRequest) -> pb::TaskState {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(r.clone());
        if let Some(t) = self.get(&r.task_id) {
            return t;
        }
        self.set(pb::TaskState {
            task_id: r.task_id.clone(),
            last_status: pb::TaskStatus::Running as i32,
            desired_status: pb::TaskStatus::Running as i32,
            containers: vec![pb::ContainerState {
                name: "app".into(),
                last_status: pb::TaskStatus::Running as i32,
                ..Default::default()
            }],
            created_at: Some(now_ts()),
            started_at: Some(now_ts()),
            version: 1,
            ..Default::default()
        })
    }

    fn get(&self, id: &str) -> Option<pb::TaskState> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn start_task(
        &self,
        r: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        Ok(Response::new(pb::StartTaskResponse {
            task: Some(self.start(r.get_ref())),
        }))
    }

    async fn start_tasks(
        &self,
        r: Request<pb::StartTasksRequest>,
    ) -> Result<Response<pb::StartTasksResponse>, Status> {
        let results = r
            .get_ref()
            .tasks
            .iter()
            .map(|t| capstan_proto::convert::start_result(&t.task_id, Ok(self.start(t))))
            .collect();
        Ok(Response::new(pb::StartTasksResponse { results }))
    }

    async fn stop_task(
        &self,
        r: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let r = r.into_inner();
        self.stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(r.task_id.clone());
        let Some(mut t) = self.get(&r.task_id) else {
            return Err(Status::not_found(r.task_id));
        };
        t.last_status = pb::TaskStatus::Stopped as i32;
        t.stopped_at = Some(now_ts());
        t.version += 1;
        Ok(Response::new(pb::StopTaskResponse {
            task: Some(self.set(t)),
        }))
    }

    async fn list_tasks(
        &self,
        _r: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    type TaskLogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogEvent, Status>> + Send>>;

    async fn task_logs(
        &self,
        _request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        // The fake runs nothing, so it has no logs.
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

    async fn exec(
        &self,
        _request: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(Status::failed_precondition(
            "the fake agent runs nothing: there is nothing to exec in",
        ))
    }

    type WatchTasksStream = EventStream;

    async fn watch_tasks(
        &self,
        _r: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let mut rx = self.updates.subscribe();
        let snapshot: Vec<pb::TaskState> = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let (tx, out) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let first = pb::TaskEvent {
                event: Some(pb::task_event::Event::Snapshot(pb::TaskSnapshot {
                    tasks: snapshot,
                })),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            while let Ok(t) = rx.recv().await {
                let ev = pb::TaskEvent {
                    event: Some(pb::task_event::Event::Update(t)),
                };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn describe(
        &self,
        _r: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(pb::DescribeResponse::default()))
    }
}

/// Fake agents served on loopback.
pub struct FakeAgents {
    /// Their gRPC endpoints.
    pub endpoints: Vec<String>,
    /// The agents, in the order of `endpoints`.
    pub agents: Vec<FakeAgent>,
}

impl FakeAgents {
    /// How many of them a client follows (has a WatchTasks stream open on).
    pub fn followed(&self) -> usize {
        self.agents
            .iter()
            .filter(|a| a.updates.receiver_count() > 0)
            .count()
    }
}

/// Serves `n` fake agents on loopback until `cancel` fires.
pub async fn serve_fake_agents(
    n: usize,
    cancel: &CancellationToken,
) -> std::io::Result<FakeAgents> {
    let mut endpoints = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        endpoints.push(format!("http://{}", listener.local_addr()?));
        let agent = FakeAgent::default();
        agents.push(agent.clone());
        let cancel = cancel.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServer::new(agent))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move { cancel.cancelled().await },
                ),
        );
    }
    Ok(FakeAgents { endpoints, agents })
}

//! `Agents::start_many` against an agent from before StartTasks: it falls back to StartTask per
//! task, and remembers to for that agent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capstan_agent_client::{AgentApi, Agents};
use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_server::{Agent, AgentServer};
use futures::Stream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Answers StartTask; StartTasks is UNIMPLEMENTED, as on an agent built before it existed.
#[derive(Default, Clone)]
struct OldAgent {
    batch_calls: Arc<AtomicUsize>,
    single_calls: Arc<AtomicUsize>,
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for OldAgent {
    async fn start_task(
        &self,
        r: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        self.single_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::StartTaskResponse {
            task: Some(pb::TaskState {
                task_id: r.into_inner().task_id,
                last_status: pb::TaskStatus::Pending as i32,
                ..Default::default()
            }),
        }))
    }

    async fn start_tasks(
        &self,
        _r: Request<pb::StartTasksRequest>,
    ) -> Result<Response<pb::StartTasksResponse>, Status> {
        self.batch_calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::unimplemented("StartTasks"))
    }

    async fn stop_task(
        &self,
        _r: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_tasks(
        &self,
        _r: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        Ok(Response::new(pb::ListTasksResponse::default()))
    }

    type TaskLogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogEvent, Status>> + Send>>;

    async fn task_logs(
        &self,
        _request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

    async fn exec(
        &self,
        _request: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type WatchTasksStream = Events;

    async fn watch_tasks(
        &self,
        _r: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn describe(
        &self,
        _r: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(pb::DescribeResponse::default()))
    }
}

fn requests(ids: &[&str]) -> Vec<pb::StartTaskRequest> {
    ids.iter()
        .map(|id| pb::StartTaskRequest {
            task_id: id.to_string(),
            ..Default::default()
        })
        .collect()
}

#[tokio::test]
async fn an_agent_without_start_tasks_gets_one_start_task_per_task() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let agent = OldAgent::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(agent.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let agents = Agents::new(None);

    let started: Vec<String> = agents
        .start_many(&endpoint, requests(&["a", "b", "c"]))
        .await
        .into_iter()
        .map(|r| r.expect("started through StartTask").task_id)
        .collect();
    assert_eq!(started, ["a", "b", "c"], "one result per task, in order");
    assert_eq!(agent.batch_calls.load(Ordering::SeqCst), 1);
    assert_eq!(agent.single_calls.load(Ordering::SeqCst), 3);

    // Remembered: the next batch for this agent goes straight to StartTask.
    let again = agents.start_many(&endpoint, requests(&["d", "e"])).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert_eq!(agent.batch_calls.load(Ordering::SeqCst), 1);
    assert_eq!(agent.single_calls.load(Ordering::SeqCst), 5);
}

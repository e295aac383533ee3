//! A pool of agent clients, one lazily connected channel per endpoint, behind [`AgentApi`].
//!
//! Contract:
//! - every unary call runs under [`AGENT_CALL_TIMEOUT`] and fails as an [`AgentCallError`];
//! - StopTask of a task the agent does not have succeeds (stopping is idempotent);
//! - StartTasks falls back to StartTask per task for an agent that answers UNIMPLEMENTED, and
//!   remembers that for the endpoint;
//! - with TLS configured, an `http://` endpoint is refused, never dialled in plain text.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_client::AgentClient;
use capstan_proto::tls::{Channels, TlsFiles};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tonic::transport::Channel;

/// Timeout of one unary agent call.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An agent's task stream: a snapshot first, then updates.
pub type TaskEvents = BoxStream<'static, Result<pb::TaskEvent, tonic::Status>>;

/// Why an agent call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentCallError {
    /// The endpoint is malformed, TLS files are unreadable, or plain text was refused.
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

/// The agent calls a controller makes; [`Agents`] makes them over gRPC.
pub trait AgentApi: Send + Sync + 'static {
    /// Starts one task on the agent at `endpoint`.
    fn start<'a>(
        &'a self,
        endpoint: &'a str,
        req: pb::StartTaskRequest,
    ) -> BoxFuture<'a, Result<pb::TaskState, AgentCallError>>;

    /// Starts several tasks on the agent at `endpoint`; one result per request, in order.
    fn start_many<'a>(
        &'a self,
        endpoint: &'a str,
        reqs: Vec<pb::StartTaskRequest>,
    ) -> BoxFuture<'a, Vec<Result<pb::TaskState, AgentCallError>>>;

    /// Stops a task on the agent at `endpoint`; one it does not have counts as stopped.
    fn stop<'a>(
        &'a self,
        endpoint: &'a str,
        req: pb::StopTaskRequest,
    ) -> BoxFuture<'a, Result<(), AgentCallError>>;

    /// Opens the agent's task stream.
    fn watch<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<TaskEvents, AgentCallError>>;
}

/// gRPC clients of the agents, one channel per endpoint.
pub struct Agents {
    channels: Channels,
    /// Agents that answered StartTasks with UNIMPLEMENTED.
    single_only: Mutex<HashSet<String>>,
}

impl Agents {
    /// A pool; with `tls`, calls use mutual TLS and plain-text endpoints are refused.
    pub fn new(tls: Option<TlsFiles>) -> Self {
        Self {
            channels: Channels::new(tls),
            single_only: Mutex::new(HashSet::new()),
        }
    }

    /// The client for `endpoint` (connected lazily).
    pub fn client(&self, endpoint: &str) -> Result<AgentClient<Channel>, AgentCallError> {
        let channel = self
            .channels
            .get(endpoint)
            .map_err(|e| AgentCallError::Connect {
                endpoint: endpoint.to_string(),
                message: e.to_string(),
            })?;
        Ok(AgentClient::new(channel))
    }

    fn single_only(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.single_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn start_one(
        &self,
        endpoint: &str,
        req: pb::StartTaskRequest,
    ) -> Result<pb::TaskState, AgentCallError> {
        let mut c = self.client(endpoint)?;
        timed(endpoint, c.start_task(req))
            .await
            .map(|r| r.task.unwrap_or_default())
    }

    async fn start_batch(
        &self,
        endpoint: &str,
        reqs: Vec<pb::StartTaskRequest>,
    ) -> Vec<Result<pb::TaskState, AgentCallError>> {
        let batch = reqs.len() > 1 && !self.single_only().contains(endpoint);
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
                    self.single_only().insert(endpoint.to_string());
                }
                Err(e) => return vec![Err(e); n],
            }
        }
        futures::future::join_all(reqs.into_iter().map(|r| self.start_one(endpoint, r))).await
    }

    async fn stop_one(
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

    async fn watch_one(&self, endpoint: &str) -> Result<TaskEvents, AgentCallError> {
        let mut c = self.client(endpoint)?;
        // Opening the stream waits for the agent's headers only; the stream itself has no deadline.
        let stream = timed(endpoint, c.watch_tasks(pb::WatchTasksRequest {})).await?;
        Ok(stream.boxed())
    }
}

impl AgentApi for Agents {
    fn start<'a>(
        &'a self,
        endpoint: &'a str,
        req: pb::StartTaskRequest,
    ) -> BoxFuture<'a, Result<pb::TaskState, AgentCallError>> {
        self.start_one(endpoint, req).boxed()
    }

    fn start_many<'a>(
        &'a self,
        endpoint: &'a str,
        reqs: Vec<pb::StartTaskRequest>,
    ) -> BoxFuture<'a, Vec<Result<pb::TaskState, AgentCallError>>> {
        self.start_batch(endpoint, reqs).boxed()
    }

    fn stop<'a>(
        &'a self,
        endpoint: &'a str,
        req: pb::StopTaskRequest,
    ) -> BoxFuture<'a, Result<(), AgentCallError>> {
        self.stop_one(endpoint, req).boxed()
    }

    fn watch<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<TaskEvents, AgentCallError>> {
        self.watch_one(endpoint).boxed()
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

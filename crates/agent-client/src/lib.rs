//! How the control plane talks to node agents, in one place: a pool of gRPC clients behind the
//! [`AgentApi`] trait (so controllers can be tested against fake agents), the one builder of
//! StartTask and StopTask requests, and the one reader of an agent's state dir that others need.

pub mod pool;
pub mod requests;
pub mod state;

pub use pool::{AGENT_CALL_TIMEOUT, AgentApi, AgentCallError, Agents, TaskEvents};
pub use requests::{start_request, stop_request};

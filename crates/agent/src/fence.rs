//! Which fencing tokens the agent believes. A token is the create revision of the scheduler's
//! election key, so a caller that merely claims a higher one (say u64::MAX) could otherwise
//! lock the real scheduler out for good. A token no higher than the highest already accepted
//! needs no check (the agent's own table refuses lower ones); a higher one is accepted only if
//! it is the create revision of the current leader's key under `elections/scheduler/` in etcd —
//! the lowest create revision there, as etcd's election API decides. While etcd cannot be
//! read, higher tokens are refused as unavailable: no new leader can be elected then either.

use capstan_store::Store;
use tokio::sync::watch;

use crate::agent::Agent;

/// How fencing tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FencingCheck {
    /// A new higher token must be the scheduler leader's election revision in etcd.
    Election,
    /// Any higher token is believed (tests that drive an agent without a scheduler).
    None,
}

/// Why a token was not believed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The token is not the current leader's.
    #[error(
        "fencing token {token} is not the scheduler leader's (its election revision is {leader:?}): refused"
    )]
    Forged {
        /// The token offered.
        token: u64,
        /// The leader's revision, if there is a leader.
        leader: Option<i64>,
    },
    /// etcd could not be read to check it.
    #[error("cannot check fencing token {token} against the scheduler's election: {why}")]
    Unverifiable {
        /// The token offered.
        token: u64,
        /// Why.
        why: String,
    },
}

impl From<FenceError> for tonic::Status {
    fn from(e: FenceError) -> Self {
        match &e {
            FenceError::Forged { .. } => tonic::Status::permission_denied(e.to_string()),
            FenceError::Unverifiable { .. } => tonic::Status::unavailable(e.to_string()),
        }
    }
}

/// The agent's check of new fencing tokens.
#[derive(Clone)]
pub struct Fence {
    mode: FencingCheck,
    store: watch::Receiver<Option<Store>>,
    election: String,
}

impl Fence {
    /// A check in `mode` against the election keys under `election` (with a trailing `/`),
    /// read through the store once `store` has one.
    pub fn new(
        mode: FencingCheck,
        store: watch::Receiver<Option<Store>>,
        election: String,
    ) -> Self {
        Self {
            mode,
            store,
            election,
        }
    }

    /// Whether `token` may be used with `agent` (a lower one is refused later by the agent).
    pub async fn admit(&self, agent: &Agent, token: u64) -> Result<(), FenceError> {
        if self.mode == FencingCheck::None || token <= agent.fencing_token() {
            return Ok(());
        }
        let store = self.store.borrow().clone();
        let Some(store) = store else {
            return Err(FenceError::Unverifiable {
                token,
                why: "etcd has not been reached yet".into(),
            });
        };
        let listing = store
            .list(&self.election)
            .await
            .map_err(|e| FenceError::Unverifiable {
                token,
                why: e.to_string(),
            })?;
        let leader = listing.kvs.iter().map(|kv| kv.create_revision).min();
        if leader.and_then(|r| u64::try_from(r).ok()) == Some(token) {
            Ok(())
        } else {
            tracing::warn!(
                token,
                ?leader,
                "refused a fencing token that is not the scheduler leader's"
            );
            metrics::counter!("capstan_agent_forged_fencing_tokens_total").increment(1);
            Err(FenceError::Forged { token, leader })
        }
    }
}

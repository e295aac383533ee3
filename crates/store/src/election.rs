//! Leader election through etcd's election API, with a lease this process keeps alive.
//!
//! The winner holds a [`Claim`]: the leader key and the revision it was created at. Every
//! controller write is a transaction that also compares that key's create revision
//! ([`Claim::compare`]), so once the lease is gone — process killed, network cut, lease revoked —
//! the old leader's writes fail. The same revision is the fencing token passed to agents: a later
//! leader always has a higher one.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, ResignOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Store;
use crate::lease::KeptLease;

/// Smallest lease TTL etcd grants with its default election timeout.
pub const MIN_TTL_SECS: i64 = 2;

/// Proof of leadership at one moment: check it is still current before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Election name (the key prefix candidates campaign on).
    pub election: String,
    /// Identity of the holder (`--id`).
    pub holder: String,
    /// The leader key.
    pub key: String,
    /// Create revision of the leader key: the fencing token.
    pub revision: i64,
    /// Lease the leader key is bound to.
    pub lease: i64,
}

impl Store {
    /// Who leads `controller` now, as etcd says: the value of its oldest election key (the
    /// candidate etcd's election API elects), or none when no replica campaigns.
    pub async fn leader(&self, controller: &str) -> crate::Result<Option<String>> {
        let l = self.list(&self.keys().election(controller)).await?;
        Ok(l.kvs
            .iter()
            .min_by_key(|kv| kv.create_revision)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}

impl Claim {
    /// The compare every fenced write carries.
    pub fn compare(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.revision)
    }

    /// The fencing token agents compare: higher for every later leader.
    pub fn fencing_token(&self) -> u64 {
        u64::try_from(self.revision).unwrap_or(0)
    }
}

/// Who leads, as this process sees it.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Arc<Claim>>>,
}

impl Leadership {
    /// The claim if this process leads now.
    pub fn current(&self) -> Option<Arc<Claim>> {
        self.rx.borrow().clone()
    }

    /// Waits until this process leads; returns the claim.
    pub async fn acquired(&mut self) -> Option<Arc<Claim>> {
        let r = self.rx.wait_for(Option::is_some).await.ok()?;
        r.clone()
    }

    /// Waits until this process no longer holds `claim`.
    pub async fn lost(&mut self, claim: &Claim) {
        let _ = self.rx.wait_for(|c| c.as_deref() != Some(claim)).await;
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Claim>>> {
        self.rx.clone()
    }

    /// A leadership that never leads (for tools that only read).
    pub fn never() -> Self {
        let (_tx, rx) = watch::channel(None);
        Self { rx }
    }

    /// A leadership that holds `claim` for as long as the returned sender lives (tests, tools).
    pub fn fixed(claim: Claim) -> (Self, watch::Sender<Option<Arc<Claim>>>) {
        let (tx, rx) = watch::channel(Some(Arc::new(claim)));
        (Self { rx }, tx)
    }
}

/// Settings for one candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Election name, e.g. `/capstan/elections/scheduler`.
    pub election: String,
    /// This replica's identity, stored as the election value.
    pub id: String,
    /// Lease TTL in seconds (at least [`MIN_TTL_SECS`]).
    pub ttl_secs: i64,
}

/// Starts campaigning in the background until `cancel` fires; on cancel it resigns.
pub fn campaign(
    store: Store,
    candidate: Candidate,
    cancel: CancellationToken,
) -> (Leadership, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let handle = tokio::spawn(run(store, candidate, tx, cancel));
    (Leadership { rx }, handle)
}

async fn run(
    store: Store,
    cand: Candidate,
    tx: watch::Sender<Option<Arc<Claim>>>,
    cancel: CancellationToken,
) {
    let ttl = cand.ttl_secs.max(MIN_TTL_SECS);
    let pause = Duration::from_millis(200);
    while !cancel.is_cancelled() {
        let lease = match KeptLease::grant(&store, ttl, &cancel).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "election: cannot grant lease; retrying");
                sleep_or_cancel(pause, &cancel).await;
                continue;
            }
        };
        let lease_lost = lease.lost.clone();

        let claim = loop {
            let mut c = store.client();
            tokio::select! {
                _ = cancel.cancelled() => break None,
                _ = lease_lost.cancelled() => break None,
                r = c.campaign(cand.election.as_str(), cand.id.as_str(), lease.id) => match r {
                    Ok(resp) => match resp.leader() {
                        Some(l) => break Some(Claim {
                            election: cand.election.clone(),
                            holder: cand.id.clone(),
                            key: String::from_utf8_lossy(l.key()).into_owned(),
                            revision: l.rev(),
                            lease: lease.id,
                        }),
                        None => tracing::warn!("election: campaign answered without a leader key"),
                    },
                    Err(e) => tracing::warn!(error = %e, "election: campaign failed; retrying"),
                },
            }
            sleep_or_cancel(pause, &cancel).await;
        };

        if let Some(claim) = claim {
            tracing::info!(election = %claim.election, id = %claim.holder, token = claim.revision, "became leader");
            let claim = Arc::new(claim);
            tx.send_replace(Some(claim.clone()));
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = lease_lost.cancelled() => {}
                _ = key_deleted(&store, &claim) => {}
            }
            tx.send_replace(None);
            tracing::info!(election = %claim.election, id = %claim.holder, "stepped down");
            if cancel.is_cancelled() {
                let leader = etcd_client::LeaderKey::new()
                    .with_name(claim.election.as_str())
                    .with_key(claim.key.as_str())
                    .with_rev(claim.revision)
                    .with_lease(lease.id);
                let mut c = store.client();
                let _ = tokio::time::timeout(
                    store.call_timeout(),
                    c.resign(Some(ResignOptions::new().with_leader(leader))),
                )
                .await;
            }
        }
        // Revoking drops our candidate key at once, so the next leader need not wait for the TTL.
        lease.revoke(&store).await;
    }
    tx.send_replace(None);
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Resolves once the leader key is deleted (lease revoked or expired, or the key removed by hand).
async fn key_deleted(store: &Store, claim: &Claim) {
    loop {
        let mut client = store.client();
        let opts = WatchOptions::new().with_start_revision(claim.revision);
        if let Ok(mut stream) = client.watch(claim.key.as_str(), Some(opts)).await {
            while let Ok(Some(resp)) = stream.message().await {
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return;
                }
                if resp.canceled() {
                    break;
                }
            }
        }
        // The watch broke: check directly before watching again.
        match store.holds(claim).await {
            Ok(false) => return,
            Ok(true) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

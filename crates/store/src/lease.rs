//! Leases this process keeps alive, and knows when it may have lost.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Store;
use crate::error::{Result, StoreError};

/// A lease with a background keep-alive. `lost` is cancelled once the lease may have expired.
#[derive(Debug)]
pub struct KeptLease {
    /// The lease id.
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Cancelled when the lease may have expired (no refresh confirmed within its TTL) or etcd
    /// says it is gone.
    pub lost: CancellationToken,
    keeper: JoinHandle<()>,
}

impl KeptLease {
    /// Grants a lease of `ttl` seconds and keeps it alive until `cancel` or loss.
    pub async fn grant(store: &Store, ttl: i64, cancel: &CancellationToken) -> Result<Self> {
        let resp = store
            .call("lease_grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        let lost = CancellationToken::new();
        let keeper = tokio::spawn(keep_alive(
            store.clone(),
            resp.id(),
            resp.ttl(),
            lost.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            id: resp.id(),
            ttl: resp.ttl(),
            lost,
            keeper,
        })
    }

    /// Stops the keep-alive and revokes the lease, deleting every key bound to it.
    pub async fn revoke(self, store: &Store) {
        self.lost.cancel();
        self.keeper.abort();
        let id = self.id;
        let r: Result<_, StoreError> = store
            .call(
                "lease_revoke",
                |mut c| async move { c.lease_revoke(id).await },
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(lease = id, error = %e, "lease revoke failed; it expires on its own");
        }
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Keeps `lease` alive; cancels `lost` once it may have expired (no refresh within its TTL) or
/// etcd says it is gone.
pub(crate) async fn keep_alive(
    store: Store,
    lease: i64,
    ttl: i64,
    lost: CancellationToken,
    cancel: CancellationToken,
) {
    let period = Duration::from_millis(u64::try_from(ttl * 1000 / 3).unwrap_or(500));
    // Until etcd confirms a refresh, the lease is only known to last `ttl` from the grant.
    let mut expires = Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(2));
    let margin = period / 4;
    'reopen: while !lost.is_cancelled() && !cancel.is_cancelled() {
        let mut client = store.client();
        let opened = tokio::time::timeout(period, client.lease_keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            _ => {
                if Instant::now() + margin >= expires {
                    break 'reopen;
                }
                tokio::time::sleep(period / 4).await;
                continue 'reopen;
            }
        };
        loop {
            let sent = Instant::now();
            let ok = async {
                keeper.keep_alive().await.ok()?;
                stream.message().await.ok().flatten()
            };
            match tokio::time::timeout(period, ok).await {
                Ok(Some(resp)) if resp.ttl() > 0 => {
                    expires = sent + Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
                }
                Ok(Some(_)) => {
                    tracing::warn!(lease, "election: lease expired or revoked");
                    break 'reopen;
                }
                _ => {
                    if Instant::now() + margin >= expires {
                        break 'reopen;
                    }
                    continue 'reopen;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if Instant::now() + margin >= expires {
                break 'reopen;
            }
        }
    }
    if !cancel.is_cancelled() {
        tracing::warn!(lease, "election: lease lost; stepping down");
    }
    lost.cancel();
}

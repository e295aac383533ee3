//! The registrar's IO: health checks of targets and fenced writes of target group status (the
//! data plane is programmed from that status by `dataplane::serve`). It decides nothing: targets come from `capstan_plan::targets`.

use std::time::Duration;

use capstan_core::lb::{LbProtocol, TargetGroup, TargetGroupStatusDoc};
use capstan_plan::targets::Failure;
use capstan_store::{Claim, Store, StoreError, Write};

use crate::dataplane::DataPlane;
use crate::snapshot::Caches;

/// The registrar's writer and caller.
pub struct Executor {
    /// The store.
    pub store: Store,
    /// Caches (for the status documents as written).
    pub caches: Caches,
    /// The data plane, when there is one.
    pub data_plane: Option<Box<dyn DataPlane>>,
}

impl Executor {
    /// Puts a status document when it changed (ignoring `updatedAt`).
    pub async fn put_status(
        &self,
        claim: &Claim,
        tg: &str,
        doc: TargetGroupStatusDoc,
        now: f64,
    ) -> Result<(), StoreError> {
        let keys = self.store.keys();
        let old = self.caches.status_of(keys, tg);
        let key = keys.target_group_status(tg);
        self.store
            .put_status_if_changed(&key, old.as_ref(), doc, now, Some(claim))
            .await?;
        Ok(())
    }

    /// Deletes the status document of a group that no longer exists.
    pub async fn delete_status(&self, claim: &Claim, tg: &str) -> Result<(), StoreError> {
        let key = self.store.keys().target_group_status(tg);
        if self.caches.status.get(&key).is_some() {
            self.store
                .commit(Write::new().delete(&key), Some(claim))
                .await?;
        }
        Ok(())
    }
}

/// One health check of `host:port` with the group's settings.
pub async fn check(
    http: &reqwest::Client,
    tg: &TargetGroup,
    host: &str,
    port: u16,
) -> Result<(), Failure> {
    let hc = tg.effective_health_check();
    let timeout = Duration::from_secs(u64::from(hc.timeout_seconds.unwrap_or(6)));
    let port = match hc.port.as_deref() {
        Some("traffic-port") | None => port,
        Some(p) => p.parse().unwrap_or(port),
    };
    match hc.protocol.unwrap_or_default() {
        LbProtocol::Tcp => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(Failure::ConnectionFailed),
                Err(_) => Err(Failure::Timeout),
            }
        }
        LbProtocol::Http => {
            let url = format!("http://{host}:{port}{}", hc.path.as_deref().unwrap_or("/"));
            match http.get(&url).timeout(timeout).send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    if hc.matcher.as_ref().is_none_or(|m| m.matches(code)) {
                        Ok(())
                    } else {
                        Err(Failure::ResponseCodeMismatch)
                    }
                }
                Err(e) if e.is_timeout() => Err(Failure::Timeout),
                Err(_) => Err(Failure::ConnectionFailed),
            }
        }
    }
}

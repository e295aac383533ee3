//! Service events (`/capstan/events/<cluster>/<service>/<eventId>`), shared by the controllers.

use std::collections::HashMap;
use std::sync::Mutex;

use capstan_core::keys::Family;
use capstan_store::{Claim, Store, StoreError, Write};

/// Events kept per service (ECS shows the latest 100).
pub const EVENTS_KEPT: usize = 100;

pub use crate::clock::now;

/// Records service events, fenced, skipping a message that repeats the service's previous one.
pub struct Events {
    store: Store,
    last: Mutex<HashMap<(String, String), String>>,
}

impl Events {
    /// A recorder writing through `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records one event and trims the service's events to the latest [`EVENTS_KEPT`].
    pub async fn record(
        &self,
        claim: &Claim,
        cluster: &str,
        service: &str,
        message: String,
    ) -> Result<(), StoreError> {
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let k = (cluster.to_string(), service.to_string());
            if last.get(&k) == Some(&message) {
                return Ok(());
            }
            last.insert(k, message.clone());
        }
        // The log carries every event too, so a controller's log tells its story on its own.
        tracing::info!(%cluster, %service, event = %message, "service event");
        let at = now();
        let id = format!(
            "{:020}-{}",
            (at * 1e6) as u64,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ev = capstan_core::ServiceEvent {
            id: id.clone(),
            created_at: at,
            message,
        };
        let keys = self.store.keys();
        self.store
            .commit(
                Write::new().put_json(&keys.event(cluster, service, &id), &ev),
                Some(claim),
            )
            .await?;
        let listing = self
            .store
            .list(&keys.list(Family::Events, &[cluster, service]))
            .await?;
        if listing.kvs.len() > EVENTS_KEPT {
            let mut w = Write::new();
            for kv in &listing.kvs[..listing.kvs.len() - EVENTS_KEPT] {
                w = w.delete(&kv.key);
            }
            self.store.commit(w, Some(claim)).await?;
        }
        Ok(())
    }
}

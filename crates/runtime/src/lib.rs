//! What every Capstan controller binary shares.
//!
//! - [`WorkQueue`]: keys, deduplicated, one reconcile per key at a time, per-key backoff;
//! - [`Controller::run`]: reconcile while leading, followers keep caches warm;
//! - [`Runtime`]: connects to etcd, serves the admin endpoints, campaigns for leadership and
//!   turns SIGTERM/SIGINT into a graceful shutdown that resigns;
//! - [`CommonArgs`], [`telemetry::init`].

pub mod admin;
pub mod args;
pub mod clock;
pub mod controller;
pub mod events;
pub mod leading;
pub mod queue;
pub mod telemetry;

use std::net::SocketAddr;
use std::time::Duration;

use capstan_core::keys::Family;
use capstan_store::{Cache, Candidate, Decoder, Leadership, Store, StoreError, campaign};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use admin::Readiness;
pub use args::{AdminArgs, CommonArgs, ElectionArgs, LogArgs, StoreArgs};
pub use clock::now;
pub use controller::{Action, Controller, ControllerConfig, ReconcileError};
pub use events::Events;
pub use leading::spawn_while_leading;
pub use queue::{BackoffConfig, WorkQueue};
pub use telemetry::{LogFormat, TelemetryGuard};

/// How often a controller's watch caches relist from etcd, the safety net under the watch (a
/// missed event is repaired within this).
pub const CACHE_RESYNC: Duration = Duration::from_secs(300);

/// Why a controller process could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// etcd could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin server could not bind.
    #[error("cannot serve the admin endpoints on {addr}: {source}")]
    Admin {
        /// Requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something the binary needs could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Decoder for spec documents: the same strict parse and validation as the API.
pub fn spec_decoder<T: capstan_core::Spec + Send + Sync + 'static>() -> capstan_store::Decoder<T> {
    std::sync::Arc::new(|key, bytes| {
        let mut doc = capstan_core::accept::<T>(bytes)
            .map(|a| a.value)
            .map_err(|e| e.to_string())?;
        // The key's last segments name the object; the document must agree.
        let arity = T::FAMILY.arity();
        let mut parts: Vec<&str> = key.rsplit('/').take(arity).collect();
        parts.reverse();
        if parts.len() != arity {
            return Err(format!("malformed key {key:?}"));
        }
        doc.conform(&parts)?;
        Ok(doc)
    })
}

/// A running controller process: store, leadership, admin server and shutdown signal.
pub struct Runtime {
    /// The store.
    pub store: Store,
    /// This replica's leadership.
    pub leadership: Leadership,
    /// Cancelled on SIGTERM/SIGINT or [`Runtime::shutdown`].
    pub cancel: CancellationToken,
    /// Readiness checks served on `/readyz`.
    pub readiness: Readiness,
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// This replica's identity.
    pub id: String,
    election: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Runtime {
    /// Connects to etcd, serves the admin endpoints and starts campaigning for `controller`.
    pub async fn start(controller: &str, args: &CommonArgs) -> Result<Self, RuntimeError> {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        let store = Store::connect(&args.store_config()).await?;
        let readiness = Readiness::default();
        let addr = args.admin.admin_addr;
        let (admin_addr, admin) = admin::serve(addr, readiness.clone(), cancel.clone())
            .await
            .map_err(|source| RuntimeError::Admin { addr, source })?;
        let id = args.election.replica_id();
        tracing::info!(%controller, %id, admin = %admin_addr, "started");
        let (leadership, election) = campaign(
            store.clone(),
            Candidate {
                election: store.keys().election(controller),
                id: id.clone(),
                ttl_secs: i64::try_from(args.election.election_ttl).unwrap_or(5),
            },
            cancel.clone(),
        );
        Ok(Self {
            store,
            leadership,
            cancel,
            readiness,
            admin_addr,
            id,
            election,
            admin,
        })
    }

    /// Starts a watch cache of one key family, relisted every [`CACHE_RESYNC`], and makes
    /// `/readyz` wait for its first list.
    pub fn cache<T: Send + Sync + 'static>(&self, family: Family, decode: Decoder<T>) -> Cache<T> {
        let resync = CACHE_RESYNC;
        let prefix = self.store.keys().list(family, &[]);
        let (cache, _task) = Cache::spawn(
            self.store.clone(),
            prefix.clone(),
            decode,
            resync,
            self.cancel.clone(),
        );
        let c = cache.clone();
        self.readiness
            .add(&format!("cache {prefix}"), move || c.is_ready());
        cache
    }

    /// Runs `controller` while this replica leads until SIGTERM/SIGINT, then shuts down. A
    /// failed reconcile's key is retried as its error says ([`ReconcileError::action`]) and
    /// counted in `capstan_reconcile_errors_total{controller, reason}`.
    pub async fn serve<K, C, R, E>(
        self,
        controller: Controller<K>,
        ctx: std::sync::Arc<C>,
        reconcile: R,
    ) where
        K: Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static,
        C: Send + Sync + 'static,
        E: ReconcileError,
        R: Fn(
                K,
                std::sync::Arc<capstan_store::Claim>,
                std::sync::Arc<C>,
            ) -> futures::future::BoxFuture<'static, Result<Action, E>>
            + Send
            + Sync
            + 'static,
    {
        let name = controller.name().to_string();
        controller
            .run(
                self.leadership.clone(),
                ctx,
                reconcile,
                move |_k, e: &E, _c| {
                    metrics::counter!("capstan_reconcile_errors_total", "controller" => name.clone(), "reason" => e.metric_label())
                        .increment(1);
                    e.action()
                },
                self.cancel.clone(),
            )
            .await;
        self.shutdown().await;
    }

    /// Stops: resigns leadership and stops the admin server.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.election.await;
        let _ = self.admin.await;
        tracing::info!(id = %self.id, "stopped");
    }
}

/// Cancels `cancel` on SIGTERM or SIGINT.
pub fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
}

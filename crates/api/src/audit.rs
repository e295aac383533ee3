//! The audit log: one JSON line per mutating call and per refused call, written to a file or
//! stdout before the answer goes back, and copied to etcd under `audit/<epoch-ms>-<requestId>`
//! for about a day.
//!
//! The line is the record of truth: it is written (and flushed) synchronously. The etcd copy is
//! for `etcdctl get --prefix /capstan/audit/` across replicas; it is written in the background,
//! in batches, bound to a lease granted once an hour with a TTL of 25 hours, so a record stays
//! between 24 and 25 hours. When etcd is unreachable or the queue is full, the etcd copy of a
//! record is dropped (counted in `capstan_audit_dropped_total`); the line is not.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_store::{Store, Write};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a lease for the etcd copies lives, seconds (a day and the hour it is used for).
const LEASE_TTL_SECS: i64 = 25 * 3600;
/// How long one lease is used for new records.
const LEASE_USE: Duration = Duration::from_secs(3600);
/// Records queued for etcd at most.
const QUEUE: usize = 10_000;
/// Records per etcd transaction at most.
const BATCH: usize = 100;

/// One audited call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When the call was answered (RFC 3339, UTC).
    pub event_time: String,
    /// The request id (also sent back as `x-capstan-request-id`).
    pub request_id: String,
    /// Who called (`capstan://…`), or empty when unauthenticated.
    pub principal: String,
    /// `certificate`, `token` or `none`.
    pub authenticated_by: String,
    /// The caller's address.
    pub source_address: String,
    /// The IAM action.
    pub action: String,
    /// The resources it concerned.
    pub resources: Vec<String>,
    /// `allowed` (and succeeded), `failed` (allowed, then failed) or `denied`.
    pub outcome: String,
    /// The exception, when not allowed or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// What the exception said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Why authorization decided as it did.
    pub reason: String,
    /// `event_time` in epoch milliseconds, for the etcd key.
    #[serde(skip)]
    pub event_ms: u128,
}

impl Record {
    /// A record stamped now.
    pub fn now(request_id: &str, source: Option<SocketAddr>) -> Self {
        let now = SystemTime::now();
        Self {
            event_ms: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default(),
            event_time: humantime::format_rfc3339_millis(now).to_string(),
            request_id: request_id.to_string(),
            principal: String::new(),
            authenticated_by: "none".into(),
            source_address: source.map(|a| a.to_string()).unwrap_or_default(),
            action: String::new(),
            resources: vec![],
            outcome: String::new(),
            error_code: None,
            error_message: None,
            reason: String::new(),
        }
    }
}

type Sink = Arc<Mutex<Box<dyn std::io::Write + Send>>>;

/// Where audit records go.
#[derive(Clone, Default)]
pub struct Audit {
    sink: Option<Sink>,
    etcd: Option<mpsc::Sender<Record>>,
}

impl Audit {
    /// Records to `destination` (a path, `-` for stdout, `off` for none) and, with `store`, to
    /// etcd until `cancel`.
    pub fn start(
        destination: &str,
        store: Option<Store>,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let sink: Option<Box<dyn std::io::Write + Send>> = match destination {
            "off" => None,
            "-" => Some(Box::new(std::io::stdout())),
            path => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        let etcd = store.map(|store| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(copy_to_etcd(store, rx, cancel));
            tx
        });
        Ok(Self {
            sink: sink.map(|s| Arc::new(Mutex::new(s))),
            etcd,
        })
    }

    /// Records `r`.
    pub fn record(&self, r: Record) {
        if let Some(sink) = &self.sink {
            let line = serde_json::to_string(&r).unwrap_or_default();
            let mut w = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                tracing::error!(error = %e, "cannot write the audit log");
                metrics::counter!("capstan_audit_write_errors_total").increment(1);
            }
        }
        if let Some(tx) = &self.etcd
            && tx.try_send(r).is_err()
        {
            metrics::counter!("capstan_audit_dropped_total").increment(1);
        }
    }
}

fn key_of(prefix: &str, r: &Record) -> String {
    format!("{prefix}{:013}-{}", r.event_ms, r.request_id)
}

async fn copy_to_etcd(store: Store, mut rx: mpsc::Receiver<Record>, cancel: CancellationToken) {
    let prefix = store.keys().audit();
    let mut lease: Option<(i64, Instant)> = None;
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let id = match lease {
            Some((id, since)) if since.elapsed() < LEASE_USE => id,
            _ => match store.grant_lease(LEASE_TTL_SECS).await {
                Ok(id) => {
                    lease = Some((id, Instant::now()));
                    id
                }
                Err(e) => {
                    tracing::warn!(error = %e, dropped = batch.len(), "audit: cannot grant a lease in etcd");
                    metrics::counter!("capstan_audit_dropped_total").increment(batch.len() as u64);
                    continue;
                }
            },
        };
        let w = batch.iter().fold(Write::new(), |w, r| {
            w.put_json_with_lease(&key_of(&prefix, r), r, id)
        });
        if let Err(e) = store.commit(w, None).await {
            tracing::warn!(error = %e, dropped = batch.len(), "audit: cannot copy records to etcd");
            metrics::counter!("capstan_audit_dropped_total").increment(batch.len() as u64);
            // The lease may be the cause (revoked, expired): take a new one next time.
            lease = None;
        }
    }
}

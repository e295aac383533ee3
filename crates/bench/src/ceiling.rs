//! The etcd side of the scheduler bench on its own: the same task writes and watches with no
//! scheduler and no agents, so the scheduler's figure can be read against what etcd allows here.
//!
//! Each task costs what it costs in a scheduler run: its PENDING record, put in a fenced
//! transaction of [`TXN_OPS`] records that each compare the key absent, then its RUNNING record,
//! fenced and compared unchanged since then; two watches follow the prefix, one decoding whole
//! records (as the scheduler's task cache does), one reading lastStatus (as the bench's). As in the
//! scheduler, PENDING batches commit one after another and a second writer commits RUNNING
//! batches behind them. A second run leaves the watches out: what the puts alone allow.

use std::time::{Duration, Instant};

use capstan_core::keys::Family;
use capstan_core::task::Task;
use capstan_store::{Cache, Candidate, Claim, Store, Write, json_decoder};
use tokio_util::sync::CancellationToken;

use crate::Usage;
use crate::scheduler::{TaskLastStatus, until_running};

/// Records per transaction, as the scheduler writes them.
pub const TXN_OPS: usize = 100;

/// What one run measured.
#[derive(Debug)]
pub struct CeilingFigures {
    /// Tasks written.
    pub tasks: usize,
    /// Whether the two watches ran.
    pub watched: bool,
    /// From the first PENDING write to the last RUNNING record seen by the watch (without the
    /// watches: to the last RUNNING batch committed).
    pub elapsed: Duration,
    /// CPU seconds used by etcd and by this process (both writers and both watches).
    pub cpu: [f64; 2],
    /// CPU seconds the hypervisor took from the machine during the run.
    pub stolen: f64,
}

impl CeilingFigures {
    /// Tasks RUNNING per second.
    pub fn tasks_per_sec(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64()
    }
}

/// A task record as a RUNNING and a PENDING document (the PENDING one without a start time).
pub fn both_states(running: &[u8]) -> serde_json::Result<(Vec<u8>, Vec<u8>)> {
    let mut v: serde_json::Value = serde_json::from_slice(running)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("lastStatus".into(), "PENDING".into());
        o.remove("startedAt");
    }
    Ok((running.to_vec(), serde_json::to_vec(&v)?))
}

/// Watches of the task prefix like those of a scheduler run: a whole-record cache (the
/// scheduler's) and a lastStatus cache (the bench's).
struct Watches {
    full: Cache<Task>,
    status: Cache<TaskLastStatus>,
}

impl Watches {
    async fn start(store: &Store, prefix: &str, cancel: &CancellationToken) -> Self {
        let resync = Duration::from_secs(3600);
        let (full, _) = Cache::spawn(
            store.clone(),
            prefix.into(),
            json_decoder(),
            resync,
            cancel.clone(),
        );
        let (status, _) = Cache::spawn(
            store.clone(),
            prefix.into(),
            json_decoder(),
            resync,
            cancel.clone(),
        );
        full.ready().await;
        status.ready().await;
        Self { full, status }
    }
}

/// Writes `records` (key, RUNNING document, PENDING document) as described in the module docs,
/// fenced by `claim`. With `watched`, the two watches follow the prefix and the run ends when the
/// lastStatus one has seen every record RUNNING; without, it ends when the last RUNNING batch
/// commits.
pub async fn measure(
    store: &Store,
    prefix: &str,
    records: &[(String, Vec<u8>, Vec<u8>)],
    claim: &Claim,
    etcd_pid: u32,
    watched: bool,
) -> anyhow::Result<CeilingFigures> {
    let n = records.len();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let watches = match watched {
        true => Some(Watches::start(store, prefix, &cancel).await),
        false => None,
    };
    let changes = watches.as_ref().map(|w| w.status.subscribe());
    let usage = Usage::start([etcd_pid, std::process::id()]);
    let t0 = Instant::now();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, i64)>();
    let pending = async {
        for (i, chunk) in records.chunks(TXN_OPS).enumerate() {
            let mut w = Write::new();
            for (key, _, doc) in chunk {
                w = w.put(key, doc.clone()).if_absent(key);
            }
            let rev = store.commit(w, Some(claim)).await?;
            let _ = tx.send((i, rev));
        }
        drop(tx);
        anyhow::Ok(())
    };
    let running = async {
        while let Some((i, rev)) = rx.recv().await {
            let mut w = Write::new();
            for (key, doc, _) in records.chunks(TXN_OPS).nth(i).unwrap_or_default() {
                w = w.put(key, doc.clone()).if_unchanged(key, rev);
            }
            store.commit(w, Some(claim)).await?;
        }
        anyhow::Ok(())
    };
    let seen = async {
        match (&watches, changes) {
            (Some(w), Some(changes)) => until_running(&w.status, changes, n, |_| {}).await,
            _ => Ok(()),
        }
    };
    // The first failure ends the run (a failed write would leave the watch waiting).
    tokio::try_join!(pending, running, seen)?;
    let elapsed = t0.elapsed();
    let (cpu, stolen) = usage.since();
    if let Some(w) = &watches {
        // Both watches kept up: the whole-record cache holds every task too.
        w.full.wait_revision(store.revision().await?).await;
        let held = w.full.list_prefix(prefix).len();
        anyhow::ensure!(
            held == n,
            "the whole-record watch holds {held} of {n} tasks"
        );
    }
    Ok(CeilingFigures {
        tasks: n,
        elapsed,
        watched,
        cpu,
        stolen,
    })
}

/// Runs [`measure`] with the task records a scheduler run left in cluster `default`, written again
/// under clusters of their own (once with the watches, once without), fenced by a leader claim of
/// its own.
pub async fn after_scheduler_run(
    store: &Store,
    etcd_pid: u32,
) -> anyhow::Result<[CeilingFigures; 2]> {
    let keys = store.keys().clone();
    let listing = store
        .list(&keys.list(Family::Tasks, &["default"]))
        .await?
        .kvs;
    let records = |cluster: &str| {
        listing
            .iter()
            .map(|kv| {
                let id = kv.key.rsplit('/').next().unwrap_or_default();
                let (running, pending) = both_states(&kv.value)?;
                Ok((keys.task(cluster, id), running, pending))
            })
            .collect::<serde_json::Result<Vec<_>>>()
    };
    let cancel = CancellationToken::new();
    let (mut leadership, campaign) = capstan_store::campaign(
        store.clone(),
        Candidate {
            election: keys.election("bench-ceiling"),
            id: "bench".into(),
            ttl_secs: 10,
        },
        cancel.clone(),
    );
    let claim = tokio::time::timeout(Duration::from_secs(30), leadership.acquired())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("no leader claim for the ceiling run"))?;
    let mut figures = Vec::new();
    for (cluster, watched) in [("ceiling-watched", true), ("ceiling-unwatched", false)] {
        let prefix = keys.list(Family::Tasks, &[cluster]);
        let records = records(cluster)?;
        figures.push(measure(store, &prefix, &records, &claim, etcd_pid, watched).await);
    }
    cancel.cancel();
    let _ = campaign.await;
    let [watched, unwatched] =
        <[_; 2]>::try_from(figures).map_err(|_| anyhow::anyhow!("two ceiling runs expected"))?;
    Ok([watched?, unwatched?])
}

/// Prints the figures beside the raw rate of the same run.
pub fn print(f: &CeilingFigures, raw_puts_per_sec: f64) {
    let rate = f.tasks_per_sec();
    let [etcd, bench] = f.cpu;
    let what = match f.watched {
        true => "the same fenced PENDING and RUNNING puts and the same two watches",
        false => "the same fenced PENDING and RUNNING puts, no watches",
    };
    println!(
        "  etcd side alone ({what}; no scheduler, no agents): {rate:.0} tasks/s ({:.2} s); ratio {:.1}%; CPU etcd {etcd:.2} s ({:.0} µs per task), this process {bench:.2} s; stolen by the hypervisor {:.2} s",
        f.elapsed.as_secs_f64(),
        100.0 * rate / raw_puts_per_sec,
        1e6 * etcd / f.tasks as f64,
        f.stolen
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_document_differs_only_in_status_and_start_time() {
        let running = br#"{"taskArn":"a","lastStatus":"RUNNING","startedAt":1.5,"version":2}"#;
        let (r, p) = both_states(running).expect("valid json");
        assert_eq!(r, running.to_vec());
        let p: serde_json::Value = serde_json::from_slice(&p).expect("valid json");
        assert_eq!(
            p,
            serde_json::json!({"taskArn":"a","lastStatus":"PENDING","version":2})
        );
        assert!(both_states(b"not json").is_err());
    }
}

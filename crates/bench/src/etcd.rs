//! Raw etcd put throughput: puts/s for several batch sizes (one transaction per batch) and
//! concurrencies. This is the physical limit later benchmarks are measured against.

use std::time::{Duration, Instant};

use capstan_store::{Store, StoreError, Write};

/// One measured combination.
#[derive(Debug, Clone)]
pub struct Row {
    /// Puts per transaction.
    pub batch: usize,
    /// Concurrent writers.
    pub concurrency: usize,
    /// Transactions committed.
    pub txns: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Median transaction latency.
    pub p50: Duration,
    /// 99th percentile transaction latency.
    pub p99: Duration,
}

impl Row {
    /// Puts per second.
    pub fn puts_per_sec(&self) -> f64 {
        (self.txns as f64 * self.batch as f64) / self.elapsed.as_secs_f64()
    }
}

/// Measures `batch` puts per txn from `concurrency` writers for `duration`; each value has
/// `value_size` bytes (a task document is about this big).
pub async fn measure(
    store: &Store,
    batch: usize,
    concurrency: usize,
    duration: Duration,
    value_size: usize,
) -> Result<Row, StoreError> {
    let value = vec![b'x'; value_size];
    let started = Instant::now();
    let deadline = started + duration;
    let writers = (0..concurrency).map(|w| {
        let store = store.clone();
        let value = value.clone();
        async move {
            let mut latencies = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let mut write = Write::new();
                for _ in 0..batch {
                    seq += 1;
                    write = write.put(
                        &format!("/capstan-bench/b{batch}c{concurrency}/w{w}/{seq}"),
                        value.clone(),
                    );
                }
                let t = Instant::now();
                store.commit(write, None).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, StoreError>(latencies)
        }
    });
    let results = futures::future::try_join_all(writers).await?;
    let elapsed = started.elapsed();
    let mut all: Vec<Duration> = results.into_iter().flatten().collect();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let row = Row {
        batch,
        concurrency,
        txns: all.len() as u64,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    };
    Ok(row)
}

/// Deletes what [`measure`] wrote. Only once all measuring is done: a big delete leaves etcd's
/// (3.4) backend read buffer at its size, and every later transaction with a compare copies that
/// buffer — measured, a scheduler run after one went from ~13,000 to ~6,500 tasks/s.
pub async fn clean(store: &Store) -> Result<(), StoreError> {
    store.delete_prefix("/capstan-bench/").await?;
    Ok(())
}

/// Prints rows as a table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:>6} {:>12} {:>10} {:>12} {:>10} {:>10}",
        "batch", "concurrency", "txns/s", "puts/s", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:>6} {:>12} {:>10.0} {:>12.0} {:>10.2} {:>10.2}",
            r.batch,
            r.concurrency,
            r.txns as f64 / r.elapsed.as_secs_f64(),
            r.puts_per_sec(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        );
    }
}

/// What etcd's `/metrics` says about the work it has done so far.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Handled gRPC requests per method.
    pub requests: std::collections::BTreeMap<String, u64>,
}

impl Metrics {
    /// Requests handled since `before`, per method, leaving out methods with none.
    pub fn requests_since(&self, before: &Metrics) -> Vec<(String, u64)> {
        self.requests
            .iter()
            .map(|(m, n)| {
                let was = before.requests.get(m).copied().unwrap_or(0);
                (m.clone(), n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Parses Prometheus text as etcd 3.4 serves it.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("grpc_server_handled_total{")
                && let Some((labels, value)) = rest.split_once("} ")
            {
                let method = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("grpc_method=\""))
                    .map(|m| m.trim_end_matches('"').to_string());
                if let (Some(m), Ok(v)) = (method, value.trim().parse::<f64>()) {
                    *out.requests.entry(m).or_insert(0) += v as u64;
                }
            }
        }
        out
    }
}

/// Reads etcd's `/metrics` at `endpoint`.
pub async fn metrics(endpoint: &str) -> anyhow::Result<Metrics> {
    crate::install_tls_provider();
    let text = reqwest::get(format!("{endpoint}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Metrics::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_handled_requests_from_etcd_metrics() {
        let before = Metrics::parse(
            "# HELP x\n\
             etcd_disk_wal_fsync_duration_seconds_sum 0.5\n\
             etcd_disk_wal_fsync_duration_seconds_count 100\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 7\n",
        );
        let after = Metrics::parse(
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 90\n\
             etcd_disk_wal_fsync_duration_seconds_sum 1.5\n\
             etcd_disk_wal_fsync_duration_seconds_count 300\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 12\n\
             grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Txn\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n\
             grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 0\n",
        );
        assert_eq!(after.requests_since(&before), vec![("Txn".to_string(), 6)]);
        assert!(before.requests_since(&before).is_empty());
    }
}

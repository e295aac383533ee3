//! The report: per fault kind the count, the time to recover (p50/p99/max) and the HTTP
//! requests that failed meanwhile; totals; every violation with the events around it; the seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::Table;

use crate::check::Violation;
use crate::history::{Event, Kind};

/// One injected fault's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultResult {
    /// Its kind's label.
    pub label: String,
    /// Whether the injection itself succeeded.
    pub injected: bool,
    /// From injection to serving again; none when it did not within the limit.
    pub recover: Option<std::time::Duration>,
}

/// One fault kind's line of the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Faults of the kind.
    pub count: u32,
    /// Seconds from injection to serving again, of those that recovered.
    pub recover: Vec<f64>,
    /// Faults whose injection failed.
    pub not_injected: u32,
    /// Faults after which the system did not serve again within the limit.
    pub not_recovered: u32,
    /// HTTP requests failed from injection to recovery.
    pub http_failed: u32,
}

/// What the soak found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed that replays it.
    pub seed: u64,
    /// Each fault, in order.
    pub faults: Vec<FaultResult>,
    /// HTTP requests failed during each fault (from its start until it recovered), by index.
    pub failed_during: Vec<u32>,
    /// HTTP requests (answered 200, failed) over the whole soak.
    pub http: (u32, u32),
    /// Workload requests (succeeded, failed).
    pub requests: (u32, u32),
    /// Failing revisions deployed.
    pub failing: usize,
    /// Seconds from the last heal to convergence.
    pub converge_secs: Option<f64>,
    /// Every violation, in time order.
    pub violations: Vec<Violation>,
    /// The events around each violation, rendered.
    pub context: Vec<Vec<String>>,
    /// Events recorded.
    pub events: usize,
}

/// The value at quantile `q` of sorted `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn describe(e: &Event) -> Option<String> {
    let what = match &e.kind {
        Kind::Http { ok: true, .. } => return None,
        Kind::Http {
            lb, port, error, ..
        } => format!(
            "HTTP {lb}:{port} failed: {}",
            error.as_deref().unwrap_or("")
        ),
        Kind::Record {
            key,
            value: Some(v),
            ..
        } if v.get("targets").is_some() => {
            let targets: Vec<String> = v["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let id = t["taskId"].as_str().unwrap_or("?");
                    let short: String = id.chars().take(6).collect();
                    format!("{short}={}", t["state"].as_str().unwrap_or("?"))
                })
                .collect();
            format!("{key} {}", targets.join(" "))
        }
        Kind::Record { key, value, .. } => {
            let v = value.as_ref();
            let field = |f: &str| {
                v.and_then(|v| v.get(f))
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
            };
            format!(
                "{key} {} {} {}",
                field("lastStatus"),
                field("desiredStatus"),
                field("rolloutState")
            )
        }
        other => format!("{other:?}"),
    };
    Some(format!("{:8.2}s {what}", e.at))
}

impl Report {
    /// Collects the report.
    pub fn new(
        seed: u64,
        faults: Vec<FaultResult>,
        events: &[Event],
        violations: Vec<Violation>,
        converge_secs: Option<f64>,
        requests: (u32, u32),
        failing: usize,
    ) -> Self {
        let mut windows: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        for e in events {
            match &e.kind {
                Kind::FaultStart { id, .. } => {
                    windows.insert(*id, (e.at, f64::INFINITY));
                }
                Kind::FaultRecovered { id, .. } => {
                    if let Some(w) = windows.get_mut(id) {
                        w.1 = e.at;
                    }
                }
                _ => {}
            }
        }
        let mut http = (0, 0);
        let mut failed_during = vec![0; faults.len()];
        for e in events {
            if let Kind::Http { ok, .. } = e.kind {
                if ok {
                    http.0 += 1;
                } else {
                    http.1 += 1;
                    for (id, (s, end)) in &windows {
                        if *s <= e.at
                            && e.at <= *end
                            && let Some(n) = failed_during.get_mut(*id)
                        {
                            *n += 1;
                        }
                    }
                }
            }
        }
        let context = violations
            .iter()
            .map(|v| {
                // The 30 events nearest the violation within 3 s of it, in time order.
                let mut near: Vec<&Event> = events
                    .iter()
                    .filter(|e| (e.at - v.at).abs() <= 3.0)
                    .filter(|e| describe(e).is_some())
                    .collect();
                near.sort_by(|a, b| (a.at - v.at).abs().total_cmp(&(b.at - v.at).abs()));
                near.truncate(30);
                near.sort_by(|a, b| a.at.total_cmp(&b.at));
                near.into_iter().filter_map(describe).collect()
            })
            .collect();
        Self {
            seed,
            faults,
            failed_during,
            http,
            requests,
            failing,
            converge_secs,
            violations,
            context,
            events: events.len(),
        }
    }

    /// One row per fault kind, by label.
    pub fn rows(&self) -> BTreeMap<&str, Row> {
        let mut by: BTreeMap<&str, Row> = BTreeMap::new();
        for (i, f) in self.faults.iter().enumerate() {
            let row = by.entry(&f.label).or_default();
            row.count += 1;
            row.not_injected += u32::from(!f.injected);
            match f.recover {
                Some(d) => row.recover.push(d.as_secs_f64()),
                None => row.not_recovered += 1,
            }
            row.http_failed += self.failed_during.get(i).copied().unwrap_or(0);
        }
        by
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut t = Table::new();
        t.set_header([
            "fault",
            "count",
            "not injected",
            "recover p50 (s)",
            "p99 (s)",
            "max (s)",
            "not recovered",
            "HTTP failed",
        ]);
        for (label, mut row) in self.rows() {
            row.recover.sort_by(f64::total_cmp);
            let f = |x: f64| {
                if x.is_nan() {
                    "-".into()
                } else {
                    format!("{x:.1}")
                }
            };
            t.add_row([
                label.to_string(),
                row.count.to_string(),
                row.not_injected.to_string(),
                f(quantile(&row.recover, 0.5)),
                f(quantile(&row.recover, 0.99)),
                f(row.recover.last().copied().unwrap_or(f64::NAN)),
                row.not_recovered.to_string(),
                row.http_failed.to_string(),
            ]);
        }
        let mut out = String::new();
        let _ = writeln!(out, "capstan-chaos report (seed {})", self.seed);
        let _ = writeln!(out, "{t}");
        let _ = writeln!(
            out,
            "HTTP through the LB hosts: {} answered, {} failed. Workload requests: {} ok, {} failed; {} failing revisions deployed. Converged {} after the last heal. {} events recorded.",
            self.http.0,
            self.http.1,
            self.requests.0,
            self.requests.1,
            self.failing,
            self.converge_secs
                .map_or("never".to_string(), |s| format!("{s:.1} s")),
            self.events
        );
        if self.violations.is_empty() {
            let _ = writeln!(out, "violations: none");
        } else {
            let _ = writeln!(out, "violations: {}", self.violations.len());
            for (v, ctx) in self.violations.iter().zip(&self.context) {
                let _ = writeln!(out, "- [{:.2}s] {}: {}", v.at, v.invariant, v.detail);
                for line in ctx {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        let _ = writeln!(out, "replay: capstan-chaos --seed {} …", self.seed);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.99), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn failed_requests_are_counted_against_the_fault_they_happened_in() {
        let ev = |at: f64, kind: Kind| Event { at, kind };
        let events = [
            crate::history::fault_start(1.0, 0, "SIGKILL LB host", "lb-1", true),
            ev(
                2.0,
                Kind::Http {
                    lb: "lb-1".into(),
                    port: 8000,
                    ok: false,
                    started: 1.9,
                    error: None,
                },
            ),
            ev(
                3.0,
                Kind::FaultRecovered {
                    id: 0,
                    recovered: true,
                },
            ),
            ev(
                4.0,
                Kind::Http {
                    lb: "lb-1".into(),
                    port: 8000,
                    ok: true,
                    started: 3.9,
                    error: None,
                },
            ),
        ];
        let faults = vec![
            FaultResult {
                label: "SIGKILL LB host".into(),
                injected: true,
                recover: Some(Duration::from_secs(2)),
            },
            FaultResult {
                label: "SIGKILL LB host".into(),
                injected: false,
                recover: None,
            },
        ];
        let r = Report::new(9, faults, &events, Vec::new(), Some(4.0), (3, 0), 0);
        assert_eq!(r.failed_during, vec![1, 0]);
        assert_eq!(
            r.rows()["SIGKILL LB host"],
            Row {
                count: 2,
                recover: vec![2.0],
                not_injected: 1,
                not_recovered: 1,
                http_failed: 1,
            }
        );
        assert_eq!(r.http, (1, 1));
        let text = r.render();
        assert!(text.contains("SIGKILL LB host"), "{text}");
        assert!(text.contains("violations: none"), "{text}");
        assert!(text.contains("seed 9"), "{text}");
    }
}

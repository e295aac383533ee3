//! `capstan-chaos`: a chaos soak of the compose deployment (`deploy/compose`) with invariants
//! checked over the recorded history.
//!
//! The run: bring the deployment up (with `--up`), create the workload's services and wait until
//! they converge; start the recorders ([`record`]) and the workload ([`workload`]); inject the
//! seeded schedule of faults ([`faults`]) one at a time — inject, hold, heal, wait until the
//! system serves again — and after the last one wait for convergence; then read what the agents
//! and records say, check the invariants ([`check`]) and print a report: per fault kind the
//! count, the time to recover (p50/p99/max) and the HTTP requests that failed meanwhile, and every
//! violation with the events around it, and the seed.

pub mod args;
pub mod check;
pub mod compose;
pub mod faults;
pub mod history;
pub mod inject;
pub mod record;
pub mod report;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::check::{CONVERGE_LIMIT, Violation};
use crate::compose::Compose;
use crate::faults::RECOVERY_LIMIT;
use crate::history::{History, Kind};
use crate::report::{FaultResult, Report};
use crate::workload::Workload;

/// Why the soak could not run (a violation is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Driving the deployment failed.
    #[error(transparent)]
    Compose(#[from] compose::Error),
    /// The deployment never converged before the faults began.
    #[error("the workload did not converge before the faults: {0}")]
    NotReady(String),
    /// The deployment could not be torn down (`--down`).
    #[error("tearing the deployment down: {0}")]
    Down(compose::Error),
    /// The history could not be written.
    #[error("writing the history: {0}")]
    History(std::io::Error),
}

/// Polls `check` every 500 ms until it passes or `limit` passes; the time it took, or the last
/// reason it gave.
async fn until<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let r = check().await;
        match r {
            Ok(()) => return Ok(start.elapsed()),
            Err(why) if start.elapsed() >= limit => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn say(h: &History, what: &str) {
    eprintln!("[{:7.1}s] {what}", h.now());
}

/// Runs the soak `args` describe.
pub async fn run(args: &args::Args) -> Result<Report, Error> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let compose = Compose {
        project: args.project.clone(),
        net: args.net.clone(),
        dir: args.compose_dir.clone(),
        cli: args.capstan.clone().unwrap_or_else(compose::default_cli),
    };
    let h = History::new();
    say(&h, &format!("seed {seed}, project {}", compose.project));
    if args.up {
        say(&h, "bringing the deployment up (up.sh)");
        compose.script("up.sh", Duration::from_secs(900)).await?;
    }
    let result = soak(args, seed, &compose, &h).await;
    if args.down {
        say(&h, "tearing the deployment down (down.sh)");
        // A deployment left behind (a network that will not go) stops the next run from
        // starting: that is the run's failure, unless the soak already failed.
        if let Err(e) = compose.script("down.sh", Duration::from_secs(300)).await {
            say(&h, &format!("tearing down failed: {e}"));
            return result.and(Err(Error::Down(e)));
        }
    }
    result
}

async fn soak(
    args: &args::Args,
    seed: u64,
    compose: &Compose,
    h: &History,
) -> Result<Report, Error> {
    let store = compose.store().await?;
    let w = Workload::new(compose.clone(), store.clone(), h.clone(), seed);
    w.setup().await?;
    let ready = until(Duration::from_secs(240), || {
        workload::converged(&store, compose)
    })
    .await
    .map_err(Error::NotReady)?;
    say(h, &format!("workload converged after {ready:?}; recording"));

    let cancel = CancellationToken::new();
    let recorders = record::start(&store, compose, &workload::PORTS, h, &cancel);
    let stop = Arc::new(AtomicBool::new(false));
    let driver = tokio::spawn(w.clone().drive(stop.clone()));

    let mut schedule = faults::Schedule::new(seed, args.short, args.duration.into());
    let mut results = Vec::new();
    let mut violations: Vec<Violation> = Vec::new();
    let mut last_heal = Instant::now();
    let began_faults = Instant::now();
    while let Some(f) = schedule.next(began_faults.elapsed()) {
        let id = results.len();
        tokio::time::sleep(f.gap).await;
        if schedule.winding_down(began_faults.elapsed()) {
            w.winding_down.store(true, Ordering::SeqCst);
        }
        let targets = inject::targets(&store, &f).await;
        let label = f.kind.label();
        say(h, &format!("fault {id}: {label} on {targets:?}"));
        h.record(Kind::FaultStart {
            id,
            fault: label.clone(),
            targets: targets.clone(),
            loses_tasks: f.kind.loses_tasks(),
            hits_lb: f.kind.hits_lb(),
        });
        let began = Instant::now();
        let injected = inject::inject(compose, f.kind, &targets).await;
        if let Err(e) = &injected {
            // A fault that did not happen proves nothing: the run does not pass with it.
            say(h, &format!("fault {id} not injected: {e}"));
            violations.push(Violation {
                invariant: "every fault is injected",
                at: h.now(),
                detail: format!("{label} on {targets:?}: {e}"),
            });
        }
        tokio::time::sleep(f.kind.hold()).await;
        if let Err(e) = inject::heal(compose, f.kind, &targets).await {
            violations.push(Violation {
                invariant: "every fault is healed",
                at: h.now(),
                detail: format!("{label} on {targets:?}: {e}"),
            });
        }
        h.record(Kind::FaultHealed { id });
        last_heal = Instant::now();
        let recovered = until(RECOVERY_LIMIT, || workload::serving(&store, compose)).await;
        h.record(Kind::FaultRecovered {
            id,
            recovered: recovered.is_ok(),
        });
        let recover = recovered.as_ref().ok().map(|_| began.elapsed());
        say(
            h,
            &format!(
                "fault {id} healed; {}",
                match &recovered {
                    Ok(d) => format!("serving again {d:?} after the heal"),
                    Err(why) => format!("NOT serving after {RECOVERY_LIMIT:?}: {why}"),
                }
            ),
        );
        if let Err(why) = recovered {
            violations.push(Violation {
                invariant: "the system serves again after each fault",
                at: h.now(),
                detail: format!("{label} on {targets:?}: after {RECOVERY_LIMIT:?}, {why}"),
            });
        }
        results.push(FaultResult {
            label,
            injected: injected.is_ok(),
            recover,
        });
    }
    stop.store(true, Ordering::SeqCst);
    let _ = driver.await;

    // Every service converges within CONVERGE_LIMIT of the last heal.
    let from_heal = last_heal.elapsed();
    let converge = until(Duration::from_secs(180), || {
        workload::converged(&store, compose)
    })
    .await;
    let converge_secs = converge
        .as_ref()
        .ok()
        .map(|d| (from_heal + *d).as_secs_f64());
    match (&converge, converge_secs) {
        (Err(why), _) => violations.push(Violation {
            invariant: "every service converges after the last fault",
            at: h.now(),
            detail: format!("not converged 180 s after the workload stopped: {why}"),
        }),
        (Ok(_), Some(s)) if s > CONVERGE_LIMIT => violations.push(Violation {
            invariant: "every service converges after the last fault",
            at: h.now(),
            detail: format!("converged {s:.1} s after the last heal (limit {CONVERGE_LIMIT} s)"),
        }),
        _ => {}
    }
    say(h, &format!("converged: {converge:?}"));
    // The checks read the history, so it must hold the records as they are now.
    if let Err(why) = until(Duration::from_secs(30), || recorders.caught_up(&store)).await {
        violations.push(Violation {
            invariant: "the history holds every record",
            at: h.now(),
            detail: format!("30 s after convergence: {why}"),
        });
    }
    let end = h.now();
    let fin = workload::final_state(&store, compose).await;
    cancel.cancel();
    recorders.stopped().await;

    let events = h.events();
    let prefix = store.keys().prefix().to_string();
    violations.extend(check::one_host_per_task(&events));
    violations.extend(check::rollout_bounds(&events, &prefix, workload::CLUSTER));
    violations.extend(check::desired_state(&events, &prefix));
    violations.extend(check::lb_requests(&events));
    let failing = w.failing().await;
    match &fin {
        Ok(f) => {
            violations.extend(check::orphans(f, end));
            violations.extend(check::rollbacks(f, &failing, end));
        }
        Err(e) => violations.push(Violation {
            invariant: "no orphan tasks once converged",
            at: end,
            detail: format!("the final state could not be read: {e}"),
        }),
    }
    violations.sort_by(|a, b| a.at.total_cmp(&b.at));
    if let Some(path) = &args.history {
        let lines: Vec<String> = events
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").map_err(Error::History)?;
    }
    Ok(Report::new(
        seed,
        results,
        &events,
        violations,
        converge_secs,
        w.counts().await,
        failing.len(),
    ))
}

//! The registrar's loops: the per-group reconcile (targets converged with
//! `capstan_plan::targets`, the data plane programmed, status written) and the health-check
//! rounds that feed it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::lb::{TargetGroup, TargetGroupStatusDoc, TargetState};
use capstan_plan::targets::{self, Settings, Tracked};
use capstan_runtime::{Action, WorkQueue};
use capstan_store::{Claim, StoreError};
use tokio_util::sync::CancellationToken;

use crate::execute::{self, Executor};
use crate::snapshot;

/// Targets by group, then by task id, as this leader tracks them.
pub type Tracking = Mutex<HashMap<String, BTreeMap<String, Tracked>>>;

/// Shared state of the registrar.
pub struct Ctx {
    /// Writer, caller and data plane.
    pub exec: Executor,
    /// Targets as this leader tracks them.
    pub tracking: Tracking,
    /// Sessions per target on this host's data plane, by group then task.
    pub sessions: Mutex<HashMap<String, HashMap<String, u32>>>,
    /// Listener → (the groups it routes to, since when) as applied to this host's data plane.
    pub applied: Mutex<BTreeMap<String, (Vec<String>, f64)>>,
    /// Where this host binds listeners that name no address.
    pub listen_address: String,
}

/// Locks, ignoring poison: the tracked state stays usable after a panicked reconcile.
pub fn lock<T>(t: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reconciles one target group.
pub async fn reconcile(tg: String, claim: Arc<Claim>, ctx: Arc<Ctx>) -> Result<Action, StoreError> {
    let exec = &ctx.exec;
    let c = &exec.caches;
    if !c.ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let now = capstan_runtime::now();
    let keys = exec.store.keys().clone();
    let entry = c.groups.get(&keys.target_group(&tg));
    let spec = match entry.as_deref().map(|e| &e.value) {
        Some(Ok(spec)) => spec.clone(),
        None => {
            lock(&ctx.tracking).remove(&tg);
            exec.delete_status(&claim, &tg).await?;
            return Ok(Action::await_change());
        }
        Some(Err(why)) => {
            // A bad edit is not a deletion: the targets stay as last decided (every host keeps
            // serving them) and the problem shows on the group's status until it is fixed.
            let mut doc = c.status_of(&keys, &tg).unwrap_or_default();
            doc.problem = Some(format!(
                "the target group's spec does not decode, its targets are kept as they were: {why}"
            ));
            exec.put_status(&claim, &tg, doc, now).await?;
            return Ok(Action::await_change());
        }
    };
    let wanted = snapshot::wanted(c, &keys, &tg);
    let settings = Settings::of(&spec);
    let (doc, wake) = {
        let mut all = lock(&ctx.tracking);
        // A new leader carries on from the last status written.
        let tracked = all
            .entry(tg.clone())
            .or_insert_with(|| snapshot::decided(c, &keys, &tg));
        // Without a data plane nothing flows through a target, so it has no sessions.
        let sessions = lock(&ctx.sessions).get(&tg).cloned();
        let plan = targets::plan(
            &targets::Input {
                tracked,
                wanted: &wanted,
                sessions: sessions.as_ref(),
                data_plane: exec.data_plane.is_some(),
                settings: &settings,
            },
            now,
            &mut rand::rng(),
        );
        *tracked = plan.tracked;
        let wake = plan.wake;
        let doc = TargetGroupStatusDoc {
            targets: tracked.values().map(|t| t.status.clone()).collect(),
            listeners: lock(&ctx.applied)
                .iter()
                .filter(|(_, (groups, _))| groups.contains(&tg))
                .map(|(l, (_, since))| capstan_core::lb::ServingListener {
                    listener: l.clone(),
                    since: *since,
                })
                .collect(),
            updated_at: None,
            problem: None,
        };
        (doc, wake)
    };
    // Every load-balancer host (this one too) programs its data plane from the status written
    // here (`dataplane::serve`); sessions it counted feed the next drain decision, so a drain
    // is looked at again soon.
    let poll = tracked_draining(&ctx, &tg).then_some(Duration::from_millis(250));
    exec.put_status(&claim, &tg, doc, now).await?;
    let wait = match wake {
        Some(at) => Duration::from_secs_f64((at - now).max(0.0)),
        None => Duration::from_secs(30),
    };
    Ok(Action::requeue(poll.map_or(wait, |p| p.min(wait))))
}

/// Whether group `tg` has a target still draining.
fn tracked_draining(ctx: &Ctx, tg: &str) -> bool {
    ctx.exec.data_plane.is_some()
        && lock(&ctx.tracking).get(tg).is_some_and(|t| {
            t.values()
                .any(|t| t.status.state == TargetState::Draining && !t.status.drained)
        })
}

/// A group due for checks: its name, spec, targets (task id, host, port), and whether its
/// interval is up (else only its never-checked targets are due).
type Due = (String, TargetGroup, Vec<(String, String, u16)>, bool);

/// Health-checks every tracked target for one term of leadership, each group at its interval and
/// a new target at once (so it can go healthy without waiting an interval); a target whose
/// state changes queues its group for a status write.
pub async fn health_checks(ctx: Arc<Ctx>, queue: WorkQueue<String>, term: CancellationToken) {
    // HTTP checks only need plain TCP, but reqwest wants a TLS provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().build() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the health-check client");
            return;
        }
    };
    let mut next: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut checked: HashSet<(String, String)> = HashSet::new();
    loop {
        let now = tokio::time::Instant::now();
        let due: Vec<Due> = {
            let all = lock(&ctx.tracking);
            checked.retain(|(tg, id)| all.get(tg).is_some_and(|t| t.contains_key(id)));
            all.iter()
                .filter_map(|(tg, tracked)| {
                    let interval_up = next.get(tg).is_none_or(|at| *at <= now);
                    let targets: Vec<(String, String, u16)> = tracked
                        .values()
                        .filter(|t| t.status.state != TargetState::Draining)
                        .filter(|t| {
                            interval_up
                                || !checked.contains(&(tg.clone(), t.status.task_id.clone()))
                        })
                        .map(|t| {
                            (
                                t.status.task_id.clone(),
                                t.status.host.clone(),
                                t.status.port,
                            )
                        })
                        .collect();
                    if targets.is_empty() && !interval_up {
                        return None;
                    }
                    let spec = ctx.exec.caches.group(ctx.exec.store.keys(), tg)?;
                    Some((tg.clone(), spec, targets, interval_up))
                })
                .collect()
        };
        for (tg, spec, targets, interval_up) in due {
            let s = Settings::of(&spec);
            if interval_up {
                next.insert(tg.clone(), now + Duration::from_secs_f64(s.interval));
            }
            for (id, _, _) in &targets {
                checked.insert((tg.clone(), id.clone()));
            }
            let results = futures::future::join_all(targets.iter().map(|(id, host, port)| {
                let (http, spec) = (&http, &spec);
                async move { (id.clone(), execute::check(http, spec, host, *port).await) }
            }))
            .await;
            let mut changed = false;
            {
                let mut all = lock(&ctx.tracking);
                if let Some(tracked) = all.get_mut(&tg) {
                    for (id, r) in results {
                        if let Some(t) = tracked.get_mut(&id) {
                            let before = t.status.clone();
                            targets::observe(t, r, &s, capstan_runtime::now());
                            changed |= t.status != before;
                        }
                    }
                }
            }
            if changed {
                queue.add(tg);
            }
        }
        tokio::select! {
            _ = term.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    // The next leader starts from the status written.
    lock(&ctx.tracking).clear();
}

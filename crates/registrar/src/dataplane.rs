//! The data plane the registrar drives, behind a trait so that other load balancers can follow
//! HAProxy (`haproxy.rs`, the one shipped): Envoy over xDS, a cloud load balancer's API, … — and
//! [`follow`], the loop that keeps its layout and listener routes in step while this replica
//! leads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use capstan_plan::targets;
use capstan_runtime::WorkQueue;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::haproxy;
use crate::reconcile::{Ctx, lock};
use crate::snapshot;

pub use crate::haproxy::{DataPlaneError, Layout, Member};

/// A load balancer the registrar programs.
pub trait DataPlane: Send + Sync {
    /// Serves `layout` (listeners and target groups) with listeners routed per `routes`
    /// (listener → backend). Returns whether it (re)started or reloaded, so that every group's
    /// targets must be set again.
    fn ensure<'a>(
        &'a self,
        layout: &'a Layout,
        routes: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<bool, DataPlaneError>>;

    /// Points listener `listener` at `backend`, without a reload.
    fn route<'a>(
        &'a self,
        listener: &'a str,
        backend: &'a str,
    ) -> BoxFuture<'a, Result<(), DataPlaneError>>;

    /// Makes backend `backend` (a group's, or a weighted listener's) hold `members` (healthy
    /// ones in traffic at their weight, draining ones draining, others out), without a reload;
    /// returns in-flight sessions per member.
    fn sync_backend<'a>(
        &'a self,
        backend: &'a str,
        members: &'a [Member],
    ) -> BoxFuture<'a, Result<HashMap<String, u32>, DataPlaneError>>;

    /// Stops serving (leadership lost).
    fn stop(&self) -> BoxFuture<'_, ()>;
}

impl DataPlane for crate::haproxy::Haproxy {
    fn ensure<'a>(
        &'a self,
        layout: &'a Layout,
        routes: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<bool, DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::ensure(self, layout, routes))
    }

    fn route<'a>(
        &'a self,
        listener: &'a str,
        backend: &'a str,
    ) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::route(self, listener, backend))
    }

    fn sync_backend<'a>(
        &'a self,
        backend: &'a str,
        members: &'a [Member],
    ) -> BoxFuture<'a, Result<HashMap<String, u32>, DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::sync_backend(
            self, backend, members,
        ))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(crate::haproxy::Haproxy::stop(self))
    }
}

/// Keeps HAProxy's layout (listeners, groups) and listener routes in step for one term of
/// leadership (see `capstan_runtime::spawn_while_leading`); a (re)start queues every group so
/// its servers are set again. `shutdown` is the process's token: a term that ends because the
/// process stops leaves HAProxy serving, for the next registrar to adopt.
pub async fn follow(
    ctx: Arc<Ctx>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
    term: CancellationToken,
) {
    // Without a data plane, routes count as applied at once (status and deployments still
    // follow them).
    let hp = ctx.exec.data_plane.as_deref();
    let keys = ctx.exec.store.keys().clone();
    let mut applied: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    loop {
        let (listeners, groups) = snapshot::layout(&ctx.exec.caches, &keys);
        let split = targets::listener_split(&listeners, &snapshot::routes(&ctx.exec.caches, &keys));
        let routes: BTreeMap<String, String> = split
            .iter()
            .map(|(l, g)| {
                let be = match g.as_slice() {
                    [(one, _)] => haproxy::backend(one),
                    _ => haproxy::listener_backend(l),
                };
                (l.clone(), be)
            })
            .collect();
        let weighted: BTreeMap<String, Vec<(String, u32)>> = split
            .iter()
            .filter(|(_, g)| g.len() > 1)
            .map(|(l, g)| (l.clone(), g.clone()))
            .collect();
        // Groups whose weighted listeners changed sync again.
        {
            let mut current = lock(&ctx.weighted);
            if *current != weighted {
                for g in current.values().chain(weighted.values()).flatten() {
                    queue.add(g.0.clone());
                }
                *current = weighted.clone();
            }
        }
        let mut layout = haproxy::Layout::new(&listeners, &groups);
        layout.weighted = weighted.keys().cloned().collect();
        let ensured = match hp {
            Some(hp) => hp.ensure(&layout, &routes).await,
            None => Ok(false),
        };
        // Listeners that are gone route nowhere.
        let gone: Vec<String> = lock(&ctx.applied)
            .keys()
            .filter(|l| !routes.contains_key(*l))
            .cloned()
            .collect();
        for l in gone {
            if let Some((groups, _)) = lock(&ctx.applied).remove(&l) {
                for g in groups {
                    queue.add(g);
                }
            }
            applied.remove(&l);
        }
        match ensured {
            Ok(restarted) => {
                if restarted {
                    applied.clear();
                    for g in &groups {
                        queue.add(g.clone());
                    }
                }
                for (l, be) in &routes {
                    let now_in: Vec<String> = split
                        .get(l)
                        .map(|g| g.iter().map(|(g, _)| g.clone()).collect())
                        .unwrap_or_default();
                    if applied.get(l) != Some(&(be.clone(), now_in.clone())) {
                        let routed = match hp {
                            Some(hp) => hp.route(l, be).await,
                            None => Ok(()),
                        };
                        match routed {
                            Ok(()) => {
                                applied.insert(l.clone(), (be.clone(), now_in.clone()));
                                // Report it on the groups it left and joined.
                                let before = lock(&ctx.applied)
                                    .insert(l.clone(), (now_in.clone(), capstan_runtime::now()))
                                    .map(|(g, _)| g)
                                    .unwrap_or_default();
                                for g in before.into_iter().chain(now_in) {
                                    queue.add(g);
                                }
                            }
                            Err(e) => tracing::warn!(listener = %l, error = %e, "cannot route"),
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot run haproxy"),
        }
        tokio::select! {
            biased;
            _ = term.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    // Shutting down: HAProxy keeps serving; the next registrar adopts it.
    if shutdown.is_cancelled() {
        return;
    }
    // Only the leader drives HAProxy.
    lock(&ctx.applied).clear();
    lock(&ctx.weighted).clear();
    if let Some(hp) = hp {
        hp.stop().await;
    }
}

//! The data plane the registrar drives, behind a trait so that other load balancers can follow
//! HAProxy (`haproxy.rs`, the one shipped): Envoy over xDS, a cloud load balancer's API, … — and
//! [`serve`], the loop that keeps this host's load balancer in step with what the leader decided.
//!
//! Every replica serves, leader or not: each programs its own HAProxy from etcd — listeners and
//! groups (specs), listener routes (the deployer's), and each group's targets as the leader's
//! status document shows them (health, draining, slow start). So every load-balancer host serves
//! every listener, and nothing that serves depends on leadership: losing it, or etcd, leaves the
//! caches with their last state and HAProxy with its last configuration (static stability).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use capstan_core::lb::TargetState;
use capstan_plan::targets::{self, Settings, Tracked};
use capstan_runtime::WorkQueue;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::haproxy;
use crate::reconcile::{Ctx, lock};
use crate::snapshot;

pub use crate::haproxy::{DataPlaneError, Layout, Member};

/// Sessions in flight per (backend, member).
pub type Sessions = HashMap<(String, String), u32>;

/// A group's targets as decided, with its settings (slow start).
type Decided = (BTreeMap<String, Tracked>, Settings);

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
    /// ones in traffic at their weight, draining ones draining, others out), without a reload.
    fn sync_backend<'a>(
        &'a self,
        backend: &'a str,
        members: &'a [Member],
    ) -> BoxFuture<'a, Result<(), DataPlaneError>>;

    /// Sessions in flight per (backend, member).
    fn sessions(&self) -> BoxFuture<'_, Result<Sessions, DataPlaneError>>;

    /// Stops the load balancer this registrar runs (`--stop-haproxy-on-exit`); by default a
    /// data plane outlives its registrar.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
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
    ) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::sync_backend(
            self, backend, members,
        ))
    }

    fn sessions(&self) -> BoxFuture<'_, Result<Sessions, DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::sessions(self))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(crate::haproxy::Haproxy::stop(self))
    }
}

/// How often the data plane is looked at without a change to wake it (slow start ramps).
const TICK: Duration = Duration::from_millis(250);

/// Keeps this host's data plane in step with etcd for the life of the process, leader or not
/// (see the module doc): layout, each backend's servers, then listener routes, then the
/// sessions the leader's drain decisions read. Groups a listener left or joined are queued, so
/// the leader reports the listeners on their status.
pub async fn serve(ctx: Arc<Ctx>, queue: WorkQueue<String>, shutdown: CancellationToken) {
    let caches = &ctx.exec.caches;
    // Status and routes changes wake the loop at once; the tick catches the rest.
    let mut status = caches.status.subscribe();
    let mut routes = caches.routes.subscribe();
    let mut host = Host::default();
    loop {
        // Never program from caches still empty: that would empty an adopted HAProxy.
        if caches.ready() {
            host.pass(&ctx, &queue).await;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = status.recv() => {}
            _ = routes.recv() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        while status.try_recv().is_ok() || routes.try_recv().is_ok() {}
    }
}

/// The routes a reloaded HAProxy starts with: each listener stays on the backend it is routed
/// to now while that backend is still in the layout, because a backend the reload adds has no
/// servers until they are synced after it (a listener moved there at once would answer 503
/// meanwhile); [`Host::route`] moves it once its servers are in.
fn routes_across_reload(
    routes: &BTreeMap<String, String>,
    routed: &BTreeMap<String, (String, Vec<String>)>,
    backends: &[String],
) -> BTreeMap<String, String> {
    routes
        .iter()
        .map(|(l, be)| {
            let now = routed
                .get(l)
                .map(|(b, _)| b)
                .filter(|b| backends.contains(b));
            (l.clone(), now.unwrap_or(be).clone())
        })
        .collect()
}

/// What this host's data plane was last given.
#[derive(Default)]
struct Host {
    /// Objects refused, as last reported.
    refused: Vec<(String, String)>,
    /// Backend → the members it was last synced to.
    synced: BTreeMap<String, Vec<Member>>,
    /// Listener → (backend, groups) it routes to.
    routed: BTreeMap<String, (String, Vec<String>)>,
    /// The last listeners and groups that decoded.
    good: snapshot::LastGood,
}

impl Host {
    /// Logs each refused object once per change, and counts them.
    fn report(&mut self, refused: &[(String, String)]) {
        if refused != self.refused.as_slice() {
            for (key, why) in refused.iter().filter(|r| !self.refused.contains(r)) {
                tracing::warn!(key = ?key, problem = %why, "object refused by the data plane");
            }
            self.refused = refused.to_vec();
        }
        metrics::gauge!("capstan_registrar_refused_objects").set(refused.len() as f64);
    }

    async fn pass(&mut self, ctx: &Ctx, queue: &WorkQueue<String>) {
        let hp = ctx.exec.data_plane.as_deref();
        let (c, keys) = (&ctx.exec.caches, ctx.exec.store.keys());
        let now = capstan_runtime::now();
        let snapshot::Served {
            listeners,
            groups,
            refused,
            good,
        } = snapshot::layout(c, keys, &self.good);
        self.good = good;
        self.report(&refused);
        let split = targets::listener_split(&listeners, &snapshot::routes(c, keys));
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
        let weighted: BTreeMap<&String, &Vec<(String, u32)>> =
            split.iter().filter(|(_, g)| g.len() > 1).collect();
        let mut layout = haproxy::Layout::new(&listeners, &groups, &ctx.listen_address);
        layout.weighted = weighted.keys().map(|l| (*l).clone()).collect();
        // Without a data plane, routes count as applied at once (status and deployments still
        // follow them).
        if let Some(hp) = hp {
            let kept = routes_across_reload(&routes, &self.routed, &layout.backends());
            match hp.ensure(&layout, &kept).await {
                Ok(true) => {
                    self.synced.clear();
                    self.routed.clear();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot run haproxy");
                    return;
                }
            }
        }
        // Each group's targets as the leader decided them, and its slow start.
        let decided: BTreeMap<&String, Decided> = groups
            .iter()
            .map(|g| {
                let s = c.group(keys, g).map_or_else(
                    || Settings::of(&Default::default()),
                    |spec| Settings::of(&spec),
                );
                (g, (snapshot::decided(c, keys, g), s))
            })
            .collect();
        let mut backends: BTreeMap<String, Vec<Member>> = decided
            .iter()
            .map(|(g, (tracked, s))| {
                (
                    haproxy::backend(g),
                    haproxy::group_members(tracked, |t| t.weight(s, now)),
                )
            })
            .collect();
        let empty = (BTreeMap::new(), Settings::of(&Default::default()));
        for (l, parts) in &weighted {
            let parts: Vec<(u32, &Decided)> = parts
                .iter()
                .map(|(g, w)| (*w, decided.get(g).unwrap_or(&empty)))
                .collect();
            let groups: Vec<(u32, &BTreeMap<String, Tracked>)> =
                parts.iter().map(|(w, (t, _))| (*w, t)).collect();
            let members = haproxy::weighted_members(&groups, |i, t| t.weight(&parts[i].1.1, now));
            backends.insert(haproxy::listener_backend(l), members);
        }
        // Servers before routes: a listener moved to a backend finds its servers there.
        if let Some(hp) = hp {
            for (be, members) in &backends {
                if self.synced.get(be) == Some(members) {
                    continue;
                }
                match hp.sync_backend(be, members).await {
                    Ok(()) => {
                        self.synced.insert(be.clone(), members.clone());
                    }
                    Err(e) => tracing::warn!(backend = %be, error = %e, "cannot program haproxy"),
                }
            }
            self.synced.retain(|be, _| backends.contains_key(be));
        }
        self.route(ctx, queue, &routes, &split).await;
        if let Some(hp) = hp {
            match hp.sessions().await {
                Ok(stats) => *lock(&ctx.sessions) = sessions_by_group(&decided, &weighted, &stats),
                Err(e) => tracing::debug!(error = %e, "cannot count sessions"),
            }
        }
    }

    /// Points each listener at its backend; records (on `ctx.applied`, for status) what changed.
    async fn route(
        &mut self,
        ctx: &Ctx,
        queue: &WorkQueue<String>,
        routes: &BTreeMap<String, String>,
        split: &BTreeMap<String, Vec<(String, u32)>>,
    ) {
        let hp = ctx.exec.data_plane.as_deref();
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
            self.routed.remove(&l);
        }
        for (l, be) in routes {
            let now_in: Vec<String> = split
                .get(l)
                .map(|g| g.iter().map(|(g, _)| g.clone()).collect())
                .unwrap_or_default();
            if self.routed.get(l) == Some(&(be.clone(), now_in.clone())) {
                continue;
            }
            let routed = match hp {
                Some(hp) => hp.route(l, be).await,
                None => Ok(()),
            };
            match routed {
                Ok(()) => {
                    self.routed.insert(l.clone(), (be.clone(), now_in.clone()));
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

/// Sessions per group and draining target, over the group's own backend and every weighted
/// listener's backend it is part of. Only targets this pass programmed as draining are counted:
/// a count from before the drain began could miss a request that started since.
fn sessions_by_group(
    decided: &BTreeMap<&String, Decided>,
    weighted: &BTreeMap<&String, &Vec<(String, u32)>>,
    stats: &Sessions,
) -> HashMap<String, HashMap<String, u32>> {
    decided
        .iter()
        .map(|(g, (tracked, _))| {
            let backends: Vec<String> = std::iter::once(haproxy::backend(g))
                .chain(
                    weighted
                        .iter()
                        .filter(|(_, parts)| parts.iter().any(|(x, _)| x == *g))
                        .map(|(l, _)| haproxy::listener_backend(l)),
                )
                .collect();
            let per_target = tracked
                .iter()
                .filter(|(_, t)| t.status.state == TargetState::Draining)
                .map(|(id, _)| {
                    let n = backends
                        .iter()
                        .map(|be| stats.get(&(be.clone(), id.clone())).copied().unwrap_or(0))
                        .sum();
                    (id.clone(), n)
                })
                .collect();
            ((*g).clone(), per_target)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_listeners_where_they_serve_until_their_new_backend_has_servers() {
        let routes: BTreeMap<String, String> = [
            ("shop", "bel_shop"),      // moving to a weighted backend the reload adds
            ("web", "be_web-blue"),    // unchanged
            ("new", "be_new"),         // never routed before
            ("done", "be_shop-green"), // its old weighted backend leaves the layout
        ]
        .into_iter()
        .map(|(l, b)| (l.to_string(), b.to_string()))
        .collect();
        let routed: BTreeMap<String, (String, Vec<String>)> = [
            ("shop", "be_shop-blue"),
            ("web", "be_web-blue"),
            ("done", "bel_done"),
        ]
        .into_iter()
        .map(|(l, b)| (l.to_string(), (b.to_string(), Vec::new())))
        .collect();
        let backends: Vec<String> = [
            "be_shop-blue",
            "be_shop-green",
            "bel_shop",
            "be_web-blue",
            "be_new",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let kept = routes_across_reload(&routes, &routed, &backends);
        let get = |l: &str| kept.get(l).map(String::as_str);
        assert_eq!(get("shop"), Some("be_shop-blue"));
        assert_eq!(get("web"), Some("be_web-blue"));
        assert_eq!(get("new"), Some("be_new"));
        assert_eq!(get("done"), Some("be_shop-green"));
    }
}

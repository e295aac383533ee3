//! The Capstan target registrar: keeps each target group's targets in step with the tasks of the
//! deployments that name it, health-checks the targets itself (HTTP with the group's matcher, or
//! TCP connect) with ELBv2's thresholds, drains deregistering targets and marks them drained so
//! the scheduler may stop their tasks, and writes `/capstan/status/targetgroups/<name>`.
//!
//! Every replica supervises its own HAProxy ([`haproxy`], programmed by [`dataplane::serve`]
//! from the leader's status documents): one frontend per listener, one backend per target
//! group; healthy targets are ready servers, draining ones drain, and a draining target is
//! drained once the leader's HAProxy reports no sessions on it (or the deregistration delay
//! passed).

//!
//! Shape (see docs/architecture.md): `args`, `snapshot`, `reconcile`, `execute`, and what only
//! the registrar has: `dataplane` (the load balancer it programs) and `haproxy` (the one
//! shipped). This file only wires them.

pub mod args;
pub mod dataplane;
pub mod execute;
pub mod haproxy;
pub mod reconcile;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use capstan_core::keys::Family;
use capstan_runtime::{Controller, ControllerConfig, Runtime, RuntimeError, spawn_while_leading};
use capstan_store::json_decoder;
use futures::FutureExt;

pub use crate::args::RegistrarArgs;
use crate::execute::Executor;
use crate::reconcile::{Ctx, reconcile};
use crate::snapshot::groups_of;
pub use crate::snapshot::{Caches, host_of_endpoint};

/// Runs the registrar until SIGTERM/SIGINT.
pub async fn run(args: RegistrarArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("registrar", &args.common).await?;
    let caches = Caches {
        groups: rt.cache(Family::TargetGroups, capstan_runtime::spec_decoder()),
        deployments: rt.cache(Family::Deployments, json_decoder()),
        tasks: rt.cache(Family::Tasks, json_decoder()),
        instances: rt.cache(Family::ContainerInstances, json_decoder()),
        status: rt.cache(Family::TargetGroupStatus, json_decoder()),
        listeners: rt.cache(Family::Listeners, capstan_runtime::spec_decoder()),
        routes: rt.cache(Family::ListenerRoutes, json_decoder()),
    };
    let haproxy = (!args.no_data_plane).then(|| {
        let dir = args
            .haproxy_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("capstan-registrar-{}", rt.id)));
        let hp = match (&args.haproxy_socket, &args.haproxy_map) {
            (Some(socket), Some(map)) => haproxy::Haproxy::external(haproxy::External {
                socket: socket.clone(),
                map: map.clone(),
            }),
            _ => haproxy::Haproxy::new(args.haproxy_bin.clone(), dir),
        };
        Box::new(hp) as Box<dyn dataplane::DataPlane>
    });
    let ctx = Arc::new(Ctx {
        exec: Executor {
            store: rt.store.clone(),
            caches: caches.clone(),
            data_plane: haproxy,
        },
        tracking: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        applied: Mutex::new(BTreeMap::new()),
        listen_address: args.listen_address.to_string(),
    });
    let keys = rt.store.keys().clone();
    let (k1, k2, k3) = (keys.clone(), keys.clone(), keys.clone());
    let (d1, d2, g1) = (
        caches.deployments.clone(),
        caches.deployments.clone(),
        caches.groups.clone(),
    );
    let tasks = caches.tasks.clone();
    let controller = Controller::new(ControllerConfig::new("registrar"))
        .watches(&caches.groups, move |k| {
            k1.name_of(Family::TargetGroups, k).into_iter().collect()
        })
        .watches(&caches.deployments, move |_| groups_of(&d1.list()))
        .watches(&caches.tasks, move |k| {
            // The groups of the task's deployment.
            let Some(t) = tasks.get(k).and_then(|e| e.value.as_ref().ok().cloned()) else {
                return vec![];
            };
            let (Some(service), Some(dep)) = (t.service(), t.started_by.as_deref()) else {
                return vec![];
            };
            d2.get(&k2.deployment(t.cluster(), service, dep))
                .map(|e| groups_of(&[e]))
                .unwrap_or_default()
        })
        .watches(&caches.instances, move |_| {
            g1.list()
                .iter()
                .filter_map(|e| k3.name_of(Family::TargetGroups, &e.key))
                .collect()
        })
        .resyncs({
            let (g, k) = (caches.groups.clone(), keys.clone());
            move || {
                g.list()
                    .iter()
                    .filter_map(|e| k.name_of(Family::TargetGroups, &e.key))
                    .collect()
            }
        });
    // Every replica serves; only the leader decides (health checks, drains, status).
    tokio::spawn(dataplane::serve(
        ctx.clone(),
        controller.queue(),
        rt.cancel.clone(),
    ));
    let (checker, queue) = (ctx.clone(), controller.queue());
    spawn_while_leading(
        rt.leadership.clone(),
        rt.cancel.clone(),
        move |_claim, term| reconcile::health_checks(checker.clone(), queue.clone(), term),
    );
    rt.serve(controller, ctx.clone(), |k, c, x| {
        reconcile(k, c, x).boxed()
    })
    .await;
    if args.stop_haproxy_on_exit
        && let Some(dp) = &ctx.exec.data_plane
    {
        dp.stop().await;
    }
    Ok(())
}

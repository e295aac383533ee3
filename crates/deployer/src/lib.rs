//! The Capstan deployment controller: turns service changes into deployments, runs rolling and
//! blue/green rollouts by setting each deployment's task count (the scheduler converges them),
//! guards them with the circuit breaker, rolls back, runs lifecycle hooks, and writes the
//! DescribeServices-shaped status and the service events.
//!
//! It is the only writer of `/capstan/deployments/…`, `/capstan/status/services/…` and
//! `/capstan/routes/…`.

//! Shape (see docs/architecture.md): `args`, `snapshot`, `reconcile`, `execute`; this file only
//! wires them.

pub mod args;
pub mod execute;
pub mod reconcile;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use capstan_core::Keys;
use capstan_core::keys::{ClusterKey, Family, ServiceKey};
use capstan_core::service::lb_object_name;
use capstan_runtime::{Controller, ControllerConfig, Events, Runtime, RuntimeError};
use futures::FutureExt;

pub use crate::args::DeployerArgs;
use crate::execute::Executor;
use crate::reconcile::{Ctx, reconcile};
use crate::snapshot::{Caches, services_where};

/// Runs the deployer until SIGTERM/SIGINT.
pub async fn run(args: DeployerArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("deployer", &args.common).await?;
    let caches = Caches {
        services: rt.cache(Family::Services, capstan_runtime::spec_decoder()),
        deployments: rt.cache(Family::Deployments, capstan_store::json_decoder()),
        taskdefs: rt.cache(Family::TaskDefinitions, capstan_runtime::spec_decoder()),
        tasks: rt.cache(Family::Tasks, capstan_store::json_decoder()),
        targets: rt.cache(Family::TargetGroupStatus, capstan_store::json_decoder()),
        continues: rt.cache(
            Family::ContinueDeploymentRequests,
            capstan_runtime::spec_decoder(),
        ),
        status: rt.cache(Family::ServiceStatus, capstan_store::json_decoder()),
        routes: rt.cache(Family::ListenerRoutes, capstan_store::json_decoder()),
    };
    let signing_key = match &args.webhook_signing_key_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            RuntimeError::Setup(format!(
                "--webhook-signing-key-file {}: {e}",
                path.display()
            ))
        })?),
        None => {
            tracing::warn!(
                "no --webhook-signing-key-file: webhook calls are not signed (X-Capstan-Signature)"
            );
            None
        }
    };
    let webhooks = execute::Webhooks::new(signing_key, args.webhook_allow_hosts.clone())
        .map_err(RuntimeError::Setup)?;
    let ctx = Arc::new(Ctx {
        exec: Executor {
            store: rt.store.clone(),
            caches: caches.clone(),
            webhooks,
        },
        events: Events::new(rt.store.clone()),
        grace_secs: Duration::from(args.health_grace).as_secs_f64(),
        history: args.history,
    });
    let keys = rt.store.keys().clone();
    let by_parts =
        |keys: &Keys, k: &str| -> Vec<ServiceKey> { keys.service_of(k).into_iter().collect() };
    let mut config = ControllerConfig::new("deployer");
    config.concurrency = args.concurrency;
    let (k1, k2, k3, k4, k5, k6) = (
        keys.clone(),
        keys.clone(),
        keys.clone(),
        keys.clone(),
        keys.clone(),
        keys.clone(),
    );
    let (tasks, c1, c2, c3) = (
        caches.tasks.clone(),
        caches.clone(),
        caches.clone(),
        caches.clone(),
    );
    let controller = Controller::new(config)
        .watches(&caches.services, move |k| by_parts(&k1, k))
        .watches(&caches.deployments, move |k| by_parts(&k2, k))
        .watches(&caches.continues, move |k| by_parts(&k3, k))
        // Its own status documents only when one does not decode (someone overwrote it): the
        // service's reconcile then writes it again.
        .watches(&caches.status, {
            let (status, keys) = (caches.status.clone(), keys.clone());
            move |k| {
                if status.get(k).is_some_and(|e| e.value.is_err()) {
                    by_parts(&keys, k)
                } else {
                    vec![]
                }
            }
        })
        .watches(&caches.tasks, move |k| {
            let Some(ClusterKey { cluster, .. }) = k4.cluster_key(Family::Tasks, k) else {
                return vec![];
            };
            tasks
                .get(k)
                .and_then(|e| {
                    let t = e.value.as_ref().ok()?;
                    Some(ServiceKey::new(&cluster, t.service()?))
                })
                .into_iter()
                .collect()
        })
        .watches(&caches.taskdefs, move |k| {
            let Some(family) = k5.parse(k).and_then(|p| p.parts.into_iter().next()) else {
                return vec![];
            };
            services_where(&c1, &k5, |s| {
                s.task_definition
                    .as_deref()
                    .is_some_and(|r| r.split(':').next() == Some(family.as_str()))
            })
        })
        .watches(&caches.targets, move |k| {
            let Some(tg) = k6.name_of(Family::TargetGroupStatus, k) else {
                return vec![];
            };
            services_where(&c2, &k6, |s| {
                s.load_balancers.iter().any(|lb| {
                    lb.target_group_arn.as_deref().map(lb_object_name) == Some(tg.as_str())
                        || lb
                            .advanced_configuration
                            .as_ref()
                            .and_then(|a| a.alternate_target_group_arn.as_deref())
                            .map(lb_object_name)
                            == Some(tg.as_str())
                })
            })
        })
        .resyncs(move || {
            let mut out = services_where(&c3, &keys, |_| true);
            // Deployments whose service is gone still need cleaning up.
            for e in c3.deployments.list() {
                if let Some(k) = keys.service_of(&e.key)
                    && !out.contains(&k)
                {
                    out.push(k);
                }
            }
            out
        });
    rt.serve(controller, ctx, |k, c, x| reconcile(k, c, x).boxed())
        .await;
    Ok(())
}

//! `capstan-scaler`: the capacity-provider scaler. For every capacity provider it computes
//! CapacityProviderReservation from the tasks (running non-daemon ones and those waiting in
//! PROVISIONING) and the node group its provider reports, target-tracks `targetCapacity` by
//! setting the group's desired capacity (a value, never an increment, so a new leader cannot
//! double-scale), and scales in only empty instances: DRAINING first, then terminated. The
//! arithmetic is `capstan_plan::scaling`; this crate is the IO around it.
//!
//! Shape (see docs/architecture.md): `args`, `snapshot`, `reconcile`, `execute`; this file only
//! wires them.

pub mod args;
pub mod execute;
pub mod reconcile;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use capstan_core::keys::Family;
use capstan_plan::scheduling::PROVIDER_ATTRIBUTE;
use capstan_runtime::{Controller, ControllerConfig, Runtime, RuntimeError};
use futures::FutureExt;

pub use crate::args::ScalerArgs;
use crate::execute::Executor;
use crate::reconcile::{Ctx, reconcile};
pub use crate::snapshot::Caches;

/// Runs the scaler until SIGTERM/SIGINT.
pub async fn run(args: ScalerArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("scaler", &args.common).await?;
    let caches = Caches {
        providers: rt.cache(Family::CapacityProviders, capstan_runtime::spec_decoder()),
        instances: rt.cache(Family::ContainerInstances, capstan_store::json_decoder()),
        tasks: rt.cache(Family::Tasks, capstan_store::json_decoder()),
        services: rt.cache(Family::Services, capstan_runtime::spec_decoder()),
        status: rt.cache(
            Family::CapacityProviderStatus,
            capstan_store::json_decoder(),
        ),
    };
    let interval = Duration::from(args.interval);
    let ctx = Arc::new(Ctx {
        exec: Executor::new(rt.store.clone(), caches.clone(), args.tls.files()),
        interval,
    });
    let mut config = ControllerConfig::new("scaler");
    config.resync = interval;
    // Bursts of task changes are evaluated once.
    config.settle = Duration::from_millis(200);
    let keys = rt.store.keys().clone();
    let (k1, tasks, instances) = (keys.clone(), caches.tasks.clone(), caches.instances.clone());
    let controller = Controller::new(config)
        .watches(&caches.providers, move |k| {
            k1.name_of(Family::CapacityProviders, k)
                .into_iter()
                .collect()
        })
        .watches(&caches.tasks, move |k| {
            tasks
                .get(k)
                .and_then(|e| {
                    e.value
                        .as_ref()
                        .ok()
                        .and_then(|t| t.capacity_provider_name.clone())
                })
                .into_iter()
                .collect()
        })
        .watches(&caches.instances, move |k| {
            instances
                .get(k)
                .and_then(|e| {
                    e.value
                        .as_ref()
                        .ok()
                        .and_then(|c| c.attribute(PROVIDER_ATTRIBUTE).map(str::to_string))
                })
                .into_iter()
                .collect()
        });
    rt.serve(controller, ctx, |k, c, x| reconcile(k, c, x).boxed())
        .await;
    Ok(())
}

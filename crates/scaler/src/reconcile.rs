//! The scaler's loop body, per capacity provider: describe its node group, plan with
//! `capstan_plan::scaling`, execute (scale out, drain, terminate), record the status.

use std::sync::Arc;
use std::time::Duration;

use capstan_core::capacity::CapacityProviderStatusDoc;
use capstan_plan::scaling::{self, Scaling};
use capstan_runtime::Action;
use capstan_store::{Claim, StoreError};

use crate::execute::Executor;
use crate::snapshot::{provider_instances, scaling_input, task_counts};

/// Shared state of the scaler's reconcilers.
pub struct Ctx {
    /// Writer and caller.
    pub exec: Executor,
    /// How often each provider is evaluated besides on changes.
    pub interval: Duration,
}

/// Reconciles one capacity provider.
pub async fn reconcile(
    name: String,
    claim: Arc<Claim>,
    ctx: Arc<Ctx>,
) -> Result<Action, StoreError> {
    let exec = &ctx.exec;
    if !exec.caches.ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let now = capstan_runtime::now();
    let keys = exec.store.keys().clone();
    let Some(entry) = exec.caches.providers.get(&keys.capacity_provider(&name)) else {
        exec.delete_status(&claim, &name).await?;
        return Ok(Action::await_change());
    };
    let previous = exec.caches.status_of(&keys, &name).unwrap_or_default();
    let cp = match &entry.value {
        Ok(cp) => cp.clone(),
        Err(e) => {
            let doc = CapacityProviderStatusDoc {
                message: Some(format!("the capacity provider spec is not valid: {e}")),
                ..previous
            };
            exec.put_status(&claim, &name, doc, now).await?;
            return Ok(Action::await_change());
        }
    };
    let ng = &cp.node_group_provider;
    let group = match exec.describe(ng).await {
        Ok(g) => g,
        Err(msg) => {
            tracing::warn!(provider = %name, error = %msg, "cannot describe the node group");
            let doc = CapacityProviderStatusDoc {
                message: Some(msg),
                ..previous
            };
            exec.put_status(&claim, &name, doc, now).await?;
            return Ok(Action::requeue(ctx.interval));
        }
    };
    let instances = provider_instances(&exec.caches, &name);
    let (per_instance, provisioning) = task_counts(&exec.caches, &keys, &name);
    let waiting = provisioning.len() as u32;
    let input = scaling_input(
        ng,
        &group,
        &instances,
        &per_instance,
        provisioning,
        previous.empty_since.clone(),
    );
    let plan = scaling::plan(&input, now, &mut rand::rng());
    let mut desired = group.desired_capacity;
    let mut note = None;
    if Scaling::enabled(ng) {
        if let Some(to) = plan.set_desired {
            tracing::info!(provider = %name, from = desired, to, needed = plan.needed, running = plan.running, "scaling out");
            match exec.set_desired(ng, to).await {
                Ok(d) => {
                    desired = d;
                    metrics::counter!("capstan_scaler_scale_outs_total", "provider" => name.clone())
                        .increment(1);
                }
                Err(e) => note = Some(e),
            }
        }
        for ci in &plan.drain {
            if let Some(registered) = instances.get(ci) {
                tracing::info!(provider = %name, instance = %ci, "draining for scale-in");
                exec.drain(&claim, &name, registered).await?;
            }
        }
        if !plan.terminate.is_empty() {
            tracing::info!(provider = %name, instances = ?plan.terminate, "terminating empty instances");
            match exec.terminate(ng, &plan.terminate).await {
                Ok(d) => {
                    desired = d;
                    metrics::counter!("capstan_scaler_instances_terminated_total", "provider" => name.clone())
                        .increment(plan.terminate.len() as u64);
                }
                Err(e) => note = Some(e),
            }
        }
    }
    let labels = [("provider", name.clone())];
    metrics::gauge!("capstan_scaler_capacity_provider_reservation", &labels).set(plan.reservation);
    metrics::gauge!("capstan_scaler_instances_needed", &labels).set(f64::from(plan.needed));
    metrics::gauge!("capstan_scaler_instances_running", &labels).set(f64::from(plan.running));
    let mut doc = plan.status(group.min_size, group.max_size, desired, waiting);
    if note.is_some() {
        doc.message = note;
    }
    exec.put_status(&claim, &name, doc, now).await?;
    // Re-evaluate soon while something is in motion, else on the interval.
    let busy = plan.set_desired.is_some() || !plan.drain.is_empty() || !plan.terminate.is_empty();
    Ok(Action::requeue(if busy {
        ctx.interval.min(Duration::from_secs(1))
    } else {
        ctx.interval
    }))
}

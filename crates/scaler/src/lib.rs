//! `capstan-scaler`: the capacity-provider scaler. For every capacity provider it computes
//! CapacityProviderReservation from the tasks (running non-daemon ones and those waiting in
//! PROVISIONING) and the node group its provider reports, target-tracks `targetCapacity` by
//! setting the group's desired capacity (a value, never an increment, so a new leader cannot
//! double-scale), and scales in only empty instances: DRAINING first, then terminated. The
//! arithmetic is `capstan_plan::scaling`; this crate is the IO around it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::capacity::CapacityProviderStatusDoc;
use capstan_core::instance::InstanceStatus;
use capstan_core::keys::Family;
use capstan_core::service::SchedulingStrategy;
use capstan_core::task::{DesiredStatus, TaskStatus};
use capstan_core::{CapacityProvider, ContainerInstance, Service, Task};
use capstan_plan::scaling::{self, GroupInstance, Need, Scaling, ScalingInput, ScalingPlan};
use capstan_plan::scheduling::PROVIDER_ATTRIBUTE;
use capstan_proto::nodegroup::v1 as pb;
use capstan_proto::nodegroup::v1::node_group_provider_client::NodeGroupProviderClient;
use capstan_runtime::events::now;
use capstan_runtime::{Action, CommonArgs, Controller, ControllerConfig, Runtime, RuntimeError};
use capstan_store::{Cache, Claim, Store, StoreError, Write};
use futures::FutureExt;
use tonic::transport::Channel;

/// `capstan-scaler` arguments.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "capstan-scaler",
    version,
    about = "Capstan capacity-provider scaler"
)]
pub struct ScalerArgs {
    /// Shared flags (etcd, prefix, election, admin server, logs).
    #[command(flatten)]
    pub common: CommonArgs,
    /// How often each provider is evaluated (ECS: every minute), besides on every change.
    #[arg(long, env = "CAPSTAN_SCALER_INTERVAL", default_value = "10s")]
    pub interval: humantime::Duration,
}

/// The scaler's caches.
#[derive(Clone)]
pub struct Caches {
    /// Capacity provider specs.
    pub providers: Cache<CapacityProvider>,
    /// Container instances of every cluster.
    pub instances: Cache<ContainerInstance>,
    /// Tasks of every cluster.
    pub tasks: Cache<Task>,
    /// Service specs, to tell daemon tasks apart.
    pub services: Cache<Service>,
    /// Its own status documents (the scale-in evaluation clock survives a leader change).
    pub status: Cache<CapacityProviderStatusDoc>,
}

struct Ctx {
    store: Store,
    caches: Caches,
    interval: Duration,
    clients: Mutex<HashMap<String, Channel>>,
}

impl Ctx {
    async fn client(&self, endpoint: &str) -> Result<NodeGroupProviderClient<Channel>, String> {
        let cached = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(endpoint)
            .cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = capstan_proto::tls::connect(endpoint, None)
                    .await
                    .map_err(|e| format!("node-group provider {endpoint}: {e}"))?;
                self.clients
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(endpoint.to_string(), c.clone());
                c
            }
        };
        Ok(NodeGroupProviderClient::new(channel))
    }

    fn forget(&self, endpoint: &str) {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(endpoint);
    }
}

fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Container instances of `provider`, by id: (key, document, lease, mod revision).
fn provider_instances(
    caches: &Caches,
    provider: &str,
) -> HashMap<String, (String, ContainerInstance, i64, i64)> {
    caches
        .instances
        .list()
        .iter()
        .filter_map(|e| {
            let ci = e.value.as_ref().ok()?;
            (ci.attribute(PROVIDER_ATTRIBUTE) == Some(provider)).then(|| {
                (
                    last_segment(&e.key).to_string(),
                    (e.key.clone(), ci.clone(), e.lease, e.mod_revision),
                )
            })
        })
        .collect()
}

/// Tasks per instance (all, non-daemon) and the PROVISIONING tasks waiting for `provider`.
fn task_counts(
    caches: &Caches,
    keys: &capstan_core::Keys,
    provider: &str,
) -> (HashMap<String, (u32, u32)>, Vec<Need>) {
    let daemons: HashSet<(String, String)> = caches
        .services
        .list()
        .iter()
        .filter_map(|e| {
            let s = e.value.as_ref().ok()?;
            let p = keys.parse(&e.key)?;
            (s.scheduling_strategy() == SchedulingStrategy::Daemon)
                .then(|| (p.parts[0].clone(), s.task_group()))
        })
        .collect();
    let mut per_instance: HashMap<String, (u32, u32)> = HashMap::new();
    let mut waiting = Vec::new();
    for e in caches.tasks.list() {
        let Ok(t) = &e.value else { continue };
        if t.last_status == TaskStatus::Stopped {
            continue;
        }
        if t.last_status == TaskStatus::Provisioning && t.container_instance_arn.is_none() {
            if t.desired_status == DesiredStatus::Running
                && t.capacity_provider_name.as_deref() == Some(provider)
            {
                let num = |v: &Option<String>| {
                    v.as_deref()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(0)
                };
                waiting.push(Need {
                    cpu: num(&t.cpu),
                    memory: num(&t.memory),
                });
            }
            continue;
        }
        let Some(ci) = t.container_instance_arn.as_deref().map(last_segment) else {
            continue;
        };
        let cluster = keys
            .parse(&e.key)
            .and_then(|p| p.parts.first().cloned())
            .unwrap_or_default();
        let daemon = t
            .group
            .as_ref()
            .is_some_and(|g| daemons.contains(&(cluster, g.clone())));
        let c = per_instance.entry(ci.to_string()).or_default();
        c.0 += 1;
        if !daemon {
            c.1 += 1;
        }
    }
    (per_instance, waiting)
}

/// The scaler's input for one provider from its group and the caches.
fn scaling_input(
    ng: &capstan_core::capacity::NodeGroupProvider,
    group: &pb::DescribeGroupResponse,
    instances: &HashMap<String, (String, ContainerInstance, i64, i64)>,
    per_instance: &HashMap<String, (u32, u32)>,
    provisioning: Vec<Need>,
    empty_since: BTreeMap<String, f64>,
) -> ScalingInput {
    ScalingInput {
        scaling: Scaling::of(ng),
        min_size: group.min_size,
        max_size: group.max_size,
        desired: group.desired_capacity,
        instance: Need {
            cpu: group.instance_cpu,
            memory: group.instance_memory,
        },
        instances: group
            .instances
            .iter()
            .map(|i| {
                let ci = Some(i.container_instance_id.clone())
                    .filter(|c| !c.is_empty() && instances.contains_key(c));
                let (all, busy) = ci
                    .as_ref()
                    .and_then(|c| per_instance.get(c).copied())
                    .unwrap_or((0, 0));
                GroupInstance {
                    id: i.instance_id.clone(),
                    draining: ci
                        .as_ref()
                        .and_then(|c| instances.get(c))
                        .is_some_and(|(_, d, _, _)| d.status == InstanceStatus::Draining),
                    container_instance: ci,
                    launched_at: i.launched_at_ms as f64 / 1000.0,
                    busy_tasks: busy,
                    all_tasks: all,
                    terminating: i.state == pb::InstanceState::Terminating as i32,
                }
            })
            .collect(),
        provisioning,
        empty_since,
        now: now(),
    }
}

async fn put_status(
    ctx: &Ctx,
    claim: &Claim,
    name: &str,
    mut doc: CapacityProviderStatusDoc,
) -> Result<(), StoreError> {
    let key = ctx.store.keys().capacity_provider_status(name);
    let same = ctx
        .caches
        .status
        .get(&key)
        .and_then(|e| e.value.as_ref().ok().cloned())
        .is_some_and(|mut old| {
            old.updated_at = None;
            old == doc
        });
    if same {
        return Ok(());
    }
    doc.updated_at = Some(now());
    ctx.store
        .commit(Write::new().put_json(&key, &doc), Some(claim))
        .await?;
    Ok(())
}

fn status_doc(
    plan: &ScalingPlan,
    group: &pb::DescribeGroupResponse,
    desired: u32,
    provisioning: u32,
) -> CapacityProviderStatusDoc {
    CapacityProviderStatusDoc {
        capacity_provider_reservation: (plan.reservation * 100.0).round() / 100.0,
        instances_needed: plan.needed,
        running_instances: plan.running,
        desired_capacity: desired,
        min_size: group.min_size,
        max_size: group.max_size,
        provisioning_tasks: provisioning,
        empty_since: plan.empty_since.clone(),
        message: plan.held.clone().or_else(|| {
            (plan.unfit > 0).then(|| {
                format!(
                    "{} PROVISIONING tasks need more than one instance of the group holds",
                    plan.unfit
                )
            })
        }),
        updated_at: None,
    }
}

async fn reconcile(name: String, claim: Arc<Claim>, ctx: Arc<Ctx>) -> Result<Action, StoreError> {
    let keys = ctx.store.keys().clone();
    let status_key = keys.capacity_provider_status(&name);
    let Some(entry) = ctx.caches.providers.get(&keys.capacity_provider(&name)) else {
        if ctx.caches.status.get(&status_key).is_some() {
            ctx.store
                .commit(Write::new().delete(&status_key), Some(&claim))
                .await?;
        }
        return Ok(Action::await_change());
    };
    let previous = ctx
        .caches
        .status
        .get(&status_key)
        .and_then(|e| e.value.as_ref().ok().cloned())
        .unwrap_or_default();
    let cp = match &entry.value {
        Ok(cp) => cp.clone(),
        Err(e) => {
            let doc = CapacityProviderStatusDoc {
                message: Some(format!("the capacity provider spec is not valid: {e}")),
                ..previous
            };
            put_status(&ctx, &claim, &name, doc).await?;
            return Ok(Action::await_change());
        }
    };
    let ng = &cp.node_group_provider;
    let described = match ctx.client(&ng.endpoint).await {
        Ok(mut c) => c
            .describe_group(pb::DescribeGroupRequest {
                group_id: ng.group_id.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("node-group provider {}: {}", ng.endpoint, s.message())),
        Err(e) => Err(e),
    };
    let group = match described {
        Ok(g) => g,
        Err(msg) => {
            ctx.forget(&ng.endpoint);
            tracing::warn!(provider = %name, error = %msg, "cannot describe the node group");
            let doc = CapacityProviderStatusDoc {
                message: Some(msg),
                ..previous
            };
            put_status(&ctx, &claim, &name, doc).await?;
            return Ok(Action::requeue(ctx.interval));
        }
    };
    let instances = provider_instances(&ctx.caches, &name);
    let (per_instance, provisioning) = task_counts(&ctx.caches, &keys, &name);
    let waiting = provisioning.len() as u32;
    let input = scaling_input(
        ng,
        &group,
        &instances,
        &per_instance,
        provisioning,
        previous.empty_since.clone(),
    );
    let plan = scaling::plan(&input);
    let mut desired = group.desired_capacity;
    let mut note = None;
    if Scaling::enabled(ng) {
        if let Some(to) = plan.set_desired {
            tracing::info!(provider = %name, from = desired, to, needed = plan.needed, running = plan.running, "scaling out");
            match ctx.client(&ng.endpoint).await {
                Ok(mut c) => match c
                    .set_desired_capacity(pb::SetDesiredCapacityRequest {
                        group_id: ng.group_id.clone(),
                        desired_capacity: to,
                    })
                    .await
                {
                    Ok(r) => {
                        desired = r.into_inner().desired_capacity;
                        metrics::counter!("capstan_scaler_scale_outs_total", "provider" => name.clone())
                            .increment(1);
                    }
                    Err(s) => note = Some(format!("SetDesiredCapacity: {}", s.message())),
                },
                Err(e) => note = Some(e),
            }
        }
        for ci in &plan.drain {
            if let Some((key, doc, lease, rev)) = instances.get(ci) {
                let mut doc = doc.clone();
                doc.status = InstanceStatus::Draining;
                doc.status_reason =
                    Some(format!("Draining for scale-in by capacity provider {name}"));
                tracing::info!(provider = %name, instance = %ci, "draining for scale-in");
                let w = Write::new()
                    .put_json_with_lease(key, &doc, *lease)
                    .if_unchanged(key, *rev);
                match ctx.store.commit(w, Some(&claim)).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if !plan.terminate.is_empty() {
            tracing::info!(provider = %name, instances = ?plan.terminate, "terminating empty instances");
            match ctx.client(&ng.endpoint).await {
                Ok(mut c) => match c
                    .terminate_instances(pb::TerminateInstancesRequest {
                        group_id: ng.group_id.clone(),
                        instance_ids: plan.terminate.clone(),
                    })
                    .await
                {
                    Ok(r) => {
                        desired = r.into_inner().desired_capacity;
                        metrics::counter!("capstan_scaler_instances_terminated_total", "provider" => name.clone())
                            .increment(plan.terminate.len() as u64);
                    }
                    Err(s) => note = Some(format!("TerminateInstances: {}", s.message())),
                },
                Err(e) => note = Some(e),
            }
        }
    }
    let labels = [("provider", name.clone())];
    metrics::gauge!("capstan_scaler_capacity_provider_reservation", &labels).set(plan.reservation);
    metrics::gauge!("capstan_scaler_instances_needed", &labels).set(f64::from(plan.needed));
    metrics::gauge!("capstan_scaler_instances_running", &labels).set(f64::from(plan.running));
    let mut doc = status_doc(&plan, &group, desired, waiting);
    if note.is_some() {
        doc.message = note;
    }
    put_status(&ctx, &claim, &name, doc).await?;
    // Re-evaluate soon while something is in motion, else on the interval.
    let busy = plan.set_desired.is_some() || !plan.drain.is_empty() || !plan.terminate.is_empty();
    Ok(Action::requeue(if busy {
        ctx.interval.min(Duration::from_secs(1))
    } else {
        ctx.interval
    }))
}

/// Runs the scaler until SIGTERM/SIGINT.
pub async fn run(args: ScalerArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("scaler", &args.common).await?;
    let resync = Duration::from_secs(300);
    let caches = Caches {
        providers: rt.cache(
            Family::CapacityProviders,
            capstan_runtime::spec_decoder(),
            resync,
        ),
        instances: rt.cache(
            Family::ContainerInstances,
            capstan_store::json_decoder(),
            resync,
        ),
        tasks: rt.cache(Family::Tasks, capstan_store::json_decoder(), resync),
        services: rt.cache(Family::Services, capstan_runtime::spec_decoder(), resync),
        status: rt.cache(
            Family::CapacityProviderStatus,
            capstan_store::json_decoder(),
            resync,
        ),
    };
    let interval = Duration::from(args.interval);
    let ctx = Arc::new(Ctx {
        store: rt.store.clone(),
        caches: caches.clone(),
        interval,
        clients: Mutex::new(HashMap::new()),
    });
    let mut config = ControllerConfig::new("scaler");
    config.resync = interval;
    // Bursts of task changes are evaluated once.
    config.settle = Duration::from_millis(200);
    let keys = rt.store.keys().clone();
    let (k1, tasks, instances) = (keys.clone(), caches.tasks.clone(), caches.instances.clone());
    let controller = Controller::new(config)
        .watches(&caches.providers, move |k| {
            k1.parse(k)
                .and_then(|p| p.parts.first().cloned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_instances_count_only_registered_ones_and_their_tasks() {
        let group = pb::DescribeGroupResponse {
            group_id: "g".into(),
            min_size: 0,
            max_size: 10,
            desired_capacity: 2,
            instances: vec![
                pb::Instance {
                    instance_id: "i1".into(),
                    container_instance_id: "ci1".into(),
                    state: pb::InstanceState::Running as i32,
                    launched_at_ms: 1_000,
                },
                pb::Instance {
                    instance_id: "i2".into(),
                    container_instance_id: "ci2".into(),
                    state: pb::InstanceState::Running as i32,
                    launched_at_ms: 2_000,
                },
            ],
            instance_cpu: 1024,
            instance_memory: 2048,
            capacity_provider: "cp".into(),
        };
        let mut registered = HashMap::new();
        registered.insert(
            "ci1".to_string(),
            (
                "k".to_string(),
                ContainerInstance {
                    status: InstanceStatus::Draining,
                    ..Default::default()
                },
                0,
                1,
            ),
        );
        let per = HashMap::from([("ci1".to_string(), (2, 1))]);
        let ng = capstan_core::capacity::NodeGroupProvider::default();
        let input = scaling_input(&ng, &group, &registered, &per, vec![], BTreeMap::new());
        assert_eq!(
            input.instances[0].container_instance.as_deref(),
            Some("ci1")
        );
        assert!(input.instances[0].draining);
        assert_eq!(
            (input.instances[0].all_tasks, input.instances[0].busy_tasks),
            (2, 1)
        );
        assert_eq!(
            input.instances[1].container_instance, None,
            "not registered yet"
        );
        assert!((input.instances[1].launched_at - 2.0).abs() < 1e-9);
        assert_eq!(input.scaling.target_capacity, 100);
    }
}

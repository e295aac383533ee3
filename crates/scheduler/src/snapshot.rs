//! From the watch caches to the planner's input for one service.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_core::deployment::RolloutState;
use capstan_core::instance::{ContainerInstance, InstanceStatus};
use capstan_core::keys::Family;
use capstan_core::task::{DesiredStatus, Task, TaskStatus};
use capstan_core::taskdef::TaskDefinitionRef;
use capstan_core::{Deployment, Keys, Service, TaskDefinition};
use capstan_plan::placement::{self, Demand, Instance};
use capstan_plan::scheduling::{DeploymentInput, ServiceInput, TaskInput};
use capstan_store::{Cache, Decoder, Entry, json_decoder};

/// The caches the scheduler reads.
#[derive(Clone)]
pub struct Caches {
    /// Service specs (validated).
    pub services: Cache<Service>,
    /// Deployments.
    pub deployments: Cache<Deployment>,
    /// Task definitions (validated).
    pub taskdefs: Cache<TaskDefinition>,
    /// Tasks.
    pub tasks: Cache<Task>,
    /// Container instances.
    pub instances: Cache<ContainerInstance>,
    /// RunTask requests.
    pub runtask: Cache<capstan_core::requests::RunTaskRequest>,
    /// StopTask requests.
    pub stoptask: Cache<capstan_core::requests::StopTaskRequest>,
    /// Target group status (the registrar's), for the drained mark.
    pub targets: Cache<capstan_core::lb::TargetGroupStatusDoc>,
    /// Cluster specs, for the default capacity provider strategy.
    pub clusters: Cache<capstan_core::Cluster>,
}

/// The capacity provider strategy a deployment's tasks use: its own (the service's), else the
/// cluster's default when the service names no launch type.
pub fn provider_shares(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
    spec: Option<&Service>,
    deployment: &Deployment,
) -> Vec<capstan_plan::scaling::Share> {
    strategy_shares(
        caches,
        keys,
        cluster,
        &deployment.capacity_provider_strategy,
        spec.is_some_and(|s| s.launch_type.is_none()),
    )
}

/// `own` strategy, else (when `default_allowed`) the cluster's default strategy, as shares.
pub fn strategy_shares(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
    own: &[capstan_core::CapacityProviderStrategyItem],
    default_allowed: bool,
) -> Vec<capstan_plan::scaling::Share> {
    let strategy = if !own.is_empty() {
        own.to_vec()
    } else if default_allowed {
        caches
            .clusters
            .get(&keys.cluster(cluster))
            .and_then(|e| {
                e.value
                    .as_ref()
                    .ok()
                    .map(|c| c.default_capacity_provider_strategy.clone())
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    shares(strategy)
}

/// A strategy as the planner's shares.
pub fn shares(
    strategy: Vec<capstan_core::CapacityProviderStrategyItem>,
) -> Vec<capstan_plan::scaling::Share> {
    strategy
        .into_iter()
        .map(|i| capstan_plan::scaling::Share {
            provider: i.capacity_provider,
            base: i.base.unwrap_or(0),
            weight: i.weight.unwrap_or(0),
        })
        .collect()
}

/// A one-off (RunTask) task waiting in PROVISIONING for its capacity provider.
pub fn waiting_one_off(t: &Task) -> bool {
    t.last_status == TaskStatus::Provisioning
        && t.container_instance_arn.is_none()
        && t.desired_status == DesiredStatus::Running
        && !t
            .group
            .as_deref()
            .is_some_and(|g| g.starts_with("service:"))
}

pub use capstan_runtime::spec_decoder;

/// Decoder for controller-written documents.
pub fn status_decoder<T: serde::de::DeserializeOwned + Send + Sync + 'static>() -> Decoder<T> {
    json_decoder()
}

/// A service, by cluster and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Cluster.
    pub cluster: String,
    /// Service name.
    pub service: String,
}

impl ServiceKey {
    /// Its task group.
    pub fn group(&self) -> String {
        format!("service:{}", self.service)
    }
}

/// What the executor needs besides the plan.
pub struct Context {
    /// Deployments by id, with their resolved task definitions.
    pub deployments: BTreeMap<String, (Deployment, Option<Arc<TaskDefinition>>)>,
    /// The service's tasks by id.
    pub tasks: BTreeMap<String, Arc<Entry<Task>>>,
    /// The cluster's instances by id.
    pub instances: BTreeMap<String, ContainerInstance>,
}

/// The id at the end of a key or ARN.
pub fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// What a task of `td` needs from an instance.
pub fn demand(td: &TaskDefinition, group: &str) -> Demand {
    Demand {
        cpu: i64::from(td.reserved_cpu()),
        memory: i64::from(td.reserved_memory()),
        ports: td
            .container_definitions
            .iter()
            .flat_map(|c| c.port_mappings.iter().filter_map(|p| p.static_host_port()))
            .collect(),
        group: group.to_string(),
    }
}

/// A task counts against its instance until it has stopped.
fn holds_resources(t: &Task) -> bool {
    t.last_status != TaskStatus::Stopped
}

/// The cluster's instances as placement sees them, with every live task's reservation applied.
pub fn instances(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
) -> (Vec<Instance>, BTreeMap<String, ContainerInstance>) {
    let mut out = BTreeMap::new();
    let mut docs = BTreeMap::new();
    for e in caches
        .instances
        .list_prefix(&keys.list(Family::ContainerInstances, &[cluster]))
    {
        let Ok(ci) = &e.value else { continue };
        let id = last_segment(&e.key).to_string();
        let ports = ci
            .registered_resources
            .iter()
            .find(|r| r.name == "PORTS")
            .map(|r| {
                r.string_set_value
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            id.clone(),
            Instance {
                id: id.clone(),
                active: ci.status == InstanceStatus::Active,
                agent_connected: ci.agent_connected,
                attributes: ci
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
                    .collect(),
                agent_version: ci.version_info.agent_version.clone(),
                registered_at: ci.registered_at,
                remaining_cpu: ci.registered("CPU").unwrap_or(0),
                remaining_memory: ci.registered("MEMORY").unwrap_or(0),
                used_ports: ports,
                groups: Vec::new(),
            },
        );
        docs.insert(id, ci.clone());
    }
    for e in caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[cluster]))
    {
        let Ok(t) = &e.value else { continue };
        if !holds_resources(t) {
            continue;
        }
        let Some(inst) = t
            .container_instance_arn
            .as_deref()
            .and_then(|i| out.get_mut(last_segment(i)))
        else {
            continue;
        };
        inst.remaining_cpu -= t
            .cpu
            .as_deref()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        inst.remaining_memory -= t
            .memory
            .as_deref()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        if let Some(g) = &t.group {
            inst.groups.push(g.clone());
        }
        if let Some(td) = task_definition(caches, keys, &t.task_definition_arn) {
            inst.used_ports.extend(demand(&td, "").ports);
        }
    }
    (out.into_values().collect(), docs)
}

/// Resolves a deployment's `family:revision` in the task definition cache.
pub fn task_definition(caches: &Caches, keys: &Keys, reference: &str) -> Option<TaskDefinition> {
    let r = TaskDefinitionRef::parse(reference).ok()?;
    let key = keys.task_definition(&r.family, r.revision?);
    caches.taskdefs.get(&key)?.value.as_ref().ok().cloned()
}

/// Builds the planner input for one service.
pub fn gather(caches: &Caches, keys: &Keys, key: &ServiceKey) -> (ServiceInput, Context) {
    let group = key.group();
    let spec = caches
        .services
        .get(&keys.service(&key.cluster, &key.service))
        .and_then(|e| e.value.as_ref().ok().cloned());
    let mut deployments = BTreeMap::new();
    let mut inputs = Vec::new();
    for e in caches
        .deployments
        .list_prefix(&keys.list(Family::Deployments, &[&key.cluster, &key.service]))
    {
        let Ok(d) = &e.value else { continue };
        let td = task_definition(caches, keys, &d.task_definition);
        let (failures, last_failure_at) =
            launch_failures(caches, keys, &key.cluster, &group, &d.id);
        inputs.push(DeploymentInput {
            id: d.id.clone(),
            desired: d.desired_count,
            demand: td.as_ref().map(|td| demand(td, &group)),
            may_launch: d.rollout_state != RolloutState::Failed,
            failures,
            last_failure_at,
            providers: provider_shares(caches, keys, &key.cluster, spec.as_ref(), d),
        });
        deployments.insert(d.id.clone(), (d.clone(), td.map(Arc::new)));
    }
    // PRIMARY first, so its launches win placement.
    inputs.sort_by_key(|d| {
        deployments
            .get(&d.id)
            .map(|(dep, _)| dep.status != capstan_core::deployment::DeploymentStatus::Primary)
    });
    let mut tasks = BTreeMap::new();
    let mut task_inputs = Vec::new();
    let now = crate::execute::now();
    let grace = spec
        .as_ref()
        .and_then(|s| s.health_check_grace_period_seconds)
        .map_or(0.0, f64::from);
    for e in caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[&key.cluster]))
    {
        let Ok(t) = &e.value else { continue };
        if t.group.as_deref() != Some(group.as_str()) {
            continue;
        }
        task_inputs.push(TaskInput {
            id: t.id().to_string(),
            deployment: t.started_by.clone().unwrap_or_default(),
            instance: t
                .container_instance_arn
                .as_deref()
                .map(|i| last_segment(i).to_string()),
            last_status: t.last_status,
            desired_status: t.desired_status,
            health: t.health_status,
            failed_target_group: failed_target_group(caches, keys, &deployments, t, grace, now),
            provider: t.capacity_provider_name.clone(),
        });
        tasks.insert(t.id().to_string(), e.clone());
    }
    let (instances, instance_docs) = instances(caches, keys, &key.cluster);
    let (constraints, strategies, max_tasks) = match &spec {
        Some(s) => {
            let td_constraints = deployments
                .values()
                .find_map(|(_, td)| td.as_ref().map(|t| t.placement_constraints.clone()))
                .unwrap_or_default();
            let constraints = placement::constraints(&s.placement_constraints, &td_constraints)
                .unwrap_or_default();
            let desired = s.desired_count.unwrap_or(0);
            let max = (u64::from(desired) * u64::from(s.maximum_percent()) / 100) as u32;
            (
                constraints,
                placement::strategies(&s.placement_strategy),
                max,
            )
        }
        None => (Vec::new(), placement::default_strategies(), u32::MAX),
    };
    (
        ServiceInput {
            group,
            deployments: inputs,
            tasks: task_inputs,
            instances,
            constraints,
            strategies,
            max_tasks,
            now: crate::execute::now(),
            daemon: spec.as_ref().is_some_and(|s| {
                s.scheduling_strategy() == capstan_core::service::SchedulingStrategy::Daemon
            }),
        },
        Context {
            deployments,
            tasks,
            instances: instance_docs,
        },
    )
}

pub use capstan_plan::health::{QUICK_EXIT_SECS, never_started};

/// The deployment's latest tasks that stopped without ever reaching RUNNING, in a row, and when
/// the latest of them stopped. Tasks the scheduler stopped itself do not count.
pub fn launch_failures(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
    group: &str,
    deployment: &str,
) -> (u32, Option<f64>) {
    let mut mine: Vec<Task> = caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[cluster]))
        .iter()
        .filter_map(|e| e.value.as_ref().ok())
        .filter(|t| {
            t.group.as_deref() == Some(group) && t.started_by.as_deref() == Some(deployment)
        })
        .cloned()
        .collect();
    mine.sort_by(|a, b| {
        b.created_at
            .unwrap_or(0.0)
            .total_cmp(&a.created_at.unwrap_or(0.0))
    });
    let mut failures = 0;
    let mut last: Option<f64> = None;
    for t in &mine {
        if !never_started(t) {
            if t.last_status == TaskStatus::Stopped
                && t.stop_code == Some(capstan_core::task::StopCode::ServiceSchedulerInitiated)
            {
                continue;
            }
            break;
        }
        failures += 1;
        let at = t.stopped_at.unwrap_or(0.0);
        last = Some(last.map_or(at, |l: f64| l.max(at)));
    }
    (failures, last)
}

/// Whether a task still has to be stopped by its agent.
pub fn stop_pending(t: &Task) -> bool {
    t.desired_status == DesiredStatus::Stopped && t.last_status != TaskStatus::Stopped
}

/// Until when a stopping load-balanced task stays DEACTIVATING: while a target group of its
/// deployment still lists its target and has not marked it drained, at most `timeout` after the
/// stop began. `None`: StopTask may go now (no load balancer, target gone or drained, timed out).
pub fn drain_until(caches: &Caches, keys: &Keys, t: &Task, timeout: f64, now: f64) -> Option<f64> {
    use capstan_core::lb::TargetState;
    if t.last_status != TaskStatus::Deactivating {
        return None;
    }
    let service = t.group.as_deref()?.strip_prefix("service:")?;
    let cluster = last_segment(&t.cluster_arn);
    let deployment =
        caches
            .deployments
            .get(&keys.deployment(cluster, service, t.started_by.as_deref()?))?;
    let d = deployment.value.as_ref().ok()?;
    let registered = d
        .load_balancers
        .iter()
        .filter_map(|lb| lb.target_group_arn.as_deref())
        .filter_map(|tg| {
            caches
                .targets
                .get(&keys.target_group_status(capstan_core::service::lb_object_name(tg)))
        })
        .any(|e| {
            e.value.as_ref().is_ok_and(|doc| {
                doc.targets
                    .iter()
                    .any(|x| x.task_id == t.id() && x.state != TargetState::Unused && !x.drained)
            })
        });
    let until = t.stopping_at.unwrap_or(now) + timeout;
    (registered && now < until).then_some(until)
}

/// The target group, among those of the task's deployment, that reports its target unhealthy —
/// once the service's `healthCheckGracePeriodSeconds` since the task started have passed.
pub fn failed_target_group(
    caches: &Caches,
    keys: &Keys,
    deployments: &BTreeMap<String, (Deployment, Option<Arc<TaskDefinition>>)>,
    t: &Task,
    grace: f64,
    now: f64,
) -> Option<String> {
    use capstan_core::lb::TargetState;
    if t.last_status != TaskStatus::Running || t.started_at.is_none_or(|s| now - s < grace) {
        return None;
    }
    let (d, _) = deployments.get(t.started_by.as_deref()?)?;
    d.load_balancers
        .iter()
        .filter_map(|lb| lb.target_group_arn.as_deref())
        .map(capstan_core::service::lb_object_name)
        .find(|tg| {
            caches
                .targets
                .get(&keys.target_group_status(tg))
                .is_some_and(|e| {
                    e.value.as_ref().is_ok_and(|doc| {
                        doc.targets
                            .iter()
                            .any(|x| x.task_id == t.id() && x.state == TargetState::Unhealthy)
                    })
                })
        })
        .map(str::to_string)
}

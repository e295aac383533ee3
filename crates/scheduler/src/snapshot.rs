//! From the watch caches to the planners' inputs: reads only, no clock (`now` is passed in), no
//! rules of its own (those are in `capstan_plan::{scheduling, tasks, node_loss}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_core::deployment::RolloutState;
use capstan_core::instance::ContainerInstance;
use capstan_core::keys::Family;
use capstan_core::keys::ServiceKey;
use capstan_core::lb::TargetGroupStatusDoc;
use capstan_core::task::{DesiredStatus, Task, TaskProtection, TaskStatus, last_segment};
use capstan_core::taskdef::TaskDefinitionRef;
use capstan_core::{Deployment, Keys, Service, TaskDefinition};
use capstan_plan::placement::{self, Instance};
use capstan_plan::rollout::Bounds;
use capstan_plan::scheduling::{DeploymentInput, ServiceInput, TaskInput};
use capstan_plan::{node_loss, tasks};
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
    /// Task scale-in protection.
    pub protection: Cache<TaskProtection>,
}

impl Caches {
    /// Whether every cache has its first list.
    pub fn ready(&self) -> bool {
        self.services.is_ready()
            && self.deployments.is_ready()
            && self.taskdefs.is_ready()
            && self.tasks.is_ready()
            && self.instances.is_ready()
            && self.runtask.is_ready()
            && self.stoptask.is_ready()
            && self.targets.is_ready()
            && self.clusters.is_ready()
            && self.protection.is_ready()
    }
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

pub use capstan_plan::scaling::shares;

/// A one-off (RunTask) task waiting in PROVISIONING for its capacity provider.
pub fn waiting_one_off(t: &Task) -> bool {
    t.last_status == TaskStatus::Provisioning
        && t.container_instance_arn.is_none()
        && t.desired_status == DesiredStatus::Running
        && t.service().is_none()
}

pub use capstan_runtime::spec_decoder;

/// Decoder for controller-written documents.
pub fn status_decoder<T: serde::de::DeserializeOwned + Send + Sync + 'static>() -> Decoder<T> {
    json_decoder()
}

/// What the executor needs besides the plan.
pub struct Context {
    /// Deployments by id, with their resolved task definitions.
    pub deployments: BTreeMap<String, (Deployment, Option<Arc<TaskDefinition>>)>,
    /// The service's tasks by id.
    pub tasks: BTreeMap<String, Arc<Entry<Task>>>,
    /// The cluster's instances by id.
    pub instances: BTreeMap<String, ContainerInstance>,
    /// The service's new tasks allow ECS Exec.
    pub enable_execute_command: bool,
}

pub use capstan_plan::placement::demand;

/// The cluster's instances as placement sees them, with every live task's reservation held.
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
        out.insert(id.clone(), Instance::registered(&id, ci));
        docs.insert(id, ci.clone());
    }
    for e in caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[cluster]))
    {
        let Ok(t) = &e.value else { continue };
        let Some(inst) = t.instance_id().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        let ports = task_definition(caches, keys, &t.task_definition_arn)
            .map(|td| demand(&td, "").ports.into_iter().collect())
            .unwrap_or_default();
        inst.hold(t, &ports);
    }
    (out.into_values().collect(), docs)
}

/// Resolves a deployment's `family:revision` in the task definition cache.
pub fn task_definition(caches: &Caches, keys: &Keys, reference: &str) -> Option<TaskDefinition> {
    let r = TaskDefinitionRef::parse(reference).ok()?;
    let key = keys.task_definition(&r.family, r.revision?);
    caches.taskdefs.get(&key)?.value.as_ref().ok().cloned()
}

/// Builds the planner input for one service as of `now`.
pub fn gather(caches: &Caches, keys: &Keys, key: &ServiceKey, now: f64) -> (ServiceInput, Context) {
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
            protected_until: caches
                .protection
                .get(&keys.key(Family::TaskProtection, &[&key.cluster, t.id()]))
                .and_then(|e| e.value.as_ref().ok().map(|p| p.expiration_date)),
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
            let max = Bounds {
                desired: s.desired_count.unwrap_or(0),
                min_healthy_percent: 0,
                max_percent: s.maximum_percent(),
            }
            .ceiling();
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
            daemon: spec.as_ref().is_some_and(|s| {
                s.scheduling_strategy() == capstan_core::service::SchedulingStrategy::Daemon
            }),
        },
        Context {
            deployments,
            tasks,
            instances: instance_docs,
            enable_execute_command: spec
                .as_ref()
                .and_then(|s| s.enable_execute_command)
                .unwrap_or(false),
        },
    )
}

/// The deployment's tasks, for the launch-failure count.
pub fn launch_failures(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
    group: &str,
    deployment: &str,
) -> (u32, Option<f64>) {
    let entries = caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[cluster]));
    let mine: Vec<&Task> = entries
        .iter()
        .filter_map(|e| e.value.as_ref().ok())
        .filter(|t| {
            t.group.as_deref() == Some(group) && t.started_by.as_deref() == Some(deployment)
        })
        .collect();
    tasks::launch_failures(&mine)
}

/// The status documents of the target groups of a deployment, by group name.
fn target_groups(
    caches: &Caches,
    keys: &Keys,
    deployment: &Deployment,
) -> Vec<(String, Arc<Entry<TargetGroupStatusDoc>>)> {
    deployment
        .load_balancers
        .iter()
        .filter_map(|lb| lb.target_group_arn.as_deref())
        .map(capstan_core::service::lb_object_name)
        .filter_map(|tg| {
            caches
                .targets
                .get(&keys.target_group_status(tg))
                .map(|e| (tg.to_string(), e))
        })
        .collect()
}

/// Until when a stopping load-balanced task stays DEACTIVATING ([`tasks::drain_until`]), from
/// the target groups of its deployment.
pub fn drain_until(caches: &Caches, keys: &Keys, t: &Task, timeout: f64, now: f64) -> Option<f64> {
    let service = t.service()?;
    let deployment =
        caches
            .deployments
            .get(&keys.deployment(t.cluster(), service, t.started_by.as_deref()?))?;
    let d = deployment.value.as_ref().ok()?;
    let groups = target_groups(caches, keys, d);
    let docs: Vec<&TargetGroupStatusDoc> = groups
        .iter()
        .filter_map(|(_, e)| e.value.as_ref().ok())
        .collect();
    tasks::drain_until(t, tasks::registered(t.id(), &docs), timeout, now)
}

/// The next step of a task's pending stop ([`tasks::stop_step`]).
pub fn stop_step(
    caches: &Caches,
    keys: &Keys,
    t: &Task,
    instances: &BTreeMap<String, ContainerInstance>,
    drain_timeout: f64,
    now: f64,
) -> tasks::StopStep {
    let endpoint = t
        .instance_id()
        .and_then(|i| instances.get(i))
        .map(|ci| ci.agent_endpoint.as_str());
    tasks::stop_step(
        t,
        endpoint,
        drain_until(caches, keys, t, drain_timeout, now),
    )
}

/// The target group, among those of the task's deployment, that failed the task
/// ([`tasks::failed_target_group`]).
pub fn failed_target_group(
    caches: &Caches,
    keys: &Keys,
    deployments: &BTreeMap<String, (Deployment, Option<Arc<TaskDefinition>>)>,
    t: &Task,
    grace: f64,
    now: f64,
) -> Option<String> {
    let (d, _) = deployments.get(t.started_by.as_deref()?)?;
    let groups = target_groups(caches, keys, d);
    let docs: Vec<(&str, &TargetGroupStatusDoc)> = groups
        .iter()
        .filter_map(|(name, e)| e.value.as_ref().ok().map(|doc| (name.as_str(), doc)))
        .collect();
    tasks::failed_target_group(t, &docs, grace, now).map(str::to_string)
}

/// The node-loss rule's input for the tasks in `ctx` (one service's), with the clocks kept so far.
pub fn node_loss_input(
    ctx: &Context,
    missing_since: BTreeMap<String, f64>,
    grace: f64,
) -> node_loss::Input {
    node_loss::Input {
        tasks: ctx
            .tasks
            .values()
            .filter_map(|e| e.value.as_ref().ok())
            .filter(|t| t.last_status != TaskStatus::Stopped)
            .filter_map(|t| {
                Some(node_loss::Placed {
                    task: t.id().to_string(),
                    instance: t.instance_id()?.to_string(),
                })
            })
            .collect(),
        present: ctx.instances.keys().cloned().collect(),
        missing_since,
        grace,
    }
}

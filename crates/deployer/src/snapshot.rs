//! From the watch caches to the deployer planner's input for one service: reads only, no clock.

use std::collections::HashMap;

use capstan_core::deployment::Deployment;
use capstan_core::keys::{Family, ServiceKey};
use capstan_core::lb::{ListenerRoute, TargetGroupStatusDoc};
use capstan_core::requests::ContinueDeploymentRequest;
use capstan_core::service::{SchedulingStrategy, lb_object_name};
use capstan_core::task::Task;
use capstan_core::taskdef::{TaskDefinitionRef, TaskDefinitionStatus};
use capstan_core::{Keys, Service, ServiceStatusDoc, TaskDefinition};
use capstan_plan::deploy::{self, Config};
use capstan_plan::health::{HealthRules, Observed, Tally, tally};
use capstan_plan::service::fingerprint;
use capstan_store::Cache;

/// The caches the deployer reads.
#[derive(Clone)]
pub struct Caches {
    /// Service specs (validated).
    pub services: Cache<Service>,
    /// Deployments (its own).
    pub deployments: Cache<Deployment>,
    /// Task definitions (validated).
    pub taskdefs: Cache<TaskDefinition>,
    /// Tasks (the scheduler's).
    pub tasks: Cache<Task>,
    /// Target group status (the registrar's).
    pub targets: Cache<TargetGroupStatusDoc>,
    /// ContinueServiceDeployment requests.
    pub continues: Cache<ContinueDeploymentRequest>,
    /// Service status (its own).
    pub status: Cache<ServiceStatusDoc>,
    /// Listener routes (its own).
    pub routes: Cache<ListenerRoute>,
}

impl Caches {
    /// Whether every cache has loaded.
    pub fn ready(&self) -> bool {
        self.services.is_ready()
            && self.deployments.is_ready()
            && self.taskdefs.is_ready()
            && self.tasks.is_ready()
            && self.targets.is_ready()
            && self.continues.is_ready()
            && self.status.is_ready()
            && self.routes.is_ready()
    }
}

/// Resolves `family:revision` or `family` (the latest ACTIVE revision) to `family:revision`.
pub fn resolve(
    caches: &Caches,
    keys: &Keys,
    reference: &str,
) -> Result<(String, TaskDefinition), String> {
    let r = TaskDefinitionRef::parse(reference)
        .map_err(|e| format!("taskDefinition {reference:?} is not valid: {e}"))?;
    let found = match r.revision {
        Some(rev) => match caches
            .taskdefs
            .get(&keys.task_definition(&r.family, rev))
            .as_deref()
            .map(|e| &e.value)
        {
            Some(Err(why)) => {
                return Err(format!(
                    "task definition {}:{rev} is not valid: {why}",
                    r.family
                ));
            }
            Some(Ok(td)) => Some((rev, td.clone())),
            None => None,
        },
        None => caches
            .taskdefs
            .list_prefix(&keys.list(Family::TaskDefinitions, &[&r.family]))
            .iter()
            .filter_map(|e| {
                let td = e.value.as_ref().ok()?;
                let rev: u32 = keys.parse(&e.key)?.parts.get(1)?.parse().ok()?;
                (td.status.unwrap_or(TaskDefinitionStatus::Active) == TaskDefinitionStatus::Active)
                    .then(|| (rev, td.clone()))
            })
            .max_by_key(|(rev, _)| *rev),
    };
    found
        .map(|(rev, td)| (format!("{}:{rev}", r.family), td))
        .ok_or_else(|| format!("unable to find task definition {reference}"))
}

/// Looks up a resolved `family:revision`.
pub fn task_definition(caches: &Caches, keys: &Keys, reference: &str) -> Option<TaskDefinition> {
    resolve(caches, keys, reference).ok().map(|(_, td)| td)
}

/// What the planner needs of the spec, or why the spec cannot be acted on.
pub fn config(
    caches: &Caches,
    keys: &Keys,
    spec: &Service,
    mod_revision: i64,
    history: usize,
) -> Result<Config, String> {
    let reference = spec
        .task_definition
        .as_deref()
        .ok_or_else(|| "the service has no taskDefinition".to_string())?;
    let (task_definition, _) = resolve(caches, keys, reference)?;
    let dc = spec.deployment_configuration.clone().unwrap_or_default();
    Ok(Config {
        desired: spec.desired_count.unwrap_or(0),
        min_healthy_percent: spec.minimum_healthy_percent(),
        max_percent: spec.maximum_percent(),
        strategy: spec.deployment_strategy(),
        breaker: dc.deployment_circuit_breaker.clone(),
        bake_secs: f64::from(dc.bake_time_in_minutes.unwrap_or(0)) * 60.0,
        fingerprint: fingerprint(spec, mod_revision),
        task_definition,
        capacity_provider_strategy: spec.capacity_provider_strategy.clone(),
        load_balancers: spec.load_balancers.clone(),
        daemon: spec.scheduling_strategy() == SchedulingStrategy::Daemon,
        history,
    })
}

/// The service's tasks by deployment id.
pub fn tasks_by_deployment(
    caches: &Caches,
    keys: &Keys,
    key: &ServiceKey,
) -> HashMap<String, Vec<Task>> {
    let group = key.group();
    let mut out: HashMap<String, Vec<Task>> = HashMap::new();
    for e in caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[&key.cluster]))
    {
        let Ok(t) = &e.value else { continue };
        if t.group.as_deref() == Some(group.as_str()) {
            out.entry(t.started_by.clone().unwrap_or_default())
                .or_default()
                .push(t.clone());
        }
    }
    out
}

/// Adds up each deployment's tasks with its own health rules.
pub fn tallies(
    caches: &Caches,
    keys: &Keys,
    spec: Option<&Service>,
    deployments: &[Deployment],
    tasks: &HashMap<String, Vec<Task>>,
    grace_secs: f64,
    now: f64,
) -> HashMap<String, Tally> {
    let reset = spec
        .and_then(|s| s.deployment_configuration.as_ref())
        .and_then(|d| d.deployment_circuit_breaker.as_ref())
        .is_none_or(|b| b.resets_on_healthy_task());
    let mut out = HashMap::new();
    for d in deployments {
        let container_checks =
            task_definition(caches, keys, &d.task_definition).is_some_and(|td| {
                td.container_definitions
                    .iter()
                    .any(|c| c.is_essential() && c.health_check.is_some())
            });
        let groups: Vec<Option<TargetGroupStatusDoc>> = d
            .load_balancers
            .iter()
            .filter_map(|lb| lb.target_group_arn.as_deref())
            .map(|tg| {
                caches
                    .targets
                    .get(&keys.target_group_status(lb_object_name(tg)))
                    .and_then(|e| e.value.as_ref().ok().cloned())
            })
            .collect();
        let rules = HealthRules {
            grace_secs,
            container_checks,
            load_balanced: !groups.is_empty(),
        };
        let mine = tasks.get(&d.id).map(Vec::as_slice).unwrap_or_default();
        let observed: Vec<Observed<'_>> = mine
            .iter()
            .map(|t| Observed {
                task: t,
                target_healthy: groups
                    .iter()
                    .all(|g| g.as_ref().is_some_and(|g| g.is_healthy(t.id()))),
            })
            .collect();
        out.insert(d.id.clone(), tally(&observed, &rules, reset, now));
    }
    out
}

/// Whether the registrar reports `primary`'s test and production listeners routed to its
/// target groups (in their status' `listeners`).
pub fn routed(
    caches: &Caches,
    keys: &capstan_core::Keys,
    spec: &capstan_core::Service,
    primary: &Deployment,
) -> deploy::Routed {
    let mut out = deploy::Routed::default();
    for (i, lb) in spec.load_balancers.iter().enumerate() {
        let Some(adv) = &lb.advanced_configuration else {
            continue;
        };
        let Some(tg) = primary
            .load_balancers
            .get(i)
            .and_then(|l| l.target_group_arn.as_deref())
            .map(lb_object_name)
        else {
            continue;
        };
        let serving: Vec<String> = caches
            .targets
            .get(&keys.target_group_status(tg))
            .and_then(|e| e.value.as_ref().ok().cloned())
            .map(|d| d.listeners.into_iter().map(|l| l.listener).collect())
            .unwrap_or_default();
        let here = |l: &Option<String>| {
            l.as_deref()
                .is_none_or(|l| serving.iter().any(|s| s == lb_object_name(l)))
        };
        out.test &= here(&adv.test_listener_rule);
        out.production &= here(&adv.production_listener_rule);
    }
    out
}

/// Services of the cluster whose spec satisfies `pred`.
pub fn services_where(
    caches: &Caches,
    keys: &capstan_core::Keys,
    pred: impl Fn(&capstan_core::Service) -> bool,
) -> Vec<ServiceKey> {
    caches
        .services
        .list()
        .iter()
        .filter(|e| e.value.as_ref().is_ok_and(&pred))
        .filter_map(|e| keys.service_of(&e.key))
        .collect()
}

//! One-off tasks: RunTask and StopTask requests written as keys, consumed exactly once.
//! RunTask places its tasks once and never replaces them.

use std::sync::Arc;

use capstan_core::keys::Family;
use capstan_core::requests::{RunTaskFailure, RunTaskRequest, RunTaskResult, StopTaskRequest};
use capstan_core::task::{StopCode, TaskStatus};
use capstan_core::taskdef::{TaskDefinitionRef, TaskDefinitionStatus};
use capstan_core::{Keys, Tag, TaskDefinition};
use capstan_plan::placement;
use capstan_plan::run_task as run_plan;
use capstan_plan::scaling::Share;
use capstan_store::{Claim, StoreError, Write};
use rand::SeedableRng;

use capstan_plan::tasks::{self, NewTask, Placing};

use crate::execute::Launch;
use crate::reconcile::{Ctx, StopOrder, new_task_id};
use crate::snapshot::{Caches, demand, instances};

/// The task definition a reference names: its revision, or the family's latest ACTIVE one.
pub fn resolve(caches: &Caches, keys: &Keys, reference: &str) -> Option<TaskDefinition> {
    let r = TaskDefinitionRef::parse(reference).ok()?;
    match r.revision {
        Some(rev) => caches
            .taskdefs
            .get(&keys.task_definition(&r.family, rev))?
            .value
            .as_ref()
            .ok()
            .cloned(),
        None => latest_active(
            caches
                .taskdefs
                .list_prefix(&keys.list(Family::TaskDefinitions, &[&r.family]))
                .iter()
                .filter_map(|e| e.value.as_ref().ok()),
        )
        .cloned(),
    }
}

/// The family's latest ACTIVE revision among `tds`.
pub fn latest_active<'a>(
    tds: impl Iterator<Item = &'a TaskDefinition>,
) -> Option<&'a TaskDefinition> {
    tds.filter(|td| {
        td.status.unwrap_or(TaskDefinitionStatus::Active) == TaskDefinitionStatus::Active
    })
    .max_by_key(|td| td.revision.unwrap_or(0))
}

/// Consumes one RunTask request: places and starts its tasks, records what happened under
/// `status/runtask/…`, and deletes the request in the same transaction as the task records.
pub async fn run_task(
    cluster: &str,
    id: &str,
    claim: &Claim,
    ctx: &Arc<Ctx>,
    now: f64,
) -> Result<(), StoreError> {
    let caches = &ctx.exec.caches;
    let keys = &ctx.exec.keys;
    let key = keys.key(Family::RunTaskRequests, &[cluster, id]);
    let Some(entry) = caches.runtask.get(&key) else {
        return Ok(());
    };
    let mut result = RunTaskResult::default();
    let mut launches = Vec::new();
    let mut waiting = Vec::new();
    match &entry.value {
        Err(e) => result.failures.push(RunTaskFailure {
            reason: "InvalidParameterException".into(),
            detail: e.clone(),
        }),
        Ok(req) => {
            // A task definition registered just before the request may not be in the cache
            // yet (its watch runs apart from the requests'): etcd itself has it.
            let td = match resolve(caches, keys, &req.task_definition) {
                Some(td) => Some(td),
                None => ctx.exec.read_task_definition(&req.task_definition).await?,
            };
            match td {
                Some(td) => {
                    (launches, waiting) = plan_run_task(
                        (cluster, id),
                        req,
                        Arc::new(td),
                        caches,
                        keys,
                        &mut result,
                        now,
                    );
                }
                None => {
                    result.failures = run_plan::failures(
                        req.count(),
                        "ClientException",
                        format!(
                            "Unable to describe task definition {}.",
                            req.task_definition
                        ),
                    );
                }
            }
        }
    }
    result.tasks = launches
        .iter()
        .map(|l: &Launch| l.0.id().to_string())
        .chain(waiting.iter().map(|t| t.id().to_string()))
        .collect();
    let mut consume = Write::new()
        .delete(&key)
        .if_unchanged(&key, entry.mod_revision)
        .put_json(&keys.key(Family::RunTaskResults, &[cluster, id]), &result);
    // Tasks that wait for capacity are recorded in the same transaction, in PROVISIONING.
    for t in &waiting {
        let k = keys.task(cluster, t.id());
        consume = consume.put_json(&k, t).if_absent(&k);
    }
    tracing::info!(%cluster, request = %id, started = result.tasks.len(), failed = result.failures.len(), "RunTask");
    ctx.exec.launch(claim, launches, consume, now).await?;
    Ok(())
}

/// RunTask's plan: tasks to start, and (with capacity providers) tasks to record PROVISIONING.
fn plan_run_task(
    (cluster, id): (&str, &str),
    req: &RunTaskRequest,
    td: Arc<TaskDefinition>,
    caches: &Caches,
    keys: &Keys,
    result: &mut RunTaskResult,
    now: f64,
) -> (Vec<Launch>, Vec<capstan_core::Task>) {
    let count = req.count();
    let constraints =
        match placement::constraints(&req.placement_constraints, &td.placement_constraints) {
            Ok(c) => c,
            Err((field, e)) => {
                result.failures =
                    run_plan::failures(count, "InvalidParameterException", format!("{field}: {e}"));
                return (Vec::new(), Vec::new());
            }
        };
    let group = req
        .group
        .clone()
        .unwrap_or_else(|| format!("family:{}", td.family));
    let mut need = demand(&td, &group);
    if let Some(o) = &req.overrides {
        if let Some(c) = o.cpu.as_deref().and_then(|c| c.parse().ok()) {
            need.cpu = c;
        }
        if let Some(m) = o.memory.as_deref().and_then(|m| m.parse().ok()) {
            need.memory = m;
        }
    }
    let (views, docs) = instances(caches, keys, cluster);
    let mut tags = req.tags.clone();
    tags.push(Tag {
        key: "capstan:run-task-request".into(),
        value: id.to_string(),
    });
    let input = run_plan::Input {
        count,
        demand: need,
        constraints,
        strategies: placement::strategies(&req.placement_strategy),
        shares: run_task_shares(caches, keys, cluster, req),
        instances: views,
    };
    let plan = run_plan::plan(
        &input,
        now,
        &mut rand::rngs::StdRng::from_rng(&mut rand::rng()),
    );
    result.failures = plan.failures;
    let started_by = req.started_by.as_deref();
    let one_off = |placing: Placing<'_>| {
        let id = new_task_id();
        let new = NewTask {
            id: &id,
            cluster,
            group: &group,
            started_by,
            task_definition: &td,
            now,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
        };
        let mut t = tasks::new_task(new, placing);
        decorate(&mut t, req, &tags);
        t
    };
    let launches = plan
        .placed
        .iter()
        .filter_map(|inst| {
            let ci = docs.get(inst)?;
            let t = one_off(Placing::On(ci, inst));
            Some((t, td.clone(), ci.agent_endpoint.clone(), None))
        })
        .collect();
    let waiting = plan
        .waiting
        .iter()
        .map(|provider| one_off(Placing::Waiting(provider)))
        .collect();
    (launches, waiting)
}

/// RunTask's overrides and tags on a new task record.
fn decorate(t: &mut capstan_core::Task, req: &RunTaskRequest, tags: &[Tag]) {
    t.overrides = req.overrides.clone();
    t.tags = tags.to_vec();
    if let Some(o) = &req.overrides {
        t.cpu = o.cpu.clone().or(t.cpu.take());
        t.memory = o.memory.clone().or(t.memory.take());
    }
}

/// RunTask's capacity provider strategy: its own, else the cluster's default unless it names a
/// launch type.
fn run_task_shares(
    caches: &Caches,
    keys: &Keys,
    cluster: &str,
    req: &RunTaskRequest,
) -> Vec<Share> {
    crate::snapshot::strategy_shares(
        caches,
        keys,
        cluster,
        &req.capacity_provider_strategy,
        req.launch_type.is_none(),
    )
}

/// Places the one-off (RunTask) tasks of `cluster` that wait in PROVISIONING, where their
/// capacity provider now has room, and starts them.
pub async fn place_waiting(
    cluster: &str,
    claim: &Claim,
    ctx: &Arc<Ctx>,
    now: f64,
) -> Result<(), StoreError> {
    let caches = &ctx.exec.caches;
    let keys = &ctx.exec.keys;
    let (views, docs) = instances(caches, keys, cluster);
    let entries = caches
        .tasks
        .list_prefix(&keys.list(Family::Tasks, &[cluster]));
    let mut found = std::collections::HashMap::new();
    let mut waiting = Vec::new();
    for e in &entries {
        let Ok(t) = &e.value else { continue };
        if !crate::snapshot::waiting_one_off(t) {
            continue;
        }
        let (Some(provider), Some(td)) = (
            t.capacity_provider_name.as_deref(),
            resolve(caches, keys, &t.task_definition_arn).map(Arc::new),
        ) else {
            continue;
        };
        let group = t.group.clone().unwrap_or_default();
        let mut need = demand(&td, &group);
        if let Some(c) = t.cpu.as_deref().and_then(|c| c.parse().ok()) {
            need.cpu = c;
        }
        if let Some(m) = t.memory.as_deref().and_then(|m| m.parse().ok()) {
            need.memory = m;
        }
        waiting.push(run_plan::Waiting {
            task: t.id().to_string(),
            provider: provider.to_string(),
            demand: need,
            constraints: placement::constraints(&[], &td.placement_constraints).unwrap_or_default(),
        });
        found.insert(t.id().to_string(), (t, td, e.mod_revision));
    }
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut launches = Vec::new();
    for (task, inst) in run_plan::place_waiting(&waiting, &views, now, &mut rng) {
        if let (Some((t, td, rev)), Some(ci)) = (found.get(&task), docs.get(&inst)) {
            let endpoint = ci.agent_endpoint.clone();
            launches.push((
                tasks::placed(t, ci, &inst),
                td.clone(),
                endpoint,
                Some(*rev),
            ));
        }
    }
    if !launches.is_empty() {
        ctx.exec.launch(claim, launches, Write::new(), now).await?;
    }
    Ok(())
}

/// Consumes one StopTask request: the task is stopped (UserInitiated) and the request deleted.
pub async fn stop_task(
    cluster: &str,
    task_id: &str,
    claim: &Claim,
    ctx: &Arc<Ctx>,
    now: f64,
) -> Result<(), StoreError> {
    let caches = &ctx.exec.caches;
    let keys = &ctx.exec.keys;
    let key = keys.key(Family::StopTaskRequests, &[cluster, task_id]);
    let Some(entry) = caches.stoptask.get(&key) else {
        return Ok(());
    };
    let reason = match &entry.value {
        Ok(StopTaskRequest { reason }) => reason
            .clone()
            .unwrap_or_else(|| "Task stopped by the user".into()),
        Err(e) => format!("Task stopped by the user (request was invalid: {e})"),
    };
    let task = caches.tasks.get(&keys.task(cluster, task_id));
    if let Some(Ok(t)) = task.as_ref().map(|e| &e.value)
        && t.last_status != TaskStatus::Stopped
    {
        let (_, docs) = instances(caches, keys, cluster);
        let order = StopOrder {
            cluster,
            task: t.id(),
            reason: &reason,
            code: StopCode::UserInitiated,
        };
        crate::reconcile::stop(ctx, claim, order, &docs, now).await?;
    }
    ctx.exec
        .store
        .commit(
            Write::new()
                .delete(&key)
                .if_unchanged(&key, entry.mod_revision),
            Some(claim),
        )
        .await?;
    Ok(())
}

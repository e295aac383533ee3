//! One-off tasks: RunTask and StopTask requests written as keys, consumed exactly once.
//! RunTask places its tasks once and never replaces them.

use std::sync::Arc;

use capstan_core::keys::Family;
use capstan_core::requests::{RunTaskFailure, RunTaskRequest, RunTaskResult, StopTaskRequest};
use capstan_core::task::{StopCode, TaskStatus};
use capstan_core::taskdef::{TaskDefinitionRef, TaskDefinitionStatus};
use capstan_core::{Keys, Tag, TaskDefinition};
use capstan_plan::placement::{self, Reason};
use capstan_store::{Claim, StoreError, Write};
use rand::SeedableRng;

use crate::Ctx;
use crate::execute::new_standalone_task;
use crate::snapshot::{Caches, demand, instances, last_segment};

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
        None => caches
            .taskdefs
            .list_prefix(&keys.list(Family::TaskDefinitions, &[&r.family]))
            .iter()
            .filter_map(|e| e.value.as_ref().ok())
            .filter(|td| {
                td.status.unwrap_or(TaskDefinitionStatus::Active) == TaskDefinitionStatus::Active
            })
            .max_by_key(|td| td.revision.unwrap_or(0))
            .cloned(),
    }
}

fn failure_reason(r: Option<&Reason>) -> &'static str {
    match r {
        Some(Reason::Cpu) => "RESOURCE:CPU",
        Some(Reason::Memory) => "RESOURCE:MEMORY",
        Some(Reason::Ports) => "RESOURCE:PORTS",
        Some(Reason::AgentDisconnected) => "AGENT",
        Some(Reason::NotActive) => "NO ACTIVE INSTANCES",
        Some(Reason::DistinctInstance | Reason::MemberOf(_)) => "MissingAttribute",
        None => "NO ACTIVE INSTANCES",
    }
}

fn failures(n: u32, reason: &str, detail: String) -> Vec<RunTaskFailure> {
    (0..n)
        .map(|_| RunTaskFailure {
            reason: reason.to_string(),
            detail: detail.clone(),
        })
        .collect()
}

/// Consumes one RunTask request: places and starts its tasks, records what happened under
/// `status/runtask/…`, and deletes the request in the same transaction as the task records.
pub async fn run_task(
    cluster: &str,
    id: &str,
    claim: &Claim,
    ctx: &Arc<Ctx>,
) -> Result<(), StoreError> {
    let caches = &ctx.exec.caches;
    let keys = &ctx.exec.keys;
    let key = keys.key(Family::RunTaskRequests, &[cluster, id]);
    let Some(entry) = caches.runtask.get(&key) else {
        return Ok(());
    };
    let mut result = RunTaskResult::default();
    let mut launches = Vec::new();
    match &entry.value {
        Err(e) => result.failures.push(RunTaskFailure {
            reason: "InvalidParameterException".into(),
            detail: e.clone(),
        }),
        Ok(req) => launches = plan_run_task(cluster, id, req, caches, keys, &mut result),
    }
    result.tasks = launches
        .iter()
        .map(|(t, _, _): &(capstan_core::Task, TaskDefinition, String)| t.id().to_string())
        .collect();
    let consume = Write::new()
        .delete(&key)
        .if_unchanged(&key, entry.mod_revision)
        .put_json(&keys.key(Family::RunTaskResults, &[cluster, id]), &result);
    tracing::info!(%cluster, request = %id, started = result.tasks.len(), failed = result.failures.len(), "RunTask");
    ctx.exec.launch(claim, launches, consume).await?;
    Ok(())
}

fn plan_run_task(
    cluster: &str,
    id: &str,
    req: &RunTaskRequest,
    caches: &Caches,
    keys: &Keys,
    result: &mut RunTaskResult,
) -> Vec<(capstan_core::Task, TaskDefinition, String)> {
    let count = req.count();
    let Some(td) = resolve(caches, keys, &req.task_definition) else {
        result.failures = failures(
            count,
            "ClientException",
            format!(
                "Unable to describe task definition {}.",
                req.task_definition
            ),
        );
        return Vec::new();
    };
    let constraints =
        match placement::constraints(&req.placement_constraints, &td.placement_constraints) {
            Ok(c) => c,
            Err((field, e)) => {
                result.failures =
                    failures(count, "InvalidParameterException", format!("{field}: {e}"));
                return Vec::new();
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
    let (mut views, docs) = instances(caches, keys, cluster);
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let strategies = placement::strategies(&req.placement_strategy);
    let p = placement::place(
        &mut views,
        &need,
        count as usize,
        &constraints,
        &strategies,
        &mut rng,
    );
    let unplaced = count - p.placed.len() as u32;
    if let Some(f) = &p.failure
        && unplaced > 0
    {
        let detail = match &f.closest {
            Some((inst, reason)) => format!(
                "The closest matching container-instance {inst} {}",
                reason.phrase()
            ),
            None => "No Container Instances were found in your cluster.".into(),
        };
        result.failures = failures(
            unplaced,
            failure_reason(f.closest.as_ref().map(|(_, r)| r)),
            detail,
        );
    }
    let mut tags = req.tags.clone();
    tags.push(Tag {
        key: "capstan:run-task-request".into(),
        value: id.to_string(),
    });
    p.placed
        .iter()
        .filter_map(|inst| {
            let ci = docs.get(inst)?;
            let mut t = new_standalone_task(cluster, &group, req.started_by.clone(), &td, ci, inst);
            t.overrides = req.overrides.clone();
            t.tags = tags.clone();
            if let Some(o) = &req.overrides {
                t.cpu = o.cpu.clone().or(t.cpu);
                t.memory = o.memory.clone().or(t.memory);
            }
            Some((t, td.clone(), ci.agent_endpoint.clone()))
        })
        .collect()
}

/// Consumes one StopTask request: the task is stopped (UserInitiated) and the request deleted.
pub async fn stop_task(
    cluster: &str,
    task_id: &str,
    claim: &Claim,
    ctx: &Arc<Ctx>,
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
        ctx.exec
            .stop(
                claim,
                cluster,
                last_segment(&t.task_arn),
                &reason,
                StopCode::UserInitiated,
                &docs,
            )
            .await?;
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

//! Task records as the scheduler writes them, and the rules about one task that are not the
//! per-service plan: what a new record holds, how a stop changes it, whether StopTask may go yet
//! (draining), which target group failed it, and how many launches in a row failed.
//!
//! Lifecycle (ECS §1.1): a record is written PENDING on its instance (or PROVISIONING on none,
//! waiting for capacity) *before* the agent is asked to start it; a stop first sets
//! desired STOPPED and, for a task past ACTIVATING, last DEACTIVATING; StopTask goes to the agent
//! once the task's targets have drained (at most the drain timeout after the stop began); a task
//! whose agent is unknown and that never got past PENDING is recorded STOPPED at once.
//!
//! Everything here is pure: ids and `now` are passed in.

use capstan_core::TaskDefinition;
use capstan_core::instance::ContainerInstance;
use capstan_core::lb::{TargetGroupStatusDoc, TargetState};
use capstan_core::task::{Container, DesiredStatus, StopCode, Task, TaskStatus};

use crate::health::never_started;
use crate::scheduling::PROVIDER_ATTRIBUTE;

/// The ARN of a `kind` object (`task`, …) of `cluster`.
pub fn arn(kind: &str, cluster: &str, id: &str) -> String {
    format!("arn:capstan:ecs:local:000000000000:{kind}/{cluster}/{id}")
}

/// The ARN of a cluster.
pub fn cluster_arn(cluster: &str) -> String {
    format!("arn:capstan:ecs:local:000000000000:cluster/{cluster}")
}

/// Where a new task goes.
#[derive(Debug, Clone, Copy)]
pub enum Placing<'a> {
    /// On this instance (with this id), PENDING.
    On(&'a ContainerInstance, &'a str),
    /// On no instance yet: PROVISIONING until this capacity provider has room.
    Waiting(&'a str),
}

/// What every new task record needs.
#[derive(Debug, Clone, Copy)]
pub struct NewTask<'a> {
    /// Its id.
    pub id: &'a str,
    /// Cluster.
    pub cluster: &'a str,
    /// Task group: `service:<name>` or a RunTask group.
    pub group: &'a str,
    /// `startedBy`: the deployment id for a service's task.
    pub started_by: Option<&'a str>,
    /// Its task definition.
    pub task_definition: &'a TaskDefinition,
    /// When it is created, epoch seconds.
    pub now: f64,
    /// ECS Exec is allowed on it.
    pub enable_execute_command: bool,
}

fn containers(td: &TaskDefinition, status: TaskStatus) -> Vec<Container> {
    td.container_definitions
        .iter()
        .map(|c| Container {
            name: c.name.clone(),
            image: c.image.clone(),
            last_status: status,
            ..Default::default()
        })
        .collect()
}

/// A new task record, PENDING on its instance or PROVISIONING waiting for capacity.
pub fn new_task(n: NewTask<'_>, placing: Placing<'_>) -> Task {
    let td = n.task_definition;
    let status = match placing {
        Placing::On(..) => TaskStatus::Pending,
        Placing::Waiting(_) => TaskStatus::Provisioning,
    };
    let mut t = Task {
        task_arn: arn("task", n.cluster, n.id),
        cluster_arn: cluster_arn(n.cluster),
        task_definition_arn: td.family_revision(),
        last_status: status,
        desired_status: DesiredStatus::Running,
        cpu: Some(td.reserved_cpu().to_string()),
        memory: Some(td.reserved_memory().to_string()),
        containers: containers(td, status),
        started_by: n.started_by.map(str::to_string),
        group: Some(n.group.to_string()),
        version: 1,
        created_at: Some(n.now),
        enable_execute_command: n.enable_execute_command,
        ..Default::default()
    };
    match placing {
        Placing::On(instance, instance_id) => {
            t.container_instance_arn = Some(instance_id.to_string());
            t.availability_zone = zone(instance);
            t.capacity_provider_name = instance
                .capacity_provider_name
                .clone()
                .or_else(|| instance.attribute(PROVIDER_ATTRIBUTE).map(str::to_string));
        }
        Placing::Waiting(provider) => t.capacity_provider_name = Some(provider.to_string()),
    }
    t
}

fn zone(instance: &ContainerInstance) -> Option<String> {
    instance
        .attribute("ecs.availability-zone")
        .map(str::to_string)
}

/// A PROVISIONING task placed on `instance`: PENDING there, to be started.
pub fn placed(t: &Task, instance: &ContainerInstance, instance_id: &str) -> Task {
    let mut t = t.clone();
    t.container_instance_arn = Some(instance_id.to_string());
    t.last_status = TaskStatus::Pending;
    for c in &mut t.containers {
        c.last_status = TaskStatus::Pending;
    }
    t.availability_zone = zone(instance);
    t.version += 1;
    t
}

/// Records `t` STOPPED without its agent (it never ran, or its host is gone). The first stop
/// code and reason stay. Returns whether anything changed.
pub fn mark_stopped(t: &mut Task, code: StopCode, reason: &str, now: f64) -> bool {
    if t.last_status == TaskStatus::Stopped {
        return false;
    }
    t.desired_status = DesiredStatus::Stopped;
    t.last_status = TaskStatus::Stopped;
    t.stop_code.get_or_insert(code);
    t.stopped_reason.get_or_insert_with(|| reason.to_string());
    t.stopped_at = Some(now);
    for c in &mut t.containers {
        c.last_status = TaskStatus::Stopped;
    }
    true
}

/// Starts stopping `t`: desired STOPPED, DEACTIVATING if it got past ACTIVATING. Returns whether
/// anything changed (a second stop changes nothing).
pub fn begin_stop(t: &mut Task, code: StopCode, reason: &str, now: f64) -> bool {
    if t.desired_status == DesiredStatus::Stopped {
        return false;
    }
    t.desired_status = DesiredStatus::Stopped;
    if t.last_status >= TaskStatus::Activating && t.last_status < TaskStatus::Deactivating {
        t.last_status = TaskStatus::Deactivating;
    }
    t.stop_code = Some(code);
    t.stopped_reason = Some(reason.to_string());
    t.stopping_at = Some(now);
    true
}

/// Whether a task still has to be stopped by its agent.
pub fn stop_pending(t: &Task) -> bool {
    t.desired_status == DesiredStatus::Stopped && t.last_status != TaskStatus::Stopped
}

/// Whether any of `groups` (the status of the target groups of the task's deployment) still
/// lists `task`'s target, not yet drained.
pub fn registered(task: &str, groups: &[&TargetGroupStatusDoc]) -> bool {
    groups.iter().any(|doc| {
        doc.targets
            .iter()
            .any(|x| x.task_id == task && x.state != TargetState::Unused && !x.drained)
    })
}

/// Until when a stopping load-balanced task stays DEACTIVATING: while its target is `registered`
/// (and not drained), at most `timeout` seconds after the stop began. `None`: StopTask may go
/// now (not DEACTIVATING, target gone or drained, timed out).
pub fn drain_until(t: &Task, registered: bool, timeout: f64, now: f64) -> Option<f64> {
    if t.last_status != TaskStatus::Deactivating {
        return None;
    }
    let until = t.stopping_at.unwrap_or(now) + timeout;
    (registered && now < until).then_some(until)
}

/// What to do about a task whose stop is pending.
#[derive(Debug, Clone, PartialEq)]
pub enum StopStep {
    /// Its targets are draining: look again at this time.
    Wait(f64),
    /// Ask its agent (at this endpoint) to stop it.
    Call(String),
    /// Its agent is unknown and it never got past PENDING: record it STOPPED.
    RecordStopped,
    /// Its agent is unknown but it may be running: node loss will decide.
    Nothing,
}

/// The next step of a pending stop. `endpoint` is its instance's agent endpoint, when the
/// instance is registered; `drain` what [`drain_until`] said.
pub fn stop_step(t: &Task, endpoint: Option<&str>, drain: Option<f64>) -> StopStep {
    if let Some(until) = drain {
        return StopStep::Wait(until);
    }
    match endpoint {
        Some(e) => StopStep::Call(e.to_string()),
        None if t.last_status <= TaskStatus::Pending => StopStep::RecordStopped,
        None => StopStep::Nothing,
    }
}

/// The first of the task's deployment's target groups (`(name, status)`) that reports its
/// target unhealthy, once `grace` seconds (`healthCheckGracePeriodSeconds`) since it started
/// have passed.
pub fn failed_target_group<'a>(
    t: &Task,
    groups: &[(&'a str, &TargetGroupStatusDoc)],
    grace: f64,
    now: f64,
) -> Option<&'a str> {
    if t.last_status != TaskStatus::Running || t.started_at.is_none_or(|s| now - s < grace) {
        return None;
    }
    groups
        .iter()
        .find(|(_, doc)| {
            doc.targets
                .iter()
                .any(|x| x.task_id == t.id() && x.state == TargetState::Unhealthy)
        })
        .map(|(name, _)| *name)
}

/// A deployment's latest tasks (any order) that stopped without ever reaching RUNNING, in a
/// row, and when the latest of them stopped. Tasks the scheduler stopped itself do not count.
pub fn launch_failures(tasks: &[&Task]) -> (u32, Option<f64>) {
    let mut mine = tasks.to_vec();
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
                && t.stop_code == Some(StopCode::ServiceSchedulerInitiated)
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

/// The record after an agent's report (`reported`: the record with the report applied), or
/// `None` when the report changes nothing. A record never moves backwards: the scheduler's
/// DEACTIVATING outranks the agent's RUNNING.
pub fn merge_report(current: &Task, mut reported: Task) -> Option<Task> {
    reported.last_status = reported.last_status.max(current.last_status);
    (reported != *current).then_some(reported)
}

/// Whether an agent must not run a task it reports: the scheduler has no record of it, or has
/// recorded it STOPPED (its host was declared lost). A task the agent reports stopped is fine.
pub fn must_not_run(recorded: Option<&Task>, reported_stopped: bool) -> bool {
    !reported_stopped && recorded.is_none_or(|t| t.last_status == TaskStatus::Stopped)
}

/// Tasks recorded PENDING (to run) on `instance` whose ids the agent's snapshot (`known`) does
/// not list: their StartTask was lost (a leader died between the write and the call).
pub fn unacknowledged<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    instance: &str,
    known: &std::collections::HashSet<String>,
) -> Vec<&'a Task> {
    tasks
        .into_iter()
        .filter(|t| {
            t.instance_id() == Some(instance)
                && t.last_status == TaskStatus::Pending
                && t.desired_status == DesiredStatus::Running
                && !known.contains(t.id())
        })
        .collect()
}

/// Whether a STOPPED task's record has been kept for longer than `retention` seconds.
pub fn expired(t: &Task, retention: f64, now: f64) -> bool {
    t.last_status == TaskStatus::Stopped && t.stopped_at.is_some_and(|s| s < now - retention)
}

#[cfg(test)]
mod tests {
    use capstan_core::instance::Attribute;
    use capstan_core::lb::TargetStatus;
    use capstan_core::taskdef::ContainerDefinition;

    use super::*;

    fn td() -> TaskDefinition {
        TaskDefinition {
            family: "web".into(),
            revision: Some(3),
            container_definitions: vec![ContainerDefinition {
                name: "app".into(),
                image: "busybox".into(),
                cpu: Some(128),
                memory: Some(64),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn instance() -> ContainerInstance {
        ContainerInstance {
            attributes: vec![
                Attribute {
                    name: "ecs.availability-zone".into(),
                    value: Some("zone-a".into()),
                },
                Attribute {
                    name: PROVIDER_ATTRIBUTE.into(),
                    value: Some("pool".into()),
                },
            ],
            ..Default::default()
        }
    }

    fn new(placing: Placing<'_>) -> Task {
        let td = td();
        new_task(
            NewTask {
                id: "t1",
                cluster: "prod",
                group: "service:web",
                started_by: Some("d1"),
                task_definition: &td,
                now: 100.0,
                enable_execute_command: false,
            },
            placing,
        )
    }

    #[test]
    fn a_new_task_is_pending_on_its_instance_or_provisioning_for_its_provider() {
        let ci = instance();
        let t = new(Placing::On(&ci, "i-1"));
        assert_eq!(
            (t.id(), t.cluster(), t.service()),
            ("t1", "prod", Some("web"))
        );
        assert_eq!(t.last_status, TaskStatus::Pending);
        assert_eq!(t.containers[0].last_status, TaskStatus::Pending);
        assert_eq!(t.instance_id(), Some("i-1"));
        assert_eq!(t.availability_zone.as_deref(), Some("zone-a"));
        assert_eq!(t.capacity_provider_name.as_deref(), Some("pool"));
        assert_eq!(t.task_definition_arn, "web:3");
        assert_eq!(
            (t.cpu.as_deref(), t.memory.as_deref()),
            (Some("128"), Some("64"))
        );
        assert_eq!((t.created_at, t.version), (Some(100.0), 1));

        let w = new(Placing::Waiting("spot"));
        assert_eq!(w.last_status, TaskStatus::Provisioning);
        assert_eq!(w.instance_id(), None);
        assert_eq!(w.capacity_provider_name.as_deref(), Some("spot"));
        let p = placed(&w, &ci, "i-2");
        assert_eq!(
            (p.last_status, p.instance_id(), p.version),
            (TaskStatus::Pending, Some("i-2"), 2)
        );
        assert_eq!(p.availability_zone.as_deref(), Some("zone-a"));
    }

    #[test]
    fn stops_keep_the_first_reason_and_a_second_stop_changes_nothing() {
        let ci = instance();
        let mut t = new(Placing::On(&ci, "i-1"));
        t.last_status = TaskStatus::Running;
        assert!(begin_stop(
            &mut t,
            StopCode::UserInitiated,
            "by hand",
            200.0
        ));
        assert_eq!(t.last_status, TaskStatus::Deactivating);
        assert_eq!(
            (t.desired_status, t.stopping_at),
            (DesiredStatus::Stopped, Some(200.0))
        );
        assert!(stop_pending(&t));
        assert!(!begin_stop(
            &mut t,
            StopCode::ServiceSchedulerInitiated,
            "again",
            300.0
        ));
        assert!(mark_stopped(
            &mut t,
            StopCode::InfrastructureHealth,
            "host lost",
            400.0
        ));
        assert_eq!(t.stop_code, Some(StopCode::UserInitiated));
        assert_eq!(t.stopped_reason.as_deref(), Some("by hand"));
        assert_eq!(
            (t.last_status, t.stopped_at),
            (TaskStatus::Stopped, Some(400.0))
        );
        assert!(!stop_pending(&t));
        assert!(!mark_stopped(&mut t, StopCode::UserInitiated, "x", 500.0));

        // A task not yet ACTIVATING is not moved to DEACTIVATING.
        let mut p = new(Placing::On(&ci, "i-1"));
        assert!(begin_stop(&mut p, StopCode::UserInitiated, "early", 1.0));
        assert_eq!(p.last_status, TaskStatus::Pending);
    }

    fn status(task: &str, state: TargetState, drained: bool) -> TargetGroupStatusDoc {
        TargetGroupStatusDoc {
            targets: vec![TargetStatus {
                task_id: task.into(),
                state,
                drained,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_stopping_task_waits_for_its_targets_to_drain_but_not_past_the_timeout() {
        let mut t = Task {
            task_arn: "task/prod/t1".into(),
            last_status: TaskStatus::Deactivating,
            stopping_at: Some(100.0),
            ..Default::default()
        };
        let draining = status("t1", TargetState::Draining, false);
        let drained = status("t1", TargetState::Draining, true);
        let other = status("t2", TargetState::Healthy, false);
        let cases = [
            (vec![&draining], 150.0, Some(400.0)),
            (vec![&draining], 400.0, None),
            (vec![&drained], 150.0, None),
            (vec![&other], 150.0, None),
            (vec![], 150.0, None),
        ];
        for (groups, now, want) in cases {
            let r = registered(t.id(), &groups);
            assert_eq!(drain_until(&t, r, 300.0, now), want, "{groups:?} at {now}");
        }
        t.last_status = TaskStatus::Running;
        assert_eq!(drain_until(&t, true, 300.0, 150.0), None);
    }

    #[test]
    fn the_stop_step_waits_calls_or_records() {
        let mut t = Task {
            last_status: TaskStatus::Running,
            ..Default::default()
        };
        assert_eq!(
            stop_step(&t, Some("https://a:1"), Some(9.0)),
            StopStep::Wait(9.0)
        );
        assert_eq!(
            stop_step(&t, Some("https://a:1"), None),
            StopStep::Call("https://a:1".into())
        );
        assert_eq!(stop_step(&t, None, None), StopStep::Nothing);
        t.last_status = TaskStatus::Pending;
        assert_eq!(stop_step(&t, None, None), StopStep::RecordStopped);
    }

    #[test]
    fn an_unhealthy_target_fails_a_running_task_after_the_grace_period() {
        let t = Task {
            task_arn: "task/prod/t1".into(),
            last_status: TaskStatus::Running,
            started_at: Some(100.0),
            ..Default::default()
        };
        let bad = status("t1", TargetState::Unhealthy, false);
        let good = status("t1", TargetState::Healthy, false);
        let groups = [("tg-good", &good), ("tg-bad", &bad)];
        assert_eq!(
            failed_target_group(&t, &groups, 30.0, 140.0),
            Some("tg-bad")
        );
        assert_eq!(
            failed_target_group(&t, &groups, 60.0, 140.0),
            None,
            "in grace"
        );
        assert_eq!(failed_target_group(&t, &groups[..1], 30.0, 140.0), None);
    }

    #[test]
    fn a_report_never_moves_a_record_backwards_and_an_unchanged_one_is_no_write() {
        let current = Task {
            last_status: TaskStatus::Deactivating,
            ..Default::default()
        };
        let running = Task {
            last_status: TaskStatus::Running,
            ..Default::default()
        };
        assert_eq!(
            merge_report(&current, running),
            None,
            "RUNNING does not undo DEACTIVATING"
        );
        let stopped = Task {
            last_status: TaskStatus::Stopped,
            ..Default::default()
        };
        assert_eq!(
            merge_report(&current, stopped.clone()).map(|t| t.last_status),
            Some(TaskStatus::Stopped)
        );
        assert_eq!(merge_report(&stopped, stopped.clone()), None);
    }

    #[test]
    fn an_agent_may_run_only_tasks_recorded_and_not_stopped() {
        let running = Task {
            last_status: TaskStatus::Running,
            ..Default::default()
        };
        let stopped = Task {
            last_status: TaskStatus::Stopped,
            ..Default::default()
        };
        assert!(!must_not_run(Some(&running), false));
        assert!(must_not_run(Some(&stopped), false));
        assert!(must_not_run(None, false));
        assert!(!must_not_run(None, true), "already stopped on the agent");
    }

    #[test]
    fn unacknowledged_tasks_are_pending_here_and_unknown_to_the_agent() {
        let on = |id: &str, inst: &str, status: TaskStatus| Task {
            task_arn: format!("task/prod/{id}"),
            container_instance_arn: Some(inst.into()),
            last_status: status,
            ..Default::default()
        };
        let tasks = [
            on("a", "i-1", TaskStatus::Pending),
            on("b", "i-1", TaskStatus::Pending),
            on("c", "i-1", TaskStatus::Running),
            on("d", "i-2", TaskStatus::Pending),
        ];
        let known = ["b".to_string()].into();
        let ids: Vec<&str> = unacknowledged(&tasks, "i-1", &known)
            .iter()
            .map(|t| t.id())
            .collect();
        assert_eq!(ids, vec!["a"]);
    }

    #[test]
    fn stopped_records_expire_after_the_retention() {
        let t = Task {
            last_status: TaskStatus::Stopped,
            stopped_at: Some(100.0),
            ..Default::default()
        };
        assert!(!expired(&t, 3600.0, 3700.0));
        assert!(expired(&t, 3600.0, 3700.5));
        let running = Task::default();
        assert!(!expired(&running, 0.0, 1e9));
    }

    #[test]
    fn launch_failures_count_the_latest_never_started_tasks_in_a_row() {
        let task = |created: f64, status: TaskStatus, started: bool, code: Option<StopCode>| Task {
            created_at: Some(created),
            last_status: status,
            started_at: started.then_some(created + 1.0),
            stopped_at: (status == TaskStatus::Stopped).then_some(created + 2.0),
            stop_code: code,
            ..Default::default()
        };
        let failed = |c| {
            task(
                c,
                TaskStatus::Stopped,
                false,
                Some(StopCode::TaskFailedToStart),
            )
        };
        let ran = task(1.0, TaskStatus::Running, true, None);
        let scaled_in = task(
            4.0,
            TaskStatus::Stopped,
            true,
            Some(StopCode::ServiceSchedulerInitiated),
        );
        let (f2, f3) = (failed(2.0), failed(3.0));
        assert_eq!(launch_failures(&[&ran, &f3, &f2]), (2, Some(5.0)));
        // The scheduler's own stop does not break the run; a task that ran does.
        assert_eq!(
            launch_failures(&[&f2, &scaled_in, &f3, &ran]),
            (2, Some(5.0))
        );
        assert_eq!(launch_failures(&[&ran]), (0, None));
        assert_eq!(launch_failures(&[]), (0, None));
    }
}

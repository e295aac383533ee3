//! When a task counts as healthy, and when a stopped task counts as a failure (ECS §3.2, §4.3).
//!
//! Healthy: RUNNING and wanted RUNNING, and — with container health checks — HEALTHY, and —
//! with load balancers — its target healthy; with neither, RUNNING for the health grace time
//! (ECS: 40 s). Failures, for the circuit breaker and launch backoff: a task that never reached
//! RUNNING (stage 1), a task stopped for failing its health checks (stage 2) and, beyond ECS, a
//! task that reached RUNNING and then exited non-zero before it ever counted healthy.

use capstan_core::task::{DesiredStatus, HealthStatus, StopCode, Task, TaskStatus};

/// A task that exits within this long of starting counts as never having reached RUNNING: the
/// agent reports RUNNING as soon as the processes start, where ECS would see such a task go
/// from PENDING to STOPPED.
pub const QUICK_EXIT_SECS: f64 = 1.0;

/// ECS's health grace for tasks with neither health checks nor load balancers, seconds.
pub const DEFAULT_HEALTH_GRACE_SECS: f64 = 40.0;

/// Whether a stopped task failed to start: refused by its agent, or its essential container
/// exited before (or within [`QUICK_EXIT_SECS`] of) reaching RUNNING.
pub fn never_started(t: &Task) -> bool {
    if t.last_status != TaskStatus::Stopped {
        return false;
    }
    match t.stop_code {
        Some(StopCode::TaskFailedToStart) => true,
        Some(StopCode::EssentialContainerExited) => match (t.started_at, t.stopped_at) {
            (None, _) => true,
            (Some(start), Some(stop)) => stop - start < QUICK_EXIT_SECS,
            (Some(_), None) => false,
        },
        _ => false,
    }
}

/// How health is judged for a deployment's tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthRules {
    /// RUNNING this long counts as healthy when there are no container health checks.
    pub grace_secs: f64,
    /// An essential container has a health check: HEALTHY is required.
    pub container_checks: bool,
    /// The service has load balancers: a healthy target is required.
    pub load_balanced: bool,
}

/// Why a stopped task counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// It never reached RUNNING (breaker stage 1).
    Start,
    /// It was stopped for failing its health checks (breaker stage 2).
    Health,
    /// It reached RUNNING, then exited non-zero before it ever counted healthy (beyond ECS).
    ExitedBeforeHealthy,
}

/// What a task is, for the rollout and the breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Class {
    /// PENDING (or before): live, not healthy.
    Pending,
    /// RUNNING, not (yet) healthy; `healthy_at` is when the grace time makes it so.
    Running {
        /// When it will count healthy if nothing changes.
        healthy_at: Option<f64>,
    },
    /// RUNNING and healthy.
    Healthy,
    /// Stopping or stopped without counting as a failure.
    Gone,
    /// Stopped, and counts as a failure.
    Failed(FailureKind),
}

fn exited_non_zero(t: &Task) -> bool {
    t.containers
        .iter()
        .any(|c| c.exit_code.is_some_and(|code| code != 0))
}

/// When the task first counted healthy, if it ever did (`target_healthy`: its load-balancer
/// target is healthy now).
pub fn healthy_since(t: &Task, rules: &HealthRules, target_healthy: bool, now: f64) -> Option<f64> {
    let start = t.started_at?;
    let end = if t.last_status == TaskStatus::Stopped {
        t.stopped_at.unwrap_or(now)
    } else {
        now
    };
    if rules.load_balanced && t.last_status != TaskStatus::Stopped {
        // ECS: with a load balancer the target group's health decides (and the container
        // checks too, when there are some); no grace time.
        if !target_healthy {
            return None;
        }
        if !rules.container_checks {
            return Some(start);
        }
    }
    if rules.container_checks {
        return (t.health_status == HealthStatus::Healthy).then_some(start);
    }
    let at = start + rules.grace_secs;
    (at <= end).then_some(at)
}

/// Classifies one task at `now`.
pub fn classify(t: &Task, rules: &HealthRules, target_healthy: bool, now: f64) -> Class {
    if t.last_status == TaskStatus::Stopped {
        if never_started(t) {
            return Class::Failed(FailureKind::Start);
        }
        let elb = t
            .stopped_reason
            .as_deref()
            .is_some_and(|r| r.starts_with(crate::scheduling::ELB_HEALTH_FAILED));
        if t.health_status == HealthStatus::Unhealthy || elb {
            return Class::Failed(FailureKind::Health);
        }
        if t.stop_code == Some(StopCode::EssentialContainerExited)
            && exited_non_zero(t)
            && healthy_since(t, rules, target_healthy, now).is_none()
        {
            return Class::Failed(FailureKind::ExitedBeforeHealthy);
        }
        return Class::Gone;
    }
    if t.desired_status == DesiredStatus::Stopped {
        return Class::Gone;
    }
    if t.last_status != TaskStatus::Running {
        return Class::Pending;
    }
    if healthy_since(t, rules, target_healthy, now).is_some() {
        return Class::Healthy;
    }
    let healthy_at = (!rules.container_checks && (!rules.load_balanced || target_healthy))
        .then(|| t.started_at.map(|s| s + rules.grace_secs))
        .flatten();
    Class::Running { healthy_at }
}

/// What a deployment's tasks add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// PENDING or RUNNING (wanted RUNNING).
    pub live: u32,
    /// PENDING.
    pub pending: u32,
    /// RUNNING.
    pub running: u32,
    /// Healthy.
    pub healthy: u32,
    /// Failures the breaker counts (after the last healthy task when it resets on one).
    pub failures: u32,
    /// The next moment a RUNNING task will count healthy through the grace time.
    pub next_healthy_at: Option<f64>,
}

/// One task with what the tally needs beyond the task document.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The task.
    pub task: &'a Task,
    /// Its load-balancer target is healthy.
    pub target_healthy: bool,
}

/// Adds up one deployment's tasks. `reset_on_healthy`: failures before the latest moment a task
/// counted healthy are forgotten (ECS's `resetOnHealthyTask`, default true).
pub fn tally(
    tasks: &[Observed<'_>],
    rules: &HealthRules,
    reset_on_healthy: bool,
    now: f64,
) -> Tally {
    let mut out = Tally::default();
    let mut last_healthy: Option<f64> = None;
    let mut failed_at = Vec::new();
    for o in tasks {
        let t = o.task;
        if let Some(at) = healthy_since(t, rules, o.target_healthy, now) {
            last_healthy = Some(last_healthy.map_or(at, |l: f64| l.max(at)));
        }
        match classify(t, rules, o.target_healthy, now) {
            Class::Pending => {
                out.live += 1;
                out.pending += 1;
            }
            Class::Running { healthy_at } => {
                out.live += 1;
                out.running += 1;
                if let Some(at) = healthy_at {
                    out.next_healthy_at = Some(out.next_healthy_at.map_or(at, |n: f64| n.min(at)));
                }
            }
            Class::Healthy => {
                out.live += 1;
                out.running += 1;
                out.healthy += 1;
            }
            Class::Gone => {}
            Class::Failed(_) => {
                failed_at.push(t.stopped_at.unwrap_or(now));
            }
        }
    }
    out.failures = match (reset_on_healthy, last_healthy) {
        (true, Some(h)) => failed_at.iter().filter(|at| **at > h).count() as u32,
        _ => failed_at.len() as u32,
    };
    out
}

#[cfg(test)]
mod tests {
    use capstan_core::task::Container;

    use super::*;

    const RULES: HealthRules = HealthRules {
        grace_secs: 5.0,
        container_checks: false,
        load_balanced: false,
    };

    fn task(last: TaskStatus, started: Option<f64>, stopped: Option<f64>) -> Task {
        Task {
            last_status: last,
            desired_status: if last == TaskStatus::Stopped {
                DesiredStatus::Stopped
            } else {
                DesiredStatus::Running
            },
            started_at: started,
            stopped_at: stopped,
            ..Task::default()
        }
    }

    fn exited(code: i32, started: Option<f64>, stopped: f64) -> Task {
        let mut t = task(TaskStatus::Stopped, started, Some(stopped));
        t.stop_code = Some(StopCode::EssentialContainerExited);
        t.containers = vec![Container {
            exit_code: Some(code),
            ..Container::default()
        }];
        t
    }

    #[test]
    fn a_load_balanced_task_is_healthy_when_its_target_is_without_a_grace_time() {
        let lb = HealthRules {
            load_balanced: true,
            ..RULES
        };
        let t = task(TaskStatus::Running, Some(100.0), None);
        assert_eq!(
            classify(&t, &lb, false, 101.0),
            Class::Running { healthy_at: None }
        );
        assert_eq!(classify(&t, &lb, true, 101.0), Class::Healthy);
        // With container checks too, both are needed.
        let both = HealthRules {
            container_checks: true,
            ..lb
        };
        assert_ne!(classify(&t, &both, true, 101.0), Class::Healthy);
    }

    #[test]
    fn grace_time_makes_a_running_task_healthy() {
        let t = task(TaskStatus::Running, Some(100.0), None);
        assert_eq!(
            classify(&t, &RULES, false, 103.0),
            Class::Running {
                healthy_at: Some(105.0)
            }
        );
        assert_eq!(classify(&t, &RULES, false, 105.0), Class::Healthy);
        let pending = task(TaskStatus::Pending, None, None);
        assert_eq!(classify(&pending, &RULES, false, 200.0), Class::Pending);
    }

    #[test]
    fn container_checks_and_targets_decide_when_configured() {
        let mut t = task(TaskStatus::Running, Some(100.0), None);
        let checks = HealthRules {
            container_checks: true,
            ..RULES
        };
        assert!(matches!(
            classify(&t, &checks, false, 500.0),
            Class::Running { healthy_at: None }
        ));
        t.health_status = HealthStatus::Healthy;
        assert_eq!(classify(&t, &checks, false, 100.5), Class::Healthy);
        let lb = HealthRules {
            load_balanced: true,
            ..RULES
        };
        let t = task(TaskStatus::Running, Some(100.0), None);
        assert!(matches!(
            classify(&t, &lb, false, 500.0),
            Class::Running { healthy_at: None }
        ));
        assert_eq!(classify(&t, &lb, true, 500.0), Class::Healthy);
    }

    #[test]
    fn failures_by_stage() {
        let mut refused = task(TaskStatus::Stopped, None, Some(10.0));
        refused.stop_code = Some(StopCode::TaskFailedToStart);
        assert_eq!(
            classify(&refused, &RULES, false, 20.0),
            Class::Failed(FailureKind::Start)
        );
        // Exits within a second of starting: never really started.
        assert_eq!(
            classify(&exited(0, Some(10.0), 10.5), &RULES, false, 20.0),
            Class::Failed(FailureKind::Start)
        );
        // Runs 2 s, exits 1, grace 5 s: the beyond-ECS rule.
        assert_eq!(
            classify(&exited(1, Some(10.0), 12.0), &RULES, false, 20.0),
            Class::Failed(FailureKind::ExitedBeforeHealthy)
        );
        // Exits 1 after it had counted healthy: not a deployment failure.
        assert_eq!(
            classify(&exited(1, Some(10.0), 30.0), &RULES, false, 40.0),
            Class::Gone
        );
        // Exits 0 after 2 s: not a failure.
        assert_eq!(
            classify(&exited(0, Some(10.0), 12.0), &RULES, false, 20.0),
            Class::Gone
        );
        let mut unhealthy = task(TaskStatus::Stopped, Some(10.0), Some(50.0));
        unhealthy.health_status = HealthStatus::Unhealthy;
        assert_eq!(
            classify(&unhealthy, &RULES, false, 60.0),
            Class::Failed(FailureKind::Health)
        );
        // Replaced for failing its target group's health checks: stage 2.
        let mut elb = task(TaskStatus::Stopped, Some(10.0), Some(50.0));
        elb.stopped_reason = Some("Task failed ELB health checks in (target-group web-tg)".into());
        assert_eq!(
            classify(&elb, &RULES, false, 60.0),
            Class::Failed(FailureKind::Health)
        );
        // Scaled in by the scheduler: gone, not failed.
        let mut scaled = task(TaskStatus::Stopped, Some(10.0), Some(12.0));
        scaled.stop_code = Some(StopCode::ServiceSchedulerInitiated);
        assert_eq!(classify(&scaled, &RULES, false, 20.0), Class::Gone);
    }

    #[test]
    fn a_healthy_task_resets_the_failure_count_when_asked() {
        let f1 = exited(1, Some(0.0), 0.2);
        let f2 = exited(1, Some(1.0), 1.2);
        let ok = task(TaskStatus::Running, Some(2.0), None); // healthy at 7
        let f3 = exited(1, Some(8.0), 8.2);
        let obs: Vec<Observed<'_>> = [&f1, &f2, &ok, &f3]
            .iter()
            .map(|t| Observed {
                task: t,
                target_healthy: false,
            })
            .collect();
        let t = tally(&obs, &RULES, true, 10.0);
        assert_eq!(t.failures, 1);
        assert_eq!((t.live, t.running, t.healthy), (1, 1, 1));
        let t = tally(&obs, &RULES, false, 10.0);
        assert_eq!(t.failures, 3);
        // Before the grace time passed, nothing was healthy: all three count.
        let t = tally(&obs[..2], &RULES, true, 10.0);
        assert_eq!(t.failures, 2);
    }
}

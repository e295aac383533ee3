//! The service scheduler's planner: given a service's deployments (each with its own desired
//! count), its tasks and the cluster's instances, which tasks to launch where and which to stop.
//!
//! Rules: each deployment converges to its own `desiredCount`; tasks that are UNHEALTHY, or on a
//! DRAINING instance, are replaced — replacement first while the service stays within
//! `maximumPercent`, else stopped first; extra tasks are stopped by the placement strategies in
//! reverse; tasks of deployments that no longer exist are stopped.
//!
//! Task scale-in protection (ECS's `UpdateTaskProtection`): a task protected at `now` is never
//! stopped for scale-in nor because its deployment is gone or shrank, so a rolling deployment
//! waits for it; it is still replaced when it is unhealthy or its instance drains. Its protection
//! ending (the key's lease expiring) is a change the scheduler reacts to, so nothing here waits
//! on the clock for it.

use std::collections::BTreeMap;

use capstan_core::task::{DesiredStatus, HealthStatus, TaskStatus};
use rand::Rng;

use crate::placement::{self, Constraint, Demand, Failure, Instance, Placement, Strategy, Victim};
use crate::scaling::{Share, split};

/// One deployment the scheduler converges.
#[derive(Debug, Clone)]
pub struct DeploymentInput {
    /// Deployment id (tasks carry it in `startedBy`).
    pub id: String,
    /// Tasks it should have.
    pub desired: u32,
    /// What one of its tasks needs; `None` when its task definition is unknown (no launches).
    pub demand: Option<Demand>,
    /// Whether it may launch tasks (a FAILED deployment launches none).
    pub may_launch: bool,
    /// Its latest tasks that stopped without ever reaching RUNNING, in a row.
    pub failures: u32,
    /// When the latest of those stopped (epoch seconds).
    pub last_failure_at: Option<f64>,
    /// Capacity provider strategy; empty: plain placement on any instance.
    pub providers: Vec<Share>,
}

/// The instance attribute naming the capacity provider that launched it.
pub const PROVIDER_ATTRIBUTE: &str = "capstan.capacity-provider";

/// First delay of the launch backoff, seconds.
pub const LAUNCH_BACKOFF_BASE_SECS: f64 = 10.0;
/// Longest delay of the launch backoff (ECS: 15 minutes).
pub const LAUNCH_BACKOFF_CAP_SECS: f64 = 900.0;

/// Seconds to wait after the last failure before launching again: none after the first failure,
/// then 10 s doubling per further failure, capped at 15 minutes (ECS's throttle logic publishes
/// only the cap).
pub fn launch_backoff(failures: u32) -> f64 {
    if failures < 2 {
        return 0.0;
    }
    let exp = (failures - 2).min(16);
    (LAUNCH_BACKOFF_BASE_SECS * f64::from(1u32 << exp)).min(LAUNCH_BACKOFF_CAP_SECS)
}

/// One task of the service.
#[derive(Debug, Clone)]
pub struct TaskInput {
    /// Task id.
    pub id: String,
    /// Deployment id from `startedBy`.
    pub deployment: String,
    /// Instance it is placed on.
    pub instance: Option<String>,
    /// Status.
    pub last_status: TaskStatus,
    /// Desired status.
    pub desired_status: DesiredStatus,
    /// Health.
    pub health: HealthStatus,
    /// A target group that reports this task's target unhealthy (past the grace period).
    pub failed_target_group: Option<String>,
    /// Capacity provider it runs on or waits for.
    pub provider: Option<String>,
    /// Until when it is protected from scale-in (epoch seconds), if it is.
    pub protected_until: Option<f64>,
}

impl TaskInput {
    fn live(&self) -> bool {
        self.desired_status == DesiredStatus::Running && self.last_status != TaskStatus::Stopped
    }

    fn protected(&self, now: f64) -> bool {
        self.protected_until.is_some_and(|until| until > now)
    }
}

/// Everything the planner needs about one service.
#[derive(Debug, Clone)]
pub struct ServiceInput {
    /// Task group, `service:<name>`.
    pub group: String,
    /// Deployments, PRIMARY first.
    pub deployments: Vec<DeploymentInput>,
    /// Its tasks.
    pub tasks: Vec<TaskInput>,
    /// The cluster's instances, with what is placed on them.
    pub instances: Vec<Instance>,
    /// Placement constraints.
    pub constraints: Vec<Constraint>,
    /// Placement strategies.
    pub strategies: Vec<Strategy>,
    /// Most PENDING + RUNNING tasks over all deployments: floor(D × maximumPercent / 100).
    pub max_tasks: u32,
    /// DAEMON: one task of the PRIMARY deployment on every eligible instance.
    pub daemon: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a task of `deployment` on `instance`.
    Launch {
        /// Deployment id.
        deployment: String,
        /// Instance id.
        instance: String,
    },
    /// Record a task of `deployment` in PROVISIONING: its capacity provider has no room yet.
    Provision {
        /// Deployment id.
        deployment: String,
        /// Capacity provider it waits for.
        provider: String,
    },
    /// Place a PROVISIONING task on `instance` now that there is room, and start it.
    Place {
        /// Task id.
        task: String,
        /// Instance id.
        instance: String,
    },
    /// Stop a task.
    Stop {
        /// Task id.
        task: String,
        /// stoppedReason.
        reason: String,
    },
}

/// The plan for one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Actions, launches before stops.
    pub actions: Vec<Action>,
    /// Why tasks could not be placed, if some could not.
    pub failure: Option<Failure>,
    /// Launches held back by the launch backoff: seconds until they may go.
    pub throttled: Option<f64>,
}

/// Why a live task must be replaced, if it must.
fn doomed(t: &TaskInput, instances: &BTreeMap<&str, &Instance>) -> Option<String> {
    if t.health == HealthStatus::Unhealthy {
        return Some("Task failed container health checks".into());
    }
    if let Some(tg) = &t.failed_target_group {
        return Some(format!("{ELB_HEALTH_FAILED} (target-group {tg})"));
    }
    match t.instance.as_deref().and_then(|i| instances.get(i)) {
        Some(i) if !i.active => Some("Task stopped during instance draining".into()),
        _ => None,
    }
}

/// Start of the stoppedReason of a task replaced because its target failed health checks (ECS's
/// wording).
pub const ELB_HEALTH_FAILED: &str = "Task failed ELB health checks in";

/// Plans a DAEMON service: one task of the PRIMARY deployment on every ACTIVE instance that
/// satisfies the constraints and has room; tasks on other instances stop; an instance still
/// running an older deployment's task has it stopped first (maximumPercent 100).
fn plan_daemon(input: &ServiceInput) -> Plan {
    let mut out = Plan::default();
    let mut instances = input.instances.clone();
    let live: Vec<&TaskInput> = input.tasks.iter().filter(|t| t.live()).collect();
    let Some(primary) = input.deployments.first() else {
        for t in live {
            out.actions.push(Action::Stop {
                task: t.id.clone(),
                reason: "Service has no deployment".into(),
            });
        }
        return out;
    };
    for inst in &mut instances {
        let here: Vec<&&TaskInput> = live
            .iter()
            .filter(|t| t.instance.as_deref() == Some(inst.id.as_str()))
            .collect();
        // Eligibility ignores this service's own tasks already there.
        let mut probe = inst.clone();
        probe.groups.retain(|g| *g != input.group);
        let eligible = match &primary.demand {
            Some(d) => {
                let mut others = probe.clone();
                for _ in &here {
                    others.remaining_cpu += d.cpu;
                    others.remaining_memory += d.memory;
                }
                placement::check(&others, d, &input.constraints).is_ok()
            }
            None => false,
        };
        let (mine, old): (Vec<&&TaskInput>, Vec<&&TaskInput>) =
            here.iter().partition(|t| t.deployment == primary.id);
        if !inst.active || !eligible {
            for t in &here {
                out.actions.push(Action::Stop {
                    task: t.id.clone(),
                    reason: if inst.active {
                        "Task no longer satisfies the daemon's placement".into()
                    } else {
                        "Task stopped during instance draining".into()
                    },
                });
            }
            continue;
        }
        for t in mine.iter().skip(1).chain(old.iter()) {
            out.actions.push(Action::Stop {
                task: t.id.clone(),
                reason: format!("Scaling activity initiated by (deployment {})", primary.id),
            });
        }
        if mine.is_empty()
            && old.is_empty()
            && primary.may_launch
            && let Some(d) = &primary.demand
        {
            placement::reserve(inst, d);
            out.actions.push(Action::Launch {
                deployment: primary.id.clone(),
                instance: inst.id.clone(),
            });
        }
    }
    // Tasks on instances that are gone are handled as lost by the executor.
    out
}

/// Places `n` tasks on the instances of capacity provider `provider` only; reservations are
/// written back to `instances`.
pub fn place_on<R: Rng + ?Sized>(
    instances: &mut [Instance],
    provider: &str,
    demand: &Demand,
    n: usize,
    (constraints, strategies): (&[Constraint], &[Strategy]),
    rng: &mut R,
) -> Placement {
    let mut pool: Vec<Instance> = instances
        .iter()
        .filter(|i| i.attributes.get(PROVIDER_ATTRIBUTE).map(String::as_str) == Some(provider))
        .cloned()
        .collect();
    let p = placement::place(&mut pool, demand, n, constraints, strategies, rng);
    for inst in pool {
        if let Some(slot) = instances.iter_mut().find(|i| i.id == inst.id) {
            *slot = inst;
        }
    }
    p
}

/// A capacity-provider deployment: waiting tasks are placed where their provider now has room,
/// then each provider's share (base, then weight) is filled — on its own instances, or as
/// PROVISIONING tasks for the scaler when they are full. Returns the tasks added.
fn provider_launches<R: Rng + ?Sized>(
    d: &DeploymentInput,
    good: &[&&TaskInput],
    instances: &mut [Instance],
    input: &ServiceInput,
    mut room: u32,
    out: &mut Plan,
    rng: &mut R,
) -> u32 {
    let Some(demand) = &d.demand else { return 0 };
    for t in good
        .iter()
        .filter(|t| t.last_status == TaskStatus::Provisioning && t.instance.is_none())
    {
        let Some(provider) = &t.provider else {
            continue;
        };
        if let Some(instance) = place_on(
            instances,
            provider,
            demand,
            1,
            (&input.constraints, &input.strategies),
            rng,
        )
        .placed
        .pop()
        {
            out.actions.push(Action::Place {
                task: t.id.clone(),
                instance,
            });
        }
    }
    let shares = split(d.desired, &d.providers);
    let mut added = 0;
    for (share, want) in d.providers.iter().zip(shares) {
        let have = good
            .iter()
            .filter(|t| t.provider.as_deref() == Some(share.provider.as_str()))
            .count() as u32;
        let n = want.saturating_sub(have).min(room);
        if n == 0 {
            continue;
        }
        room -= n;
        added += n;
        let p = place_on(
            instances,
            &share.provider,
            demand,
            n as usize,
            (&input.constraints, &input.strategies),
            rng,
        );
        let placed = p.placed.len() as u32;
        for instance in p.placed {
            out.actions.push(Action::Launch {
                deployment: d.id.clone(),
                instance,
            });
        }
        for _ in placed..n {
            out.actions.push(Action::Provision {
                deployment: d.id.clone(),
                provider: share.provider.clone(),
            });
        }
    }
    added
}

/// Scale-in of a capacity-provider deployment: from the providers above their share, waiting
/// (PROVISIONING) tasks first, then by the placement strategies in reverse.
fn provider_victims<R: Rng + ?Sized>(
    d: &DeploymentInput,
    good: &[&&TaskInput],
    now: f64,
    instances: &[Instance],
    input: &ServiceInput,
    out: &mut Plan,
    rng: &mut R,
) {
    let shares = split(d.desired, &d.providers);
    let mut surplus: Vec<(Option<&str>, usize)> = d
        .providers
        .iter()
        .zip(shares)
        .map(|(s, want)| {
            let have = good
                .iter()
                .filter(|t| t.provider.as_deref() == Some(s.provider.as_str()))
                .count();
            (
                Some(s.provider.as_str()),
                have.saturating_sub(want as usize),
            )
        })
        .collect();
    // Tasks of providers no longer in the strategy all go.
    let others = good
        .iter()
        .filter(|t| {
            !d.providers
                .iter()
                .any(|s| t.provider.as_deref() == Some(s.provider.as_str()))
        })
        .count();
    surplus.push((None, others));
    for (provider, n) in surplus {
        if n == 0 {
            continue;
        }
        let victims: Vec<Victim> = good
            .iter()
            .filter(|t| !t.protected(now))
            .filter(|t| match provider {
                Some(p) => t.provider.as_deref() == Some(p),
                None => !d
                    .providers
                    .iter()
                    .any(|s| t.provider.as_deref() == Some(s.provider.as_str())),
            })
            .map(|t| Victim {
                task_id: t.id.clone(),
                instance: t.instance.clone().unwrap_or_default(),
                preference: match t.last_status {
                    TaskStatus::Provisioning => 0,
                    TaskStatus::Running => 2,
                    _ => 1,
                },
            })
            .collect();
        let n = n.min(victims.len());
        for task in
            placement::choose_victims(&victims, n, instances, &input.group, &input.strategies, rng)
        {
            out.actions.push(Action::Stop {
                task,
                reason: format!("Scaling activity initiated by (deployment {})", d.id),
            });
        }
    }
}

/// Task ids listed in an event: ECS's `(task <id>)` items, the first few only, so an event about
/// thousands of tasks stays a small document.
pub fn task_list<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let n = ids.len();
    let mut out = ids
        .take(SHOWN)
        .map(|i| format!("(task {i})"))
        .collect::<Vec<_>>()
        .join(" ");
    if n > SHOWN {
        out.push_str(&format!(" and {} more", n - SHOWN));
    }
    out
}

/// Plans one service at `now` (epoch seconds).
pub fn plan<R: Rng + ?Sized>(input: &ServiceInput, now: f64, rng: &mut R) -> Plan {
    if input.daemon {
        return plan_daemon(input);
    }
    let mut out = Plan::default();
    let mut instances = input.instances.clone();
    let by_id: BTreeMap<&str, &Instance> =
        input.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let live: Vec<&TaskInput> = input.tasks.iter().filter(|t| t.live()).collect();
    let mut total_live = live.len() as u32;

    for t in &live {
        if !input.deployments.iter().any(|d| d.id == t.deployment) && !t.protected(now) {
            out.actions.push(Action::Stop {
                task: t.id.clone(),
                reason: format!(
                    "Scaling activity initiated by (deployment {})",
                    t.deployment
                ),
            });
            total_live -= 1;
        }
    }

    for d in &input.deployments {
        let mine: Vec<&&TaskInput> = live.iter().filter(|t| t.deployment == d.id).collect();
        let (bad, good): (Vec<&&TaskInput>, Vec<&&TaskInput>) =
            mine.iter().partition(|t| doomed(t, &by_id).is_some());
        let good_n = good.len() as u32;
        let running_good = good
            .iter()
            .filter(|t| t.last_status == TaskStatus::Running)
            .count() as u32;

        let wait = d
            .last_failure_at
            .map_or(0.0, |at| at + launch_backoff(d.failures) - now);
        if good_n < d.desired && wait > 0.0 {
            out.throttled = Some(out.throttled.map_or(wait, |w: f64| w.min(wait)));
        }
        if !d.providers.is_empty() {
            if d.may_launch && wait <= 0.0 {
                let room = input.max_tasks.saturating_sub(total_live);
                let room = if bad.is_empty() { u32::MAX } else { room };
                total_live +=
                    provider_launches(d, &good, &mut instances, input, room, &mut out, rng);
            }
        } else if good_n < d.desired
            && d.may_launch
            && wait <= 0.0
            && let Some(demand) = &d.demand
        {
            let want = d.desired - good_n;
            let room = input.max_tasks.saturating_sub(total_live);
            let n = want.min(room.max(if bad.is_empty() { want } else { 0 }));
            let p = placement::place(
                &mut instances,
                demand,
                n as usize,
                &input.constraints,
                &input.strategies,
                rng,
            );
            total_live += p.placed.len() as u32;
            for instance in p.placed {
                out.actions.push(Action::Launch {
                    deployment: d.id.clone(),
                    instance,
                });
            }
            if p.failure.is_some() {
                out.failure = p.failure;
            }
        }
        // Doomed tasks go once their replacements run, or at once when no replacement can start
        // first (the service is at maximumPercent, or nothing can be launched).
        let replaced = running_good >= d.desired;
        let blocked = total_live >= input.max_tasks || !d.may_launch || d.demand.is_none();
        for t in &bad {
            if replaced || blocked {
                out.actions.push(Action::Stop {
                    task: t.id.clone(),
                    reason: doomed(t, &by_id).unwrap_or_default(),
                });
                total_live = total_live.saturating_sub(1);
            }
        }
        if good_n > d.desired && !d.providers.is_empty() {
            provider_victims(d, &good, now, &instances, input, &mut out, rng);
        } else if good_n > d.desired {
            let victims: Vec<Victim> = good
                .iter()
                .filter(|t| !t.protected(now))
                .map(|t| Victim {
                    task_id: t.id.clone(),
                    instance: t.instance.clone().unwrap_or_default(),
                    preference: u8::from(t.last_status == TaskStatus::Running),
                })
                .collect();
            let surplus = ((good_n - d.desired) as usize).min(victims.len());
            for task in placement::choose_victims(
                &victims,
                surplus,
                &instances,
                &input.group,
                &input.strategies,
                rng,
            ) {
                out.actions.push(Action::Stop {
                    task,
                    reason: format!("Scaling activity initiated by (deployment {})", d.id),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::placement::default_strategies;

    fn inst(id: &str, zone: &str) -> Instance {
        Instance {
            id: id.into(),
            active: true,
            agent_connected: true,
            attributes: BTreeMap::from([("ecs.availability-zone".into(), zone.into())]),
            remaining_cpu: 4096,
            remaining_memory: 4096,
            ..Default::default()
        }
    }

    /// The tables' clock, epoch seconds.
    const NOW: f64 = 1000.0;

    fn task(id: &str, dep: &str, instance: &str, status: TaskStatus) -> TaskInput {
        TaskInput {
            id: id.into(),
            deployment: dep.into(),
            instance: Some(instance.into()),
            failed_target_group: None,
            provider: None,
            last_status: status,
            desired_status: DesiredStatus::Running,
            health: HealthStatus::Unknown,
            protected_until: None,
        }
    }

    fn protected(mut t: TaskInput, until: f64) -> TaskInput {
        t.protected_until = Some(until);
        t
    }

    fn input(desired: u32, tasks: Vec<TaskInput>) -> ServiceInput {
        ServiceInput {
            group: "service:web".into(),
            deployments: vec![DeploymentInput {
                id: "d1".into(),
                desired,
                demand: Some(Demand {
                    cpu: 128,
                    memory: 64,
                    ports: vec![],
                    group: "service:web".into(),
                }),
                may_launch: true,
                failures: 0,
                last_failure_at: None,
                providers: vec![],
            }],
            tasks,
            instances: vec![inst("a", "za"), inst("b", "zb"), inst("c", "zc")],
            constraints: vec![],
            strategies: default_strategies(),
            max_tasks: desired * 2,
            daemon: false,
        }
    }

    fn launches(p: &Plan) -> Vec<String> {
        let mut v: Vec<String> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Launch { instance, .. } => Some(instance.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn stops(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { task, .. } => Some(task.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn missing_tasks_are_launched_across_zones() {
        let p = plan(&input(3, vec![]), NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(launches(&p), vec!["a", "b", "c"]);
    }

    #[test]
    fn a_stopped_task_is_replaced_and_extra_tasks_are_stopped() {
        let mut t = task("t1", "d1", "a", TaskStatus::Stopped);
        t.desired_status = DesiredStatus::Stopped;
        let p = plan(
            &input(2, vec![t, task("t2", "d1", "b", TaskStatus::Running)]),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(launches(&p).len(), 1);
        let p = plan(
            &input(
                1,
                vec![
                    task("t1", "d1", "a", TaskStatus::Running),
                    task("t2", "d1", "a", TaskStatus::Pending),
                ],
            ),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(stops(&p), vec!["t2"], "a task not yet running goes first");
    }

    #[test]
    fn a_task_failing_elb_health_checks_is_replaced_with_ecs_reason() {
        let mut sick = task("t1", "d1", "a", TaskStatus::Running);
        sick.failed_target_group = Some("web-tg".into());
        let mut i = input(2, vec![sick, task("t2", "d1", "b", TaskStatus::Running)]);
        i.max_tasks = 2;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            p.actions,
            vec![Action::Stop {
                task: "t1".into(),
                reason: "Task failed ELB health checks in (target-group web-tg)".into()
            }]
        );
    }

    #[test]
    fn unhealthy_and_draining_tasks_are_replaced_first_within_maximum_percent() {
        let mut sick = task("t1", "d1", "a", TaskStatus::Running);
        sick.health = HealthStatus::Unhealthy;
        let tasks = vec![sick, task("t2", "d1", "b", TaskStatus::Running)];
        let p = plan(&input(2, tasks.clone()), NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(launches(&p).len(), 1, "replacement first");
        assert!(
            stops(&p).is_empty(),
            "the sick task waits for its replacement"
        );
        // At maximumPercent 100 there is no room: stop first.
        let mut i = input(2, tasks);
        i.max_tasks = 2;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(stops(&p), vec!["t1"]);
        // Once the replacement runs, the sick task goes.
        let mut sick = task("t1", "d1", "a", TaskStatus::Running);
        sick.health = HealthStatus::Unhealthy;
        let p = plan(
            &input(
                2,
                vec![
                    sick,
                    task("t2", "d1", "b", TaskStatus::Running),
                    task("t3", "d1", "c", TaskStatus::Running),
                ],
            ),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(stops(&p), vec!["t1"]);
        assert!(launches(&p).is_empty());

        let mut i = input(1, vec![task("t1", "d1", "a", TaskStatus::Running)]);
        i.instances[0].active = false;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(launches(&p).len(), 1);
        assert_ne!(
            launches(&p),
            vec!["a"],
            "nothing new on a draining instance"
        );
    }

    #[test]
    fn launches_back_off_after_repeated_failures_to_start() {
        assert_eq!(launch_backoff(0), 0.0);
        assert_eq!(launch_backoff(1), 0.0);
        assert_eq!(launch_backoff(2), 10.0);
        assert_eq!(launch_backoff(3), 20.0);
        assert_eq!(launch_backoff(6), 160.0);
        assert_eq!(launch_backoff(40), 900.0);
        let mut i = input(1, vec![]);
        i.deployments[0].failures = 3;
        i.deployments[0].last_failure_at = Some(990.0);
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert!(launches(&p).is_empty());
        assert_eq!(p.throttled, Some(10.0));
        let p = plan(&i, NOW + 10.0, &mut StdRng::seed_from_u64(1));
        assert_eq!(launches(&p).len(), 1);
        assert_eq!(p.throttled, None);
    }

    #[test]
    fn daemons_run_once_on_every_eligible_instance() {
        let mut i = input(0, vec![task("t1", "d1", "a", TaskStatus::Running)]);
        i.daemon = true;
        i.instances[2].active = false;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            launches(&p),
            vec!["b"],
            "one per ACTIVE instance, none twice"
        );
        assert!(stops(&p).is_empty());
        // A draining instance's daemon task stops and is not replaced elsewhere.
        let mut i = input(
            0,
            vec![
                task("t1", "d1", "a", TaskStatus::Running),
                task("t2", "d1", "b", TaskStatus::Running),
            ],
        );
        i.daemon = true;
        i.instances[0].active = false;
        i.instances.pop();
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(stops(&p), vec!["t1"]);
        assert!(launches(&p).is_empty());
        // An older deployment's task is stopped before the new one starts there.
        let mut i = input(0, vec![task("old", "d0", "a", TaskStatus::Running)]);
        i.daemon = true;
        i.instances.truncate(1);
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(stops(&p), vec!["old"]);
        assert!(launches(&p).is_empty());
    }

    #[test]
    fn scale_in_passes_over_protected_tasks_until_their_protection_ends() {
        let r = TaskStatus::Running;
        let tasks = vec![
            protected(task("t1", "d1", "a", r), NOW + 60.0),
            protected(task("t2", "d1", "b", r), NOW + 60.0),
            task("t3", "d1", "a", r),
        ];
        let p = plan(&input(1, tasks.clone()), NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(stops(&p), vec!["t3"], "only the unprotected task goes");
        // Every task protected: nothing is stopped, however far above desired.
        let all: Vec<TaskInput> = tasks
            .iter()
            .map(|t| protected(t.clone(), NOW + 60.0))
            .collect();
        assert!(stops(&plan(&input(0, all), NOW, &mut StdRng::seed_from_u64(1))).is_empty());
        // A protection that has ended protects nothing.
        let mut s = stops(&plan(
            &input(1, tasks),
            NOW + 61.0,
            &mut StdRng::seed_from_u64(1),
        ));
        s.sort();
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|t| ["t1", "t2", "t3"].contains(&t.as_str())));
    }

    #[test]
    fn a_protected_task_outlives_its_deployment_but_not_its_health() {
        let r = TaskStatus::Running;
        let p = plan(
            &input(
                1,
                vec![
                    task("t1", "d1", "a", r),
                    protected(task("old", "gone", "b", r), NOW + 60.0),
                ],
            ),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert!(stops(&p).is_empty(), "a rolling deployment waits for it");
        let mut sick = protected(task("t2", "d1", "b", r), NOW + 60.0);
        sick.health = HealthStatus::Unhealthy;
        let p = plan(
            &input(2, vec![task("t1", "d1", "a", r), sick]),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(
            launches(&p).len(),
            1,
            "an unhealthy protected task is replaced"
        );
    }

    #[test]
    fn tasks_of_unknown_deployments_are_stopped() {
        let p = plan(
            &input(0, vec![task("old", "d0", "a", TaskStatus::Running)]),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(stops(&p), vec!["old"]);
    }

    #[test]
    fn no_room_reports_the_closest_instance() {
        let mut i = input(1, vec![]);
        for inst in &mut i.instances {
            inst.remaining_memory = 10;
        }
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert!(launches(&p).is_empty());
        let msg = p.failure.expect("failure").message("web");
        assert!(msg.contains("has insufficient memory available."), "{msg}");
    }

    fn provider_input(desired: u32, tasks: Vec<TaskInput>, b_instances: usize) -> ServiceInput {
        let mut i = input(desired, tasks);
        i.deployments[0].providers = vec![
            Share {
                provider: "A".into(),
                base: 2,
                weight: 1,
            },
            Share {
                provider: "B".into(),
                base: 0,
                weight: 3,
            },
        ];
        i.max_tasks = desired * 2;
        let mut instances = Vec::new();
        for (id, p) in [("a1", "A"), ("a2", "A")]
            .into_iter()
            .chain([("b1", "B"), ("b2", "B")].into_iter().take(b_instances))
        {
            let mut x = inst(id, "za");
            x.attributes.insert(PROVIDER_ATTRIBUTE.into(), p.into());
            instances.push(x);
        }
        i.instances = instances;
        i
    }

    fn provisions(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::Provision { provider, .. } => Some(provider.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn capacity_provider_strategy_splits_base_then_weight_on_each_providers_instances() {
        let p = plan(
            &provider_input(10, vec![], 2),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        let l = launches(&p);
        assert_eq!(l.iter().filter(|i| i.starts_with('a')).count(), 4);
        assert_eq!(l.iter().filter(|i| i.starts_with('b')).count(), 6);
        assert!(p.failure.is_none());
    }

    #[test]
    fn tasks_that_fit_nowhere_wait_in_provisioning_then_are_placed() {
        // B has no instances: its 6 tasks wait for the scaler, without a placement failure.
        let p = plan(
            &provider_input(10, vec![], 0),
            NOW,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(launches(&p).len(), 4);
        assert_eq!(provisions(&p), vec!["B"; 6]);
        assert!(p.failure.is_none() && p.throttled.is_none());
        // A waiting task counts toward the share (nothing new) and is placed once B has room.
        let mut waiting = task("w1", "d1", "", TaskStatus::Provisioning);
        waiting.instance = None;
        waiting.provider = Some("B".into());
        let i = provider_input(1, vec![waiting.clone()], 0);
        let mut i = i;
        i.deployments[0].providers[0].base = 0;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert!(p.actions.is_empty(), "{p:?}");
        let mut i = provider_input(1, vec![waiting], 1);
        i.deployments[0].providers[0].base = 0;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            p.actions,
            vec![Action::Place {
                task: "w1".into(),
                instance: "b1".into()
            }]
        );
    }

    #[test]
    fn capacity_provider_scale_in_stops_waiting_tasks_first() {
        let mut waiting = task("w1", "d1", "", TaskStatus::Provisioning);
        waiting.instance = None;
        waiting.provider = Some("B".into());
        let mut running = task("r1", "d1", "b1", TaskStatus::Running);
        running.provider = Some("B".into());
        let mut i = provider_input(1, vec![waiting, running], 1);
        i.deployments[0].providers[0].base = 0;
        let p = plan(&i, NOW, &mut StdRng::seed_from_u64(1));
        assert_eq!(stops(&p), vec!["w1"]);
    }

    #[test]
    fn events_list_the_first_ten_tasks_and_count_the_rest() {
        let few = ["a", "b"];
        assert_eq!(task_list(few.iter().copied()), "(task a) (task b)");
        let many: Vec<String> = (0..25).map(|n| format!("t{n}")).collect();
        let text = task_list(many.iter().map(String::as_str));
        assert!(text.starts_with("(task t0) (task t1)"), "{text}");
        assert!(
            text.contains("(task t9)") && !text.contains("(task t10)"),
            "{text}"
        );
        assert!(text.ends_with(" and 15 more"), "{text}");
    }
}

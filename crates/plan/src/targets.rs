//! The target registrar's planner (ECS §8): which targets a target group should have, how each
//! target's health moves with health-check results, and when a deregistering target has drained.
//!
//! - A RUNNING task of a deployment whose `loadBalancers` name the group becomes a target: the
//!   host of its container instance and the host port bound to `containerPort` of
//!   `containerName`; an awsvpc task, its own address and `containerPort` (ELBv2's `ip`
//!   targets). A task in DEACTIVATING keeps its target, draining.
//! - A new target needs one passing check to turn healthy; `unhealthyThresholdCount` failures in
//!   a row make it unhealthy; a recovering one needs `healthyThresholdCount` passes (ELBv2).
//! - A draining target is drained once it has no active sessions, or once the deregistration
//!   delay has passed, whichever comes first; it is dropped when its task is gone.

use std::collections::BTreeMap;

use capstan_core::Timestamp;
use capstan_core::deployment::Deployment;
use capstan_core::lb::{TargetGroup, TargetState, TargetStatus};
use capstan_core::service::lb_object_name;
use capstan_core::task::{DesiredStatus, Task, TaskStatus};

/// A target the tasks ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Its task.
    pub task_id: String,
    /// Host address.
    pub host: String,
    /// Host port.
    pub port: u16,
    /// The task is DEACTIVATING: deregister.
    pub draining: bool,
}

/// The targets of group `tg` from the deployments' load balancers and their tasks;
/// `host_of(instance id)` gives an instance's address, and `last_host(task id)` the address a
/// target was last served at. An instance whose registration is gone for a moment (its lease
/// lapsed while etcd was away, and the agent is registering again) keeps its tasks' targets at
/// their last address: only a task's own state takes a target out of the data plane.
pub fn wanted(
    tg: &str,
    deployments: &[Deployment],
    tasks: &[Task],
    host_of: impl Fn(&str) -> Option<String>,
    last_host: impl Fn(&str) -> Option<String>,
) -> Vec<Wanted> {
    let mut out = Vec::new();
    for d in deployments {
        for lb in &d.load_balancers {
            if lb.target_group_arn.as_deref().map(lb_object_name) != Some(tg) {
                continue;
            }
            let (Some(name), Some(port)) = (&lb.container_name, lb.container_port) else {
                continue;
            };
            for t in tasks
                .iter()
                .filter(|t| t.started_by.as_deref() == Some(d.id.as_str()))
            {
                let draining = match (t.desired_status, t.last_status) {
                    (DesiredStatus::Running, TaskStatus::Running) => false,
                    (DesiredStatus::Stopped, TaskStatus::Deactivating) => true,
                    _ => continue,
                };
                if let Some(ip) = t.private_ipv4() {
                    let Ok(port) = u16::try_from(port) else {
                        continue;
                    };
                    out.push(Wanted {
                        task_id: t.id().to_string(),
                        host: ip.to_string(),
                        port,
                        draining,
                    });
                    continue;
                }
                let binding = t
                    .containers
                    .iter()
                    .filter(|c| &c.name == name)
                    .flat_map(|c| &c.network_bindings)
                    .find(|b| b.container_port == port);
                let instance = t
                    .container_instance_arn
                    .as_deref()
                    .map(|a| a.rsplit('/').next().unwrap_or(a));
                let host = instance.and_then(&host_of).or_else(|| last_host(t.id()));
                let (Some(b), Some(host)) = (binding, host) else {
                    continue;
                };
                let Ok(port) = u16::try_from(b.host_port) else {
                    continue;
                };
                out.push(Wanted {
                    task_id: t.id().to_string(),
                    host,
                    port,
                    draining,
                });
            }
        }
    }
    out
}

/// Health-check settings of a group, ELBv2's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Seconds between checks.
    pub interval: f64,
    /// Passes that bring an unhealthy target back.
    pub healthy_threshold: u32,
    /// Failures in a row that make a target unhealthy.
    pub unhealthy_threshold: u32,
    /// Longest drain, seconds.
    pub deregistration_delay: f64,
    /// `slow_start.duration_seconds` (0: off).
    pub slow_start: f64,
}

impl Settings {
    /// The settings of `tg`.
    pub fn of(tg: &TargetGroup) -> Self {
        let hc = tg.effective_health_check();
        Self {
            interval: f64::from(hc.interval_seconds.unwrap_or(30)),
            healthy_threshold: hc.healthy_threshold_count.unwrap_or(5),
            unhealthy_threshold: hc.unhealthy_threshold_count.unwrap_or(2),
            deregistration_delay: f64::from(tg.deregistration_delay_secs()),
            slow_start: tg
                .attribute("slow_start.duration_seconds")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
        }
    }
}

/// Why a health check failed, as ELBv2 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// Answered with a code the matcher rejects.
    ResponseCodeMismatch,
    /// Connection refused or reset.
    ConnectionFailed,
}

impl Failure {
    /// The reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "Target.Timeout",
            Failure::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Failure::ConnectionFailed => "Target.FailedHealthChecks",
        }
    }
}

/// A target as the registrar tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// What the status document shows.
    pub status: TargetStatus,
    /// Passing checks in a row.
    pub passes: u32,
    /// Failing checks in a row.
    pub fails: u32,
    /// When deregistration began.
    pub draining_since: Option<Timestamp>,
}

impl Tracked {
    /// Its traffic weight out of 100: with slow start, growing linearly from 1 to 100 over the
    /// group's `slow_start.duration_seconds` after it turned healthy.
    pub fn weight(&self, s: &Settings, now: Timestamp) -> u32 {
        match (self.status.state, self.status.healthy_since) {
            (TargetState::Healthy, Some(since)) if s.slow_start > 0.0 => {
                let f = ((now - since) / s.slow_start).clamp(0.0, 1.0);
                ((100.0 * f).round() as u32).max(1)
            }
            _ => 100,
        }
    }

    /// Whether its weight is still ramping up at `now`.
    pub fn ramping(&self, s: &Settings, now: Timestamp) -> bool {
        self.weight(s, now) < 100
    }

    /// A target as a status document shows it: a new leader, or a load-balancer host that
    /// only follows the leader, carries on from there (check counts start again).
    pub fn carried(status: TargetStatus) -> Self {
        Self {
            status,
            passes: 0,
            fails: 0,
            draining_since: None,
        }
    }

    fn new(w: &Wanted) -> Self {
        Self::carried(TargetStatus {
            task_id: w.task_id.clone(),
            host: w.host.clone(),
            port: w.port,
            state: TargetState::Initial,
            reason: Some("Elb.InitialHealthChecking".into()),
            ..Default::default()
        })
    }
}

/// Applies one health-check result (`Ok` = passed).
pub fn observe(t: &mut Tracked, result: Result<(), Failure>, s: &Settings, now: Timestamp) {
    if matches!(t.status.state, TargetState::Draining | TargetState::Unused) {
        return;
    }
    match result {
        Ok(()) => {
            t.passes += 1;
            t.fails = 0;
            let healthy = match t.status.state {
                TargetState::Initial => true,
                TargetState::Unhealthy => t.passes >= s.healthy_threshold,
                _ => true,
            };
            if healthy {
                if t.status.state != TargetState::Healthy {
                    t.status.healthy_since = Some(now);
                }
                t.status.state = TargetState::Healthy;
                t.status.reason = None;
            }
        }
        Err(f) => {
            t.fails += 1;
            t.passes = 0;
            if t.fails >= s.unhealthy_threshold {
                t.status.healthy_since = None;
                t.status.state = TargetState::Unhealthy;
                t.status.reason = Some(f.reason().into());
            }
        }
    }
}

/// Everything the target planner needs about one target group.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The targets as tracked so far.
    pub tracked: &'a BTreeMap<String, Tracked>,
    /// The targets the group should have.
    pub wanted: &'a [Wanted],
    /// Active sessions per draining target, counted by the data plane after it set the target
    /// draining (a count from before could miss a request that started since); a target not
    /// listed is unknown, not idle. Without a data plane every target has none.
    pub sessions: Option<&'a std::collections::HashMap<String, u32>>,
    /// Whether a data plane serves the group.
    pub data_plane: bool,
    /// The group's settings.
    pub settings: &'a Settings,
}

/// The target planner's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The targets to track from now on.
    pub tracked: BTreeMap<String, Tracked>,
    /// When to look again for a drain that only time will end.
    pub wake: Option<Timestamp>,
}

/// Plans one target group at `now` ([`converge`] over a copy; nothing is drawn at random).
pub fn plan<R: rand::Rng + ?Sized>(input: &Input<'_>, now: Timestamp, _rng: &mut R) -> Plan {
    let mut tracked = input.tracked.clone();
    let wake = converge(
        &mut tracked,
        input.wanted,
        |id| match (input.data_plane, input.sessions) {
            (false, _) => Some(0),
            (true, Some(s)) => s.get(id).copied(),
            (true, None) => None,
        },
        input.settings,
        now,
    );
    Plan { tracked, wake }
}

/// Brings the tracked targets in line with the wanted ones at `now`; `sessions(task)` is the
/// data plane's count of the target's active sessions (`None` when unknown). Returns when to
/// look again for a drain that only time will end.
pub fn converge(
    tracked: &mut BTreeMap<String, Tracked>,
    wanted: &[Wanted],
    sessions: impl Fn(&str) -> Option<u32>,
    s: &Settings,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut wake: Option<Timestamp> = None;
    tracked.retain(|id, _| wanted.iter().any(|w| &w.task_id == id));
    for w in wanted {
        let t = tracked
            .entry(w.task_id.clone())
            .or_insert_with(|| Tracked::new(w));
        if !w.draining {
            // Moved (a restarted task on a new port): start over.
            if t.status.host != w.host || t.status.port != w.port {
                *t = Tracked::new(w);
            }
            continue;
        }
        if t.draining_since.is_none() {
            t.draining_since = Some(now);
            t.status.state = TargetState::Draining;
            t.status.reason = Some("Target.DeregistrationInProgress".into());
        }
        let since = t.draining_since.unwrap_or(now);
        let idle = sessions(&w.task_id).is_some_and(|n| n == 0);
        let until = since + s.deregistration_delay;
        if idle || now >= until {
            t.status.drained = true;
        } else {
            wake = Some(wake.map_or(until, |x: Timestamp| x.min(until)));
        }
    }
    wake
}

/// Where each listener sends traffic, as (target group, weight): the deployer's route for it
/// (blue/green), else its default action. Groups of weight 0 are left out, and so are listeners
/// that route nowhere.
pub fn listener_split(
    listeners: &[(String, capstan_core::lb::Listener)],
    routes: &BTreeMap<String, capstan_core::lb::ListenerRoute>,
) -> BTreeMap<String, Vec<(String, u32)>> {
    listeners
        .iter()
        .map(|(name, l)| {
            let groups = match routes.get(name) {
                Some(r) => r
                    .target_groups
                    .iter()
                    .map(|t| (t.target_group_arn.clone(), t.weight.unwrap_or(1)))
                    .collect(),
                None => l
                    .default_actions
                    .first()
                    .map(|a| a.weighted_target_groups())
                    .unwrap_or_default(),
            };
            let groups: Vec<(String, u32)> = groups
                .into_iter()
                .filter(|(_, w)| *w > 0)
                .map(|(g, w)| (capstan_core::service::lb_object_name(&g).to_string(), w))
                // A name HAProxy must not see (a route can name anything) is never routed to.
                .filter(|(g, _)| capstan_core::lb::valid_lb_name(g))
                .collect();
            (name.clone(), groups)
        })
        .filter(|(_, g)| !g.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use capstan_core::service::LoadBalancer;
    use capstan_core::task::{Container, NetworkBinding};
    use capstan_core::taskdef::Protocol;

    use super::*;

    const S: Settings = Settings {
        interval: 5.0,
        slow_start: 0.0,
        healthy_threshold: 3,
        unhealthy_threshold: 2,
        deregistration_delay: 10.0,
    };

    fn task(id: &str, dep: &str, desired: DesiredStatus, last: TaskStatus, host_port: u32) -> Task {
        Task {
            task_arn: format!("arn:capstan:ecs:local:0:task/default/{id}"),
            container_instance_arn: Some(
                "arn:capstan:ecs:local:0:container-instance/default/i1".into(),
            ),
            started_by: Some(dep.into()),
            desired_status: desired,
            last_status: last,
            containers: vec![Container {
                name: "app".into(),
                network_bindings: vec![NetworkBinding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: 8080,
                    host_port,
                    protocol: Protocol::Tcp,
                }],
                ..Container::default()
            }],
            ..Task::default()
        }
    }

    fn dep(id: &str, tg: &str) -> Deployment {
        Deployment {
            id: id.into(),
            load_balancers: vec![LoadBalancer {
                target_group_arn: Some(tg.into()),
                container_name: Some("app".into()),
                container_port: Some(8080),
                ..LoadBalancer::default()
            }],
            ..Deployment::default()
        }
    }

    #[test]
    fn running_tasks_of_the_groups_deployments_become_targets() {
        let deps = [dep("blue", "web-blue"), dep("green", "web-green")];
        let tasks = [
            task(
                "t1",
                "blue",
                DesiredStatus::Running,
                TaskStatus::Running,
                31001,
            ),
            task(
                "t2",
                "blue",
                DesiredStatus::Stopped,
                TaskStatus::Deactivating,
                31002,
            ),
            task(
                "t3",
                "blue",
                DesiredStatus::Running,
                TaskStatus::Pending,
                31003,
            ),
            task(
                "t4",
                "green",
                DesiredStatus::Running,
                TaskStatus::Running,
                31004,
            ),
            task(
                "t5",
                "blue",
                DesiredStatus::Stopped,
                TaskStatus::Stopped,
                31005,
            ),
        ];
        let host = |i: &str| (i == "i1").then(|| "10.0.0.1".to_string());
        let w = wanted("web-blue", &deps, &tasks, host, |_| None);
        assert_eq!(
            w,
            vec![
                Wanted {
                    task_id: "t1".into(),
                    host: "10.0.0.1".into(),
                    port: 31001,
                    draining: false
                },
                Wanted {
                    task_id: "t2".into(),
                    host: "10.0.0.1".into(),
                    port: 31002,
                    draining: true
                },
            ]
        );
        assert_eq!(wanted("web-green", &deps, &tasks, host, |_| None).len(), 1);
        // The instance's registration is gone: a target keeps the address it was served at;
        // one never served is not a target until the instance is back.
        let gone = |_: &str| None;
        let last = |t: &str| (t == "t1").then(|| "10.0.0.1".to_string());
        let w = wanted("web-blue", &deps, &tasks, gone, last);
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].task_id.as_str(), w[0].host.as_str()),
            ("t1", "10.0.0.1")
        );
    }

    #[test]
    fn an_awsvpc_task_is_an_ip_target_at_its_own_address_and_container_port() {
        let mut t = task("t1", "blue", DesiredStatus::Running, TaskStatus::Running, 0);
        // awsvpc: no host port bindings, and the instance address is not the task's.
        t.containers[0].network_bindings.clear();
        t.attachments = vec![capstan_core::task::Attachment {
            id: "eni-t1".into(),
            kind: capstan_core::task::ENI.into(),
            status: "ATTACHED".into(),
            details: vec![capstan_core::KeyValuePair {
                name: "privateIPv4Address".into(),
                value: "172.30.0.7".into(),
            }],
        }];
        let host = |_: &str| Some("10.0.0.1".to_string());
        let w = wanted("web-blue", &[dep("blue", "web-blue")], &[t], host, |_| None);
        assert_eq!(
            w,
            vec![Wanted {
                task_id: "t1".into(),
                host: "172.30.0.7".into(),
                port: 8080,
                draining: false
            }]
        );
    }

    fn tracked(w: &[Wanted]) -> BTreeMap<String, Tracked> {
        let mut m = BTreeMap::new();
        converge(&mut m, w, |_| None, &S, 0.0);
        m
    }

    fn one(id: &str, draining: bool) -> Wanted {
        Wanted {
            task_id: id.into(),
            host: "h".into(),
            port: 1,
            draining,
        }
    }

    #[test]
    fn one_pass_makes_a_new_target_healthy_recovery_needs_the_threshold() {
        let mut m = tracked(&[one("t", false)]);
        let t = m.get_mut("t").expect("tracked");
        assert_eq!(t.status.state, TargetState::Initial);
        assert_eq!(
            t.status.reason.as_deref(),
            Some("Elb.InitialHealthChecking")
        );
        observe(t, Ok(()), &S, 0.0);
        assert_eq!(t.status.state, TargetState::Healthy);
        observe(t, Err(Failure::Timeout), &S, 0.0);
        assert_eq!(
            t.status.state,
            TargetState::Healthy,
            "one failure is not enough"
        );
        observe(t, Err(Failure::ResponseCodeMismatch), &S, 0.0);
        assert_eq!(t.status.state, TargetState::Unhealthy);
        assert_eq!(
            t.status.reason.as_deref(),
            Some("Target.ResponseCodeMismatch")
        );
        observe(t, Ok(()), &S, 0.0);
        observe(t, Ok(()), &S, 0.0);
        assert_eq!(t.status.state, TargetState::Unhealthy);
        observe(t, Ok(()), &S, 0.0);
        assert_eq!(t.status.state, TargetState::Healthy);
    }

    #[test]
    fn draining_ends_when_idle_or_after_the_delay_and_gone_tasks_drop() {
        let mut m = tracked(&[one("a", false), one("b", false)]);
        // a: sessions still open; b: idle.
        let wake = converge(
            &mut m,
            &[one("a", true), one("b", true)],
            |id| Some(u32::from(id == "a")),
            &S,
            100.0,
        );
        assert_eq!(m["a"].status.state, TargetState::Draining);
        assert_eq!(
            m["a"].status.reason.as_deref(),
            Some("Target.DeregistrationInProgress")
        );
        assert!(!m["a"].status.drained);
        assert!(m["b"].status.drained);
        assert_eq!(wake, Some(110.0));
        // Health checks no longer move a draining target.
        observe(m.get_mut("a").expect("a"), Ok(()), &S, 0.0);
        assert_eq!(m["a"].status.state, TargetState::Draining);
        // The delay passes.
        let wake = converge(&mut m, &[one("a", true)], |_| Some(3), &S, 110.0);
        assert!(m["a"].status.drained);
        assert_eq!(wake, None);
        assert!(!m.contains_key("b"), "b's task is gone");
    }

    #[test]
    fn a_drain_waits_for_a_session_count_taken_while_draining() {
        let m = tracked(&[one("a", false)]);
        let wanted = [one("a", true)];
        let input = |sessions| Input {
            tracked: &m,
            wanted: &wanted,
            sessions,
            data_plane: true,
            settings: &S,
        };
        let mut rng = rand::rng();
        // The data plane counted other targets, not this one since it began draining: unknown.
        let none = std::collections::HashMap::from([("b".to_string(), 0)]);
        let p = plan(&input(Some(&none)), 100.0, &mut rng);
        assert!(!p.tracked["a"].status.drained);
        assert_eq!(p.wake, Some(110.0));
        // Counted while draining: one session open, then none.
        let open = std::collections::HashMap::from([("a".to_string(), 1)]);
        assert!(
            !plan(&input(Some(&open)), 100.0, &mut rng).tracked["a"]
                .status
                .drained
        );
        let idle = std::collections::HashMap::from([("a".to_string(), 0)]);
        assert!(
            plan(&input(Some(&idle)), 100.0, &mut rng).tracked["a"]
                .status
                .drained
        );
        // Without a data plane nothing flows: drained at once.
        let bare = Input {
            data_plane: false,
            ..input(None)
        };
        assert!(plan(&bare, 100.0, &mut rng).tracked["a"].status.drained);
    }

    #[test]
    fn slow_start_ramps_a_new_healthy_target_weight() {
        let s = Settings {
            slow_start: 10.0,
            ..S
        };
        let mut t = Tracked::new(&Wanted {
            task_id: "a".into(),
            host: "h".into(),
            port: 1,
            draining: false,
        });
        observe(&mut t, Ok(()), &s, 100.0);
        assert_eq!(t.status.healthy_since, Some(100.0));
        assert_eq!(t.weight(&s, 100.0), 1);
        assert_eq!(t.weight(&s, 105.0), 50);
        assert!(t.ramping(&s, 105.0));
        assert_eq!(t.weight(&s, 111.0), 100);
        // Without slow start, full weight at once; staying healthy keeps the start time.
        assert_eq!(t.weight(&S, 100.0), 100);
        observe(&mut t, Ok(()), &s, 200.0);
        assert_eq!(t.status.healthy_since, Some(100.0));
    }

    #[test]
    fn a_listener_follows_its_route_else_its_default_action() {
        use capstan_core::lb::{Listener, ListenerRoute, TargetGroupTuple};
        let listener: Listener = serde_json::from_value(serde_json::json!({
            "port": 80,
            "defaultActions": [{"type": "forward", "targetGroupArn": "blue"}]
        }))
        .expect("listener");
        let listeners = vec![("web".to_string(), listener)];
        let none = BTreeMap::new();
        assert_eq!(
            listener_split(&listeners, &none)["web"],
            vec![("blue".to_string(), 1)]
        );
        let routes = BTreeMap::from([(
            "web".to_string(),
            ListenerRoute {
                target_groups: vec![
                    TargetGroupTuple {
                        target_group_arn: "green".into(),
                        weight: Some(100),
                    },
                    TargetGroupTuple {
                        target_group_arn: "blue".into(),
                        weight: Some(0),
                    },
                ],
                ..Default::default()
            },
        )]);
        assert_eq!(
            listener_split(&listeners, &routes)["web"],
            vec![("green".to_string(), 100)],
            "the route wins; weight 0 is left out"
        );
    }
}

//! The invariants, checked over the whole recorded history (pure: events in, violations out).
//!
//! - **one host per task**: a task id is never RUNNING on two agents at once (from the agents'
//!   own WatchTasks reports; an agent whose stream broke keeps its last reported state, which is
//!   the conservative reading);
//! - **maximumPercent**: a service's live tasks (records desired RUNNING and not yet STOPPED)
//!   never exceed `floor(D × maximumPercent / 100)`, with D the largest desiredCount in effect
//!   over the last [`SCALE_SETTLE`] (a scale-down stops the extra tasks, which takes their stop
//!   time);
//! - **minimumHealthyPercent**: while a service has a deployment in progress, its healthy tasks
//!   (RUNNING, desired RUNNING, not UNHEALTHY) never fall below `ceil(D × min / 100)`, except
//!   while a fault that loses tasks lasts and until the system recovered from it, or within
//!   [`SCALE_SETTLE`] of a change of D;
//! - **desired state**: a key users own (clusters, task definitions, services, target groups,
//!   listeners) is never deleted and changes only while a workload request that writes it runs;
//! - **no failed request on an LB host that was not itself faulted**, nor while a fault that
//!   loses tasks lasts (a target's host died: ELB fails those requests too; the report counts
//!   them);
//! - at the end, once converged: **no orphans** (every task an agent runs has a record desired
//!   RUNNING, and every such record runs on exactly one agent) and **every failing revision
//!   ended FAILED and rolled back**.
//!
//! The driver adds the last one itself: every service converges within [`CONVERGE_LIMIT`] of
//! the last fault's heal.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::history::{Event, Kind};

/// How long after a change of desiredCount the bounds still allow for the old one.
pub const SCALE_SETTLE: f64 = 30.0;
/// How long after the last fault every service must have converged.
pub const CONVERGE_LIMIT: f64 = 30.0;
/// Slack for a write's watch event to arrive after its request returned.
const WATCH_LAG: f64 = 5.0;

/// A broken promise.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// When (seconds since the soak began).
    pub at: f64,
    /// What was seen.
    pub detail: String,
}

/// What the soak saw once everything converged.
#[derive(Debug, Clone, Default)]
pub struct Final {
    /// Agent host → the task ids it runs (ListTasks, lastStatus RUNNING).
    pub agents: BTreeMap<String, BTreeSet<String>>,
    /// Task records by id.
    pub tasks: BTreeMap<String, Value>,
    /// Deployment records of each service.
    pub deployments: BTreeMap<String, Vec<Value>>,
}

/// `family:revision` of a task definition reference (`family:revision` or an ARN ending in
/// `task-definition/family:revision`).
pub fn family_revision(td: &str) -> &str {
    td.rsplit('/').next().unwrap_or(td)
}

fn str_at<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// A service's rollout parameters as its record states them (ECS's defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spec {
    desired: u64,
    max_percent: u64,
    min_percent: u64,
    daemon: bool,
}

impl Spec {
    fn of(doc: &Value) -> Self {
        let daemon = str_at(doc, "schedulingStrategy") == "DAEMON";
        let cfg = doc.get("deploymentConfiguration");
        let pct = |f: &str, d: u64| {
            cfg.and_then(|c| c.get(f))
                .and_then(Value::as_u64)
                .unwrap_or(d)
        };
        Self {
            desired: doc.get("desiredCount").and_then(Value::as_u64).unwrap_or(0),
            max_percent: pct("maximumPercent", if daemon { 100 } else { 200 }),
            min_percent: pct("minimumHealthyPercent", if daemon { 0 } else { 100 }),
            daemon,
        }
    }
}

/// The parts of a key after `prefix/`.
fn parts<'a>(prefix: &str, key: &'a str) -> Vec<&'a str> {
    key.strip_prefix(prefix)
        .and_then(|k| k.strip_prefix('/'))
        .map(|k| k.split('/').collect())
        .unwrap_or_default()
}

/// Windows `[start, recovered]` of faults, by id: (start, end, loses_tasks, hits_lb, targets).
type Window = (f64, f64, bool, bool, Vec<String>);

fn fault_windows(events: &[Event]) -> Vec<Window> {
    let end = events.last().map_or(0.0, |e| e.at);
    let mut open: BTreeMap<usize, Window> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        match &e.kind {
            Kind::FaultStart {
                id,
                targets,
                loses_tasks,
                hits_lb,
                ..
            } => {
                open.insert(*id, (e.at, end, *loses_tasks, *hits_lb, targets.clone()));
            }
            Kind::FaultRecovered { id, .. } => {
                if let Some(mut w) = open.remove(id) {
                    w.1 = e.at;
                    out.push(w);
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_values());
    out
}

/// A task id RUNNING on two agents at once.
pub fn one_host_per_task(events: &[Event]) -> Vec<Violation> {
    let mut on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new(); // agent → running ids
    let mut out = Vec::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for e in events {
        let touched: Vec<String> = match &e.kind {
            Kind::AgentSnapshot { agent, running } => {
                on.insert(agent.clone(), running.iter().cloned().collect());
                running.clone()
            }
            Kind::AgentTask {
                agent,
                task,
                status,
            } => {
                let set = on.entry(agent.clone()).or_default();
                if status == "RUNNING" {
                    set.insert(task.clone());
                } else {
                    set.remove(task);
                }
                vec![task.clone()]
            }
            _ => continue,
        };
        for t in touched {
            let hosts: Vec<&String> = on
                .iter()
                .filter(|(_, s)| s.contains(&t))
                .map(|(a, _)| a)
                .collect();
            if hosts.len() > 1 && reported.insert(t.clone()) {
                out.push(Violation {
                    invariant: "a task id runs on one host",
                    at: e.at,
                    detail: format!("task {t} RUNNING on {hosts:?}"),
                });
            }
        }
    }
    out
}

/// What the record replay knows at one moment.
#[derive(Default)]
struct Records {
    /// Task id → (service, live, healthy).
    tasks: BTreeMap<String, (String, bool, bool)>,
    /// Service → its spec, and the history of its desiredCount.
    services: BTreeMap<String, (Spec, Vec<(f64, u64)>)>,
    /// Service → deployment ids in progress.
    in_progress: BTreeMap<String, BTreeSet<String>>,
}

impl Records {
    fn counts(&self, service: &str) -> (u64, u64) {
        self.tasks
            .values()
            .filter(|(s, _, _)| s == service)
            .fold((0, 0), |(l, h), (_, live, healthy)| {
                (l + u64::from(*live), h + u64::from(*healthy))
            })
    }

    /// The largest desiredCount in effect over `[at - SCALE_SETTLE, at]`, and whether it
    /// changed in that time.
    fn desired_window(&self, service: &str, at: f64) -> Option<(u64, bool)> {
        let (_, hist) = self.services.get(service)?;
        let mut most = 0;
        let mut changed = false;
        for (i, (t, d)) in hist.iter().enumerate() {
            let next = hist.get(i + 1).map_or(f64::INFINITY, |n| n.0);
            if next >= at - SCALE_SETTLE && *t <= at {
                most = most.max(*d);
                changed |= *t >= at - SCALE_SETTLE && i > 0;
            }
        }
        Some((most, changed))
    }
}

/// maximumPercent and minimumHealthyPercent over the record history (`prefix` is the store's
/// key prefix, `cluster` the workload's cluster).
pub fn rollout_bounds(events: &[Event], prefix: &str, cluster: &str) -> Vec<Violation> {
    let windows = fault_windows(events);
    let mut r = Records::default();
    let mut out = Vec::new();
    let mut reported: BTreeSet<(&'static str, String)> = BTreeSet::new();
    for e in events {
        let Kind::Record { key, value, .. } = &e.kind else {
            continue;
        };
        let p = parts(prefix, key);
        let service = match p.as_slice() {
            ["services", c, s] if *c == cluster => {
                if let Some(doc) = value {
                    let spec = Spec::of(doc);
                    let entry = r
                        .services
                        .entry(s.to_string())
                        .or_insert((spec, Vec::new()));
                    entry.0 = spec;
                    if entry.1.last().map(|l| l.1) != Some(spec.desired) {
                        entry.1.push((e.at, spec.desired));
                    }
                }
                continue;
            }
            ["deployments", c, s, id] if *c == cluster => {
                let set = r.in_progress.entry(s.to_string()).or_default();
                let going = value
                    .as_ref()
                    .is_some_and(|d| str_at(d, "rolloutState") == "IN_PROGRESS");
                if going {
                    set.insert(id.to_string());
                } else {
                    set.remove(*id);
                }
                continue;
            }
            ["tasks", c, id] if *c == cluster => {
                let Some(doc) = value else {
                    r.tasks.remove(*id);
                    continue;
                };
                let Some(service) = str_at(doc, "group").strip_prefix("service:") else {
                    continue;
                };
                let desired = str_at(doc, "desiredStatus") == "RUNNING";
                let last = str_at(doc, "lastStatus");
                let live = desired && last != "STOPPED" && !last.is_empty();
                let healthy =
                    desired && last == "RUNNING" && str_at(doc, "healthStatus") != "UNHEALTHY";
                r.tasks
                    .insert(id.to_string(), (service.to_string(), live, healthy));
                service.to_string()
            }
            _ => continue,
        };
        let Some(spec) = r.services.get(&service).map(|(s, _)| *s) else {
            continue;
        };
        if spec.daemon {
            continue;
        }
        let Some((most, changed)) = r.desired_window(&service, e.at) else {
            continue;
        };
        let (live, healthy) = r.counts(&service);
        let ceiling = most * spec.max_percent / 100;
        if live > ceiling && reported.insert(("max", service.clone())) {
            out.push(Violation {
                invariant: "live tasks never exceed maximumPercent",
                at: e.at,
                detail: format!(
                    "service {service}: {live} live tasks, ceiling {ceiling} (desired {most}, maximumPercent {})",
                    spec.max_percent
                ),
            });
        }
        let deploying = r.in_progress.get(&service).is_some_and(|s| !s.is_empty());
        let excused = changed || windows.iter().any(|w| w.2 && w.0 <= e.at && e.at <= w.1);
        let floor = (spec.desired * spec.min_percent).div_ceil(100);
        if deploying && !excused && healthy < floor && reported.insert(("min", service.clone())) {
            out.push(Violation {
                invariant: "healthy tasks never fall below minimumHealthyPercent",
                at: e.at,
                detail: format!(
                    "service {service}: {healthy} healthy tasks during a deployment, floor {floor} (desired {}, minimumHealthyPercent {})",
                    spec.desired, spec.min_percent
                ),
            });
        }
    }
    out
}

/// The families only users write.
const USER_FAMILIES: [&str; 5] = [
    "clusters",
    "taskdefinitions",
    "services",
    "targetgroups",
    "listeners",
];

/// A user-owned key deleted, or changed while no workload request that writes it ran.
pub fn desired_state(events: &[Event], prefix: &str) -> Vec<Violation> {
    let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
    let requests: Vec<(f64, f64, &Vec<String>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Request {
                started, writes, ..
            } => Some((*started, e.at, writes)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for e in events {
        let Kind::Record {
            key,
            value,
            revision,
            initial,
        } = &e.kind
        else {
            continue;
        };
        let p = parts(prefix, key);
        if !p.first().is_some_and(|f| USER_FAMILIES.contains(f)) {
            continue;
        }
        if *initial {
            seen.insert(key, *revision);
            continue;
        }
        if seen.get(key.as_str()) == Some(revision) {
            continue; // a relist's repeat, not a change
        }
        seen.insert(key, *revision);
        let by_us = requests.iter().any(|(s, end, writes)| {
            *s <= e.at && e.at <= end + WATCH_LAG && writes.iter().any(|w| key.starts_with(w))
        });
        if value.is_none() {
            out.push(Violation {
                invariant: "no desired-state key lost",
                at: e.at,
                detail: format!("{key} deleted (revision {revision})"),
            });
        } else if !by_us {
            out.push(Violation {
                invariant: "no desired-state key changed by a controller",
                at: e.at,
                detail: format!("{key} changed at revision {revision} with no request writing it"),
            });
        }
    }
    out
}

/// Failed HTTP requests through an LB host no fault hit while no target's host was lost, one
/// violation per run of failures.
pub fn lb_requests(events: &[Event]) -> Vec<Violation> {
    let windows = fault_windows(events);
    let mut out = Vec::new();
    // (lb, port) → (first failure, count) of the current run.
    let mut runs: BTreeMap<(String, u16), (f64, u32)> = BTreeMap::new();
    let close = |key: (String, u16), run: (f64, u32), out: &mut Vec<Violation>| {
        out.push(Violation {
            invariant: "no request fails on an LB host that was not faulted",
            at: run.0,
            detail: format!("{} requests to {}:{} failed", run.1, key.0, key.1),
        });
    };
    for e in events {
        let Kind::Http {
            lb,
            port,
            ok,
            started,
            ..
        } = &e.kind
        else {
            continue;
        };
        let key = (lb.clone(), *port);
        // The LB host itself was hit, or a target's host was (a request to a task that died
        // with its host is the target's failure, as with ELB, not the LB host's).
        let excused = windows
            .iter()
            .any(|w| ((w.3 && w.4.contains(lb)) || w.2) && w.0 <= e.at && *started <= w.1);
        if *ok || excused {
            if let Some(run) = runs.remove(&key) {
                close(key, run, &mut out);
            }
        } else {
            runs.entry(key).or_insert((*started, 0)).1 += 1;
        }
    }
    for (key, run) in runs {
        close(key, run, &mut out);
    }
    out
}

/// At the end: tasks agents run that no record wants, and records that run nowhere or twice.
pub fn orphans(f: &Final, at: f64) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut hosts: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (agent, ids) in &f.agents {
        for id in ids {
            hosts.entry(id).or_default().push(agent);
        }
    }
    for (id, on) in &hosts {
        let wanted = f
            .tasks
            .get(*id)
            .is_some_and(|t| str_at(t, "desiredStatus") == "RUNNING");
        if !wanted {
            out.push(Violation {
                invariant: "no orphan tasks once converged",
                at,
                detail: format!("task {id} runs on {on:?} but no record wants it"),
            });
        }
    }
    for (id, t) in &f.tasks {
        if str_at(t, "desiredStatus") == "RUNNING" && str_at(t, "lastStatus") == "RUNNING" {
            let n = hosts.get(id).map_or(0, Vec::len);
            if n != 1 {
                out.push(Violation {
                    invariant: "no orphan tasks once converged",
                    at,
                    detail: format!("task {id} is RUNNING in its record but runs on {n} agents"),
                });
            }
        }
    }
    out
}

/// At the end: each failing revision (`service`, `family:revision`) has a FAILED deployment,
/// and the service neither runs it (no task of it live) nor has it as its PRIMARY deployment.
pub fn rollbacks(f: &Final, failing: &[(String, String)], at: f64) -> Vec<Violation> {
    let mut out = Vec::new();
    for (service, td) in failing {
        let deps = f.deployments.get(service).map(Vec::as_slice).unwrap_or(&[]);
        let of_td = |d: &&Value| family_revision(str_at(d, "taskDefinition")) == td;
        let failed = deps
            .iter()
            .filter(of_td)
            .any(|d| str_at(d, "rolloutState") == "FAILED");
        let primary = deps
            .iter()
            .filter(of_td)
            .any(|d| str_at(d, "status") == "PRIMARY");
        let running = f.tasks.values().any(|t| {
            str_at(t, "group") == format!("service:{service}")
                && str_at(t, "desiredStatus") == "RUNNING"
                && str_at(t, "lastStatus") != "STOPPED"
                && family_revision(str_at(t, "taskDefinitionArn")) == td
        });
        if !failed || primary || running {
            out.push(Violation {
                invariant: "a failing revision ends FAILED and rolled back",
                at,
                detail: format!(
                    "{service} {td}: FAILED deployment {failed}, still PRIMARY {primary}, tasks of it still live {running}"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(at: f64, kind: Kind) -> Event {
        Event { at, kind }
    }

    fn rec(at: f64, key: &str, value: Option<Value>, revision: i64) -> Event {
        ev(
            at,
            Kind::Record {
                key: format!("/capstan/{key}"),
                value,
                revision,
                initial: false,
            },
        )
    }

    fn service(desired: u64, min: u64, max: u64) -> Value {
        json!({"serviceName": "s", "desiredCount": desired,
               "deploymentConfiguration": {"minimumHealthyPercent": min, "maximumPercent": max}})
    }

    fn task(last: &str, desired: &str) -> Value {
        json!({"group": "service:s", "lastStatus": last, "desiredStatus": desired,
               "healthStatus": "UNKNOWN", "taskDefinitionArn": "x/s:1"})
    }

    fn snapshot(at: f64, agent: &str, running: &[&str]) -> Event {
        ev(
            at,
            Kind::AgentSnapshot {
                agent: agent.into(),
                running: running.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    fn update(at: f64, agent: &str, task: &str, status: &str) -> Event {
        ev(
            at,
            Kind::AgentTask {
                agent: agent.into(),
                task: task.into(),
                status: status.into(),
            },
        )
    }

    #[test]
    fn a_task_on_two_agents_at_once_is_caught_and_a_handover_is_not() {
        let handover = [
            snapshot(0.0, "a", &["t1"]),
            update(1.0, "a", "t1", "STOPPED"),
            update(2.0, "b", "t1", "RUNNING"),
        ];
        assert!(one_host_per_task(&handover).is_empty());
        let twice = [
            snapshot(0.0, "a", &["t1"]),
            update(2.0, "b", "t1", "RUNNING"),
            update(3.0, "b", "t1", "RUNNING"),
        ];
        let v = one_host_per_task(&twice);
        assert_eq!(v.len(), 1, "reported once: {v:?}");
        assert_eq!(v[0].at, 2.0);
        // A broken stream keeps the agent's last state: a later snapshot elsewhere still counts.
        let lost = [
            snapshot(0.0, "a", &["t1"]),
            ev(
                1.0,
                Kind::AgentLost {
                    agent: "a".into(),
                    error: "gone".into(),
                },
            ),
            snapshot(2.0, "b", &["t1"]),
        ];
        assert_eq!(one_host_per_task(&lost).len(), 1);
    }

    #[test]
    fn more_live_tasks_than_maximum_percent_is_a_violation() {
        let mut h = vec![rec(
            0.0,
            "services/default/s",
            Some(service(2, 100, 150)),
            1,
        )];
        // floor(2 × 150 / 100) = 3 live tasks at most.
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            h.push(rec(
                1.0 + i as f64,
                &format!("tasks/default/{id}"),
                Some(task("PENDING", "RUNNING")),
                2,
            ));
        }
        assert!(rollout_bounds(&h, "/capstan", "default").is_empty());
        h.push(rec(
            5.0,
            "tasks/default/d",
            Some(task("PENDING", "RUNNING")),
            3,
        ));
        let v = rollout_bounds(&h, "/capstan", "default");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("4 live tasks, ceiling 3"), "{v:?}");
        // Tasks being stopped (desired STOPPED) and other clusters do not count.
        h.pop();
        h.push(rec(
            5.0,
            "tasks/default/d",
            Some(task("RUNNING", "STOPPED")),
            3,
        ));
        h.push(rec(
            5.0,
            "tasks/other/e",
            Some(task("RUNNING", "RUNNING")),
            3,
        ));
        assert!(rollout_bounds(&h, "/capstan", "default").is_empty());
    }

    #[test]
    fn a_scale_down_keeps_the_old_ceiling_while_it_settles() {
        let mut h = vec![rec(0.0, "services/default/s", Some(service(4, 0, 100)), 1)];
        for id in ["a", "b", "c", "d"] {
            h.push(rec(
                1.0,
                &format!("tasks/default/{id}"),
                Some(task("RUNNING", "RUNNING")),
                2,
            ));
        }
        h.push(rec(10.0, "services/default/s", Some(service(2, 0, 100)), 3));
        h.push(rec(
            11.0,
            "tasks/default/e",
            Some(task("RUNNING", "RUNNING")),
            4,
        ));
        let v = rollout_bounds(&h, "/capstan", "default");
        assert_eq!(v.len(), 1, "5 live over the old ceiling 4: {v:?}");
        h.pop();
        // 4 live 1 s after the scale-down: the old ceiling still holds; 40 s later it does not.
        h.push(rec(
            11.0,
            "tasks/default/a",
            Some(task("RUNNING", "RUNNING")),
            4,
        ));
        assert!(rollout_bounds(&h, "/capstan", "default").is_empty());
        h.push(rec(
            50.0,
            "tasks/default/a",
            Some(task("RUNNING", "RUNNING")),
            5,
        ));
        let v = rollout_bounds(&h, "/capstan", "default");
        assert!(v[0].detail.contains("4 live tasks, ceiling 2"), "{v:?}");
    }

    #[test]
    fn the_healthy_floor_holds_during_deployments_except_for_tasks_lost_to_faults() {
        let mut h = vec![
            rec(0.0, "services/default/s", Some(service(2, 100, 200)), 1),
            rec(1.0, "tasks/default/a", Some(task("RUNNING", "RUNNING")), 2),
            rec(1.0, "tasks/default/b", Some(task("RUNNING", "RUNNING")), 3),
        ];
        // Below the floor with no deployment (a task crashed): not this invariant.
        h.push(rec(
            40.0,
            "tasks/default/a",
            Some(task("STOPPED", "STOPPED")),
            4,
        ));
        assert!(rollout_bounds(&h, "/capstan", "default").is_empty());
        h.push(rec(
            41.0,
            "tasks/default/a",
            Some(task("RUNNING", "RUNNING")),
            5,
        ));
        let deploying = json!({"rolloutState": "IN_PROGRESS"});
        h.push(rec(42.0, "deployments/default/s/d2", Some(deploying), 6));
        let mut lost = h.clone();
        h.push(rec(
            43.0,
            "tasks/default/b",
            Some(task("RUNNING", "STOPPED")),
            7,
        ));
        let v = rollout_bounds(&h, "/capstan", "default");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].detail
                .contains("1 healthy tasks during a deployment, floor 2")
        );
        // The same loss while an agent host is down and before it recovered: excused.
        lost.push(crate::history::fault_start(
            42.5,
            0,
            "SIGKILL agent host",
            "agent-1",
            false,
        ));
        lost.push(rec(
            43.0,
            "tasks/default/b",
            Some(task("STOPPED", "STOPPED")),
            7,
        ));
        lost.push(ev(
            50.0,
            Kind::FaultRecovered {
                id: 0,
                recovered: true,
            },
        ));
        assert!(rollout_bounds(&lost, "/capstan", "default").is_empty());
        // And once the deployment completed, nothing is checked.
        h.pop();
        h.push(rec(
            42.9,
            "deployments/default/s/d2",
            Some(json!({"rolloutState": "COMPLETED"})),
            7,
        ));
        h.push(rec(
            43.0,
            "tasks/default/b",
            Some(task("RUNNING", "STOPPED")),
            8,
        ));
        assert!(
            rollout_bounds(&h, "/capstan", "default").is_empty(),
            "{h:?}"
        );
    }

    fn request(at: f64, started: f64, writes: &str) -> Event {
        ev(
            at,
            Kind::Request {
                what: "w".into(),
                writes: vec![format!("/capstan/{writes}")],
                started,
                error: None,
            },
        )
    }

    #[test]
    fn user_keys_change_only_under_a_request_and_are_never_deleted() {
        let ok = [
            request(2.0, 1.0, "services/default/s"),
            rec(2.5, "services/default/s", Some(json!({})), 9),
            // A relist repeats the same revision later: not a change.
            rec(60.0, "services/default/s", Some(json!({})), 9),
            // Controllers' own families are not checked.
            rec(61.0, "tasks/default/t", Some(json!({})), 10),
        ];
        assert!(desired_state(&ok, "/capstan").is_empty());
        let bad = [
            request(2.0, 1.0, "services/default/s"),
            rec(30.0, "services/default/s", Some(json!({})), 9),
            rec(31.0, "listeners/web", None, 10),
        ];
        let v = desired_state(&bad, "/capstan");
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(
            v[0].invariant,
            "no desired-state key changed by a controller"
        );
        assert_eq!(v[1].invariant, "no desired-state key lost");
    }

    fn http(at: f64, lb: &str, ok: bool) -> Event {
        ev(
            at,
            Kind::Http {
                lb: lb.into(),
                port: 8000,
                ok,
                started: at - 0.1,
                error: None,
            },
        )
    }

    #[test]
    fn failed_requests_count_only_on_lb_hosts_no_fault_hit() {
        let h = [
            crate::history::fault_start(1.0, 0, "SIGKILL LB host", "lb-1", true),
            http(2.0, "lb-1", false),
            http(2.0, "lb-2", true),
            http(3.0, "lb-2", false),
            http(3.5, "lb-2", false),
            http(4.0, "lb-2", true),
            ev(
                5.0,
                Kind::FaultRecovered {
                    id: 0,
                    recovered: true,
                },
            ),
            http(6.0, "lb-1", false),
            // While an agent host is down, failures are its targets', not the LB host's.
            crate::history::fault_start(7.0, 1, "SIGKILL agent host", "agent-1", false),
            http(8.0, "lb-2", false),
            ev(
                9.0,
                Kind::FaultRecovered {
                    id: 1,
                    recovered: true,
                },
            ),
        ];
        let v = lb_requests(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].detail, "2 requests to lb-2:8000 failed");
        assert_eq!(v[1].detail, "1 requests to lb-1:8000 failed");
    }

    #[test]
    fn orphans_and_unfinished_rollbacks_are_found_at_the_end() {
        let mut f = Final::default();
        f.agents.insert(
            "agent-1".into(),
            ["t1".to_string(), "t9".to_string()].into(),
        );
        f.agents.insert("agent-2".into(), BTreeSet::new());
        f.tasks.insert("t1".into(), task("RUNNING", "RUNNING"));
        f.tasks.insert("t2".into(), task("RUNNING", "RUNNING"));
        let v = orphans(&f, 9.0);
        let details: Vec<&str> = v.iter().map(|v| v.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "task t9 runs on [\"agent-1\"] but no record wants it",
                "task t2 is RUNNING in its record but runs on 0 agents"
            ]
        );

        f.deployments.insert(
            "s".into(),
            vec![
                json!({"taskDefinition": "arn:x:task-definition/s:2", "rolloutState": "FAILED", "status": "INACTIVE"}),
                json!({"taskDefinition": "arn:x:task-definition/s:1", "rolloutState": "COMPLETED", "status": "PRIMARY"}),
            ],
        );
        let failing = vec![("s".to_string(), "s:2".to_string())];
        assert!(rollbacks(&f, &failing, 9.0).is_empty());
        let never = vec![("s".to_string(), "s:3".to_string())];
        assert_eq!(rollbacks(&f, &never, 9.0).len(), 1);
    }
}

//! The scheduler end to end: real etcd, real `capstan-agent`s running real processes in three
//! zones, the real `capstan-scheduler` binary. Deployment keys are written directly, as the
//! deployment controller would.

use std::collections::BTreeSet;
use std::time::Duration;

use capstan_core::Deployment;
use capstan_core::deployment::DeploymentStatus;
use capstan_core::instance::{ContainerInstance, InstanceStatus};
use capstan_core::task::{StopCode, TaskStatus};
use capstan_e2e::*;
use capstan_store::{Store, Write};
use capstan_testing::EtcdCluster;
use serde_json::json;

struct Cluster {
    _etcd: EtcdCluster,
    endpoints: Vec<String>,
    dir: tempfile::TempDir,
    store: Store,
    agents: Vec<Proc>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        kill_task_processes(self.dir.path());
    }
}

async fn cluster(zones: &[&str]) -> Cluster {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let endpoints = etcd.endpoints();
    let dir = test_dir();
    let agents = zones
        .iter()
        .map(|z| agent(&endpoints, dir.path(), z))
        .collect();
    let store = store(&endpoints).await;
    registered(&store, "default", zones.len()).await;
    Cluster {
        _etcd: etcd,
        endpoints,
        dir,
        store,
        agents,
    }
}

async fn deploy(s: &Store, service: &str, desired: u32) {
    put_task_definition(s, service, 128, 64, "exec sleep 600").await;
    let svc = json!({"serviceName": service, "taskDefinition": format!("{service}:1"), "desiredCount": desired});
    s.put(
        &s.keys().service("default", service),
        svc.to_string().into_bytes(),
    )
    .await
    .expect("service");
    set_desired(s, service, desired).await;
}

async fn set_desired(s: &Store, service: &str, desired: u32) {
    let d = Deployment {
        id: "ecs-svc/1".into(),
        status: DeploymentStatus::Primary,
        task_definition: format!("{service}:1"),
        desired_count: desired,
        ..Default::default()
    };
    s.put_json(&s.keys().deployment("default", service, &d.id), &d)
        .await
        .expect("deployment");
}

async fn put_task_definition(s: &Store, family: &str, cpu: u32, memory: u32, command: &str) {
    let td = json!({
        "family": family, "revision": 1, "status": "ACTIVE",
        "containerDefinitions": [{"name": "app", "image": "x", "cpu": cpu, "memory": memory,
            "entryPoint": ["sh", "-c"], "command": [command], "stopTimeout": 2}]
    });
    s.put(
        &s.keys().task_definition(family, 1),
        td.to_string().into_bytes(),
    )
    .await
    .expect("taskdef");
}

/// Sets the instance in `zone` DRAINING, keeping its agent's lease (as `etcdctl --ignore-lease`);
/// read again and retried when the agent updated its record in between.
async fn drain(s: &Store, zone: &str) {
    for _ in 0..20 {
        match try_drain(s, zone).await {
            Err(capstan_store::StoreError::Conflict { .. }) => continue,
            r => return r.expect("drain"),
        }
    }
    panic!("drain: the instance record kept changing");
}

async fn try_drain(s: &Store, zone: &str) -> Result<(), capstan_store::StoreError> {
    let listing = s
        .list(
            &s.keys()
                .list(capstan_core::keys::Family::ContainerInstances, &["default"]),
        )
        .await
        .expect("instances");
    let kv = listing
        .kvs
        .iter()
        .find(|kv| {
            kv.json::<ContainerInstance>()
                .is_ok_and(|ci| ci.attribute("ecs.availability-zone") == Some(zone))
        })
        .expect("instance registered");
    let mut ci: ContainerInstance = kv.json().expect("decodes");
    ci.status = InstanceStatus::Draining;
    s.commit(
        Write::new()
            .put_json_with_lease(&kv.key, &ci, kv.lease)
            .if_unchanged(&kv.key, kv.mod_revision),
        None,
    )
    .await
    .map(drop)
}

/// Writes a RunTask request and waits for the scheduler's result.
async fn run_task(
    s: &Store,
    id: &str,
    request: serde_json::Value,
) -> capstan_core::requests::RunTaskResult {
    s.put(
        &format!("/capstan/requests/runtask/default/{id}"),
        request.to_string().into_bytes(),
    )
    .await
    .expect("request");
    let key = format!("/capstan/status/runtask/default/{id}");
    eventually(Duration::from_secs(20), "RunTask result", || {
        let (s, key) = (s.clone(), key.clone());
        async move { s.get_json(&key).await.ok().flatten().map(|v| v.value) }
    })
    .await
}

fn zones_of(ts: &[&capstan_core::Task]) -> Vec<String> {
    let mut z: Vec<String> = ts
        .iter()
        .filter_map(|t| t.availability_zone.clone())
        .collect();
    z.sort();
    z
}

#[tokio::test]
async fn tasks_are_spread_replaced_moved_off_lost_and_draining_instances() {
    let mut c = cluster(&["zone-a", "zone-b", "zone-c"]).await;
    let _scheduler = scheduler(&c.endpoints, c.dir.path(), "s1");
    deploy(&c.store, "web", 3).await;

    // desiredCount 3 → 3 running processes, one per zone.
    let s = c.store.clone();
    let first = eventually(Duration::from_secs(30), "3 tasks RUNNING", || {
        let s = s.clone();
        async move {
            let ts = tasks(&s, "default").await;
            let r: Vec<_> = running(&ts).into_iter().cloned().collect();
            (r.len() == 3).then_some(r)
        }
    })
    .await;
    let refs: Vec<&capstan_core::Task> = first.iter().collect();
    assert_eq!(zones_of(&refs), vec!["zone-a", "zone-b", "zone-c"]);
    for t in &first {
        assert_eq!(t.group.as_deref(), Some("service:web"));
        assert_eq!(t.started_by.as_deref(), Some("ecs-svc/1"));
        let pid: i32 = t.containers[0]
            .runtime_id
            .as_deref()
            .and_then(|p| p.parse().ok())
            .expect("pid");
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "task process runs"
        );
    }

    // Kill one task's process: it is recorded STOPPED with its exit code and replaced.
    let victim = &first[0];
    let pid: i32 = victim.containers[0]
        .runtime_id
        .as_deref()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let victim_id = victim.id().to_string();
    eventually(Duration::from_secs(30), "the killed task replaced", || {
        let s = s.clone();
        let victim_id = victim_id.clone();
        async move {
            let ts = tasks(&s, "default").await;
            let dead = ts.iter().find(|t| t.id() == victim_id)?;
            let ok = dead.last_status == TaskStatus::Stopped
                && dead.stop_code == Some(StopCode::EssentialContainerExited)
                && dead.containers[0].exit_code == Some(137)
                && running(&ts).len() == 3
                && !running(&ts).iter().any(|t| t.id() == victim_id);
            ok.then_some(())
        }
    })
    .await;

    // Kill the agent of zone-a: after the grace, its task is recorded lost and replaced.
    let ts = tasks(&s, "default").await;
    let on_a: Vec<String> = running(&ts)
        .iter()
        .filter(|t| t.availability_zone.as_deref() == Some("zone-a"))
        .map(|t| t.id().to_string())
        .collect();
    assert_eq!(on_a.len(), 1);
    c.agents[0].kill();
    let lost = on_a[0].clone();
    eventually(
        Duration::from_secs(20),
        "the lost host's task replaced",
        || {
            let s = s.clone();
            let lost = lost.clone();
            async move {
                let ts = tasks(&s, "default").await;
                let t = ts.iter().find(|t| t.id() == lost)?;
                let r = running(&ts);
                let ok = t.last_status == TaskStatus::Stopped
                    && t.stop_code == Some(StopCode::InfrastructureHealth)
                    && r.len() == 3
                    && r.iter()
                        .all(|t| t.availability_zone.as_deref() != Some("zone-a"));
                ok.then_some(())
            }
        },
    )
    .await;

    // Drain zone-b: its tasks move to zone-c.
    drain(&c.store, "zone-b").await;
    eventually(
        Duration::from_secs(30),
        "tasks moved off the draining instance",
        || {
            let s = s.clone();
            async move {
                let ts = tasks(&s, "default").await;
                let r = running(&ts);
                let on_b = ts
                    .iter()
                    .filter(|t| {
                        t.availability_zone.as_deref() == Some("zone-b")
                            && t.last_status != TaskStatus::Stopped
                    })
                    .count();
                (r.len() == 3 && on_b == 0 && zones_of(&r) == vec!["zone-c"; 3]).then_some(())
            }
        },
    )
    .await;

    // Scale in to 1: two tasks stop.
    set_desired(&c.store, "web", 1).await;
    eventually(Duration::from_secs(30), "scaled in to 1", || {
        let s = s.clone();
        async move {
            let ts = tasks(&s, "default").await;
            let live = ts
                .iter()
                .filter(|t| t.last_status != TaskStatus::Stopped)
                .count();
            (running(&ts).len() == 1 && live == 1).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn killing_the_leader_mid_scale_out_ends_with_exactly_the_desired_tasks() {
    let c = cluster(&["zone-a", "zone-b", "zone-c"]).await;
    let mut s1 = scheduler(&c.endpoints, c.dir.path(), "s1");
    let s = c.store.clone();
    // s1 leads before s2 exists.
    eventually(Duration::from_secs(10), "s1 leads", || {
        let s = s.clone();
        async move {
            let l = s.list("/capstan/elections/scheduler").await.ok()?;
            l.kvs.iter().any(|kv| kv.value == b"s1").then_some(())
        }
    })
    .await;
    let _s2 = scheduler(&c.endpoints, c.dir.path(), "s2");
    deploy(&c.store, "burst", 20).await;
    eventually(Duration::from_secs(20), "scale-out started", || {
        let s = s.clone();
        async move { (!tasks(&s, "default").await.is_empty()).then_some(()) }
    })
    .await;
    s1.kill();

    let final_tasks = eventually(Duration::from_secs(60), "exactly 20 RUNNING", || {
        let s = s.clone();
        async move {
            let ts = tasks(&s, "default").await;
            let live = ts
                .iter()
                .filter(|t| t.last_status != TaskStatus::Stopped)
                .count();
            (running(&ts).len() == 20 && live == 20).then_some(ts)
        }
    })
    .await;
    // No task runs twice: every running task id is on exactly one agent, and agents run exactly
    // the 20 recorded tasks.
    let mut on_agents = Vec::new();
    for a in &c.agents {
        let ch = capstan_proto::tls::connect(a.field("grpc"), None)
            .await
            .expect("agent");
        let mut client = capstan_proto::agent::v1::agent_client::AgentClient::new(ch);
        let listed = client
            .list_tasks(capstan_proto::agent::v1::ListTasksRequest {})
            .await
            .expect("list")
            .into_inner()
            .tasks;
        on_agents.extend(
            listed
                .into_iter()
                .filter(|t| t.last_status == capstan_proto::agent::v1::TaskStatus::Running as i32)
                .map(|t| t.task_id),
        );
    }
    let unique: BTreeSet<&String> = on_agents.iter().collect();
    assert_eq!(unique.len(), on_agents.len(), "a task id runs twice");
    let recorded: BTreeSet<String> = running(&final_tasks)
        .iter()
        .map(|t| t.id().to_string())
        .collect();
    let running_ids: BTreeSet<String> = on_agents.into_iter().collect();
    assert_eq!(running_ids, recorded);
}

#[tokio::test]
async fn a_task_that_exits_at_once_is_relaunched_with_growing_delays() {
    let c = cluster(&["zone-a"]).await;
    let _scheduler = scheduler(&c.endpoints, c.dir.path(), "s1");
    let s = c.store.clone();
    put_task_definition(&s, "crash", 128, 64, "exit 1").await;
    let svc = json!({"serviceName": "crash", "taskDefinition": "crash:1", "desiredCount": 1});
    s.put(
        &s.keys().service("default", "crash"),
        svc.to_string().into_bytes(),
    )
    .await
    .expect("service");
    set_desired(&s, "crash", 1).await;

    // Four attempts: the gaps between a failure and the next launch grow.
    let attempts = eventually(Duration::from_secs(90), "four launch attempts", || {
        let s = s.clone();
        async move {
            let mut ts = tasks(&s, "default").await;
            ts.sort_by(|a, b| {
                a.created_at
                    .unwrap_or(0.0)
                    .total_cmp(&b.created_at.unwrap_or(0.0))
            });
            (ts.len() >= 4).then_some(ts)
        }
    })
    .await;
    for t in &attempts[..3] {
        assert_eq!(t.last_status, TaskStatus::Stopped);
        assert_eq!(t.containers[0].exit_code, Some(1));
    }
    let gap = |i: usize| {
        attempts[i + 1].created_at.unwrap_or(0.0) - attempts[i].stopped_at.unwrap_or(0.0)
    };
    assert!(gap(0) < 5.0, "first relaunch is immediate: {}", gap(0));
    assert!(gap(1) >= 9.5, "second relaunch waits ~10 s: {}", gap(1));
    assert!(gap(2) >= 19.5, "third relaunch waits ~20 s: {}", gap(2));
    let events = s
        .list("/capstan/events/default/crash/")
        .await
        .expect("events");
    assert!(
        events
            .kvs
            .iter()
            .any(|kv| String::from_utf8_lossy(&kv.value)
                .contains("service (crash) is unable to consistently start tasks successfully.")),
        "no throttle event"
    );
}

#[tokio::test]
async fn run_task_and_stop_task_requests_are_consumed_once() {
    let c = cluster(&["zone-a", "zone-b"]).await;
    let _scheduler = scheduler(&c.endpoints, c.dir.path(), "s1");
    let s = c.store.clone();
    put_task_definition(&s, "job", 128, 64, "exec sleep 600").await;
    let req = json!({"taskDefinition": "job", "count": 3, "startedBy": "nightly",
        "overrides": {"containerOverrides": [{"name": "app", "environment": [{"name": "MODE", "value": "full"}]}]}});

    let result = run_task(&s, "r1", req).await;
    assert_eq!(result.tasks.len(), 3);
    assert!(result.failures.is_empty());
    assert!(
        s.get("/capstan/requests/runtask/default/r1")
            .await
            .expect("get")
            .is_none(),
        "request consumed"
    );
    eventually(Duration::from_secs(20), "3 one-off tasks RUNNING", || {
        let s = s.clone();
        async move {
            let ts = tasks(&s, "default").await;
            let r = running(&ts);
            let ok = r.len() == 3
                && r.iter().all(|t| {
                    t.group.as_deref() == Some("family:job")
                        && t.started_by.as_deref() == Some("nightly")
                });
            ok.then_some(())
        }
    })
    .await;

    // StopTask: the task stops and is not replaced.
    let victim = result.tasks[0].clone();
    s.put(
        &format!("/capstan/requests/stoptask/default/{victim}"),
        br#"{"reason": "done early"}"#.to_vec(),
    )
    .await
    .expect("stop request");
    eventually(
        Duration::from_secs(20),
        "the task stopped by request",
        || {
            let s = s.clone();
            let victim = victim.clone();
            async move {
                let ts = tasks(&s, "default").await;
                let t = ts.iter().find(|t| t.id() == victim)?;
                (t.last_status == TaskStatus::Stopped
                    && t.stop_code == Some(StopCode::UserInitiated)
                    && t.stopped_reason.as_deref() == Some("done early")
                    && running(&ts).len() == 2)
                    .then_some(())
            }
        },
    )
    .await;
    assert!(
        s.get(&format!("/capstan/requests/stoptask/default/{victim}"))
            .await
            .expect("get")
            .is_none()
    );

    // A request that cannot be placed reports ECS's failure reason.
    let big = json!({"taskDefinition": "job:1", "count": 1, "overrides": {"memory": "999999"}});
    let result = run_task(&s, "r2", big).await;
    assert!(result.tasks.is_empty());
    assert_eq!(result.failures[0].reason, "RESOURCE:MEMORY");
}

#[tokio::test]
async fn a_daemon_runs_once_on_every_instance_and_follows_joins_and_drains() {
    let mut c = cluster(&["zone-a", "zone-b"]).await;
    let _scheduler = scheduler(&c.endpoints, c.dir.path(), "s1");
    let s = c.store.clone();
    put_task_definition(&s, "logs", 64, 32, "exec sleep 600").await;
    let svc =
        json!({"serviceName": "logs", "taskDefinition": "logs:1", "schedulingStrategy": "DAEMON"});
    s.put(
        &s.keys().service("default", "logs"),
        svc.to_string().into_bytes(),
    )
    .await
    .expect("service");
    set_desired(&s, "logs", 0).await;
    let per_zone = |s: Store| async move {
        let ts = tasks(&s, "default").await;
        zones_of(&running(&ts))
    };
    eventually(
        Duration::from_secs(20),
        "one daemon task per instance",
        || {
            let s = s.clone();
            async move { (per_zone(s).await == vec!["zone-a", "zone-b"]).then_some(()) }
        },
    )
    .await;
    // A new instance joins: it gets its task.
    c.agents.push(agent(&c.endpoints, c.dir.path(), "zone-c"));
    eventually(
        Duration::from_secs(20),
        "the joining instance runs the daemon",
        || {
            let s = s.clone();
            async move { (per_zone(s).await == vec!["zone-a", "zone-b", "zone-c"]).then_some(()) }
        },
    )
    .await;
    // Draining an instance stops its daemon task; nothing moves elsewhere.
    drain(&s, "zone-a").await;
    eventually(
        Duration::from_secs(20),
        "the draining instance's daemon task stopped",
        || {
            let s = s.clone();
            async move {
                let ts = tasks(&s, "default").await;
                let live = ts
                    .iter()
                    .filter(|t| t.last_status != TaskStatus::Stopped)
                    .count();
                (zones_of(&running(&ts)) == vec!["zone-b", "zone-c"] && live == 2).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_balanced_task_waits_in_deactivating_for_the_drained_mark() {
    let c = cluster(&["zone-a"]).await;
    let _s1 = scheduler(&c.endpoints, c.dir.path(), "s1");
    let s = c.store.clone();
    deploy(&s, "lb", 1).await;
    let mut d = Deployment {
        id: "ecs-svc/1".into(),
        status: DeploymentStatus::Primary,
        task_definition: "lb:1".into(),
        desired_count: 1,
        load_balancers: vec![capstan_core::service::LoadBalancer {
            target_group_arn: Some("lb-tg".into()),
            container_name: Some("app".into()),
            container_port: Some(8080),
            ..Default::default()
        }],
        ..Default::default()
    };
    let key = s.keys().deployment("default", "lb", &d.id);
    s.put_json(&key, &d).await.expect("deployment");
    let task = eventually(Duration::from_secs(20), "one RUNNING task", || {
        let s = s.clone();
        async move {
            running(&tasks(&s, "default").await)
                .first()
                .map(|t| t.id().to_string())
        }
    })
    .await;
    // The registrar has the target registered and draining.
    let target = |drained: bool| {
        json!({"targets": [{"taskId": task, "host": "127.0.0.1", "port": 8080,
            "state": "draining", "drained": drained}]})
    };
    let tg_key = s.keys().target_group_status("lb-tg");
    s.put(&tg_key, target(false).to_string().into_bytes())
        .await
        .expect("tg status");
    d.desired_count = 0;
    s.put_json(&key, &d).await.expect("scale in");
    let of = |ts: Vec<capstan_core::task::Task>, id: &str| ts.into_iter().find(|t| t.id() == id);
    eventually(Duration::from_secs(10), "DEACTIVATING", || {
        let (s, task) = (s.clone(), task.clone());
        async move {
            of(tasks(&s, "default").await, &task)
                .filter(|t| t.last_status == TaskStatus::Deactivating)
                .map(|_| ())
        }
    })
    .await;
    // It stays there while the target drains.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        let t = of(tasks(&s, "default").await, &task).expect("task");
        assert_eq!(
            t.last_status,
            TaskStatus::Deactivating,
            "stopped before draining ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.put(&tg_key, target(true).to_string().into_bytes())
        .await
        .expect("drained");
    eventually(Duration::from_secs(10), "STOPPED once drained", || {
        let (s, task) = (s.clone(), task.clone());
        async move {
            of(tasks(&s, "default").await, &task)
                .filter(|t| t.last_status == TaskStatus::Stopped)
                .map(|_| ())
        }
    })
    .await;
}

//! The capacity-provider scaler end to end: real etcd, the real scaler, scheduler and deployer,
//! and `capstan-nodegroup-local` starting and stopping real agents.

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_core::capacity::CapacityProviderStatusDoc;
use capstan_core::task::{Task, TaskStatus};
use capstan_e2e::*;
use capstan_store::Store;
use capstan_testing::EtcdCluster;
use serde_json::json;

/// `family` with one container of `cpu` units running `sleep`.
async fn taskdef(s: &Store, family: &str, cpu: u32) {
    put_doc(
        s,
        &s.keys().task_definition(family, 1),
        &json!({"family": family, "revision": 1, "status": "ACTIVE",
            "containerDefinitions": [{"name": "app", "image": "x", "cpu": cpu, "memory": 32,
                "entryPoint": ["sh", "-c"], "command": ["exec sleep 600"], "stopTimeout": 2}]}),
    )
    .await;
}

async fn provider(s: &Store, name: &str, endpoint: &str, group: &str, scale_in_minutes: u32) {
    put_doc(
        s,
        &s.keys().capacity_provider(name),
        &json!({"name": name, "nodeGroupProvider": {"endpoint": endpoint, "groupId": group,
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100, "instanceWarmupPeriod": 1,
                "scaleInEvaluationPeriodMinutes": scale_in_minutes},
            "managedTerminationProtection": "ENABLED", "managedDraining": "ENABLED"}}),
    )
    .await;
}

async fn service(s: &Store, family: &str, desired: u32, strategy: serde_json::Value) {
    put_doc(
        s,
        &s.keys().service("default", family),
        &json!({"serviceName": family, "taskDefinition": format!("{family}:1"),
            "desiredCount": desired, "capacityProviderStrategy": strategy,
            "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 200}}),
    )
    .await;
}

async fn status(s: &Store, name: &str) -> Option<CapacityProviderStatusDoc> {
    s.get_json::<CapacityProviderStatusDoc>(&s.keys().capacity_provider_status(name))
        .await
        .expect("get")
        .map(|v| v.value)
}

fn running_of<'a>(tasks: &'a [Task], provider: &str) -> Vec<&'a Task> {
    running(tasks)
        .into_iter()
        .filter(|t| t.capacity_provider_name.as_deref() == Some(provider))
        .collect()
}

/// Tasks still running on a container instance the provider reports as terminating.
fn terminated_while_busy(
    group: &capstan_proto::nodegroup::v1::DescribeGroupResponse,
    tasks: &[Task],
) -> Vec<String> {
    let terminating = capstan_proto::nodegroup::v1::InstanceState::Terminating as i32;
    group
        .instances
        .iter()
        .filter(|i| i.state == terminating && !i.container_instance_id.is_empty())
        .flat_map(|i| {
            tasks
                .iter()
                .filter(|t| {
                    t.last_status == TaskStatus::Running
                        && t.container_instance_arn
                            .as_deref()
                            .is_some_and(|c| c.ends_with(&i.container_instance_id))
                })
                .map(|t| format!("{} on {}", t.id(), i.instance_id))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_group_grows_for_provisioning_tasks_then_drains_and_terminates_only_empty_instances() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let groups = NodeGroups::start(
        &ep,
        dir.path(),
        &["g1:min=0,max=10,desired=1,cpu=1024,memory=4096,provider=cp1"],
    );
    let _sched = scheduler(&ep, dir.path(), "s1");
    let _dep = deployer(&ep, dir.path(), "d1", "1s");
    let _scaler = scaler(&ep, dir.path(), "c1");
    let s = store(&ep).await;
    let s = &s;
    registered(s, "default", 1).await;
    provider(s, "cp1", &groups.endpoint(), "g1", 15).await;
    taskdef(s, "web", 512).await;

    // 10 tasks of 512 CPU on 1024-CPU instances, from 1 instance: the group grows to 5.
    service(
        s,
        "web",
        10,
        json!([{"capacityProvider": "cp1", "weight": 1}]),
    )
    .await;
    let g = &groups;
    eventually(
        Duration::from_secs(90),
        "10 tasks RUNNING on 5 instances, CPR 100",
        || async move {
            let t = tasks(s, "default").await;
            let st = status(s, "cp1").await?;
            let group = g.describe("g1").await;
            (running_of(&t, "cp1").len() == 10
                && group.desired_capacity == 5
                && group.instances.len() == 5
                && st.running_instances == 5
                && st.instances_needed == 5
                && (st.capacity_provider_reservation - 100.0).abs() < 1e-9)
                .then_some(())
        },
    )
    .await;
    let per_instance: BTreeMap<String, usize> =
        running(&tasks(s, "default").await)
            .iter()
            .fold(BTreeMap::new(), |mut m, t| {
                *m.entry(t.container_instance_arn.clone().unwrap_or_default())
                    .or_default() += 1;
                m
            });
    assert!(per_instance.values().all(|n| *n == 2), "{per_instance:?}");

    // A one-off task on one instance keeps it busy: it must survive the scale-in. (It reserves
    // no CPU: the instance is full.)
    taskdef(s, "pin", 0).await;
    let group = groups.describe("g1").await;
    let pinned_ci = group.instances[0].container_instance_id.clone();
    put_doc(
        s,
        &s.keys().key(
            capstan_core::keys::Family::RunTaskRequests,
            &["default", "pin"],
        ),
        &json!({"taskDefinition": "pin:1", "startedBy": "pin",
            "placementConstraints": [{"type": "memberOf", "expression": format!("ec2InstanceId == {pinned_ci}")}]}),
    )
    .await;
    let pinned = eventually(
        Duration::from_secs(20),
        "the pinned task runs",
        || async move {
            running(&tasks(s, "default").await)
                .into_iter()
                .find(|t| t.started_by.as_deref() == Some("pin"))
                .map(|t| t.id().to_string())
        },
    )
    .await;

    // Scale the service to 0 with a 0-minute evaluation period: empty instances are drained
    // and terminated; the busy one stays; no instance is terminated while it runs a task.
    provider(s, "cp1", &groups.endpoint(), "g1", 0).await;
    service(
        s,
        "web",
        0,
        json!([{"capacityProvider": "cp1", "weight": 1}]),
    )
    .await;
    let violations = std::sync::Mutex::new(Vec::new());
    let v = &violations;
    let pinned_ci = &pinned_ci;
    eventually(
        Duration::from_secs(90),
        "the group shrinks to the busy instance",
        || async move {
            let t = tasks(s, "default").await;
            let group = g.describe("g1").await;
            v.lock()
                .expect("lock")
                .extend(terminated_while_busy(&group, &t));
            (group.desired_capacity == 1
                && group.instances.len() == 1
                && &group.instances[0].container_instance_id == pinned_ci)
                .then_some(())
        },
    )
    .await;
    assert!(
        violations.lock().expect("lock").is_empty(),
        "terminated while running tasks: {violations:?}"
    );
    let t = tasks(s, "default").await;
    assert!(
        running(&t).iter().any(|x| x.id() == pinned),
        "the pinned task still runs"
    );
    assert!(
        !t.iter().any(|x| x
            .stopped_reason
            .as_deref()
            .is_some_and(|r| r.contains("was lost"))),
        "no task was lost with its host"
    );

    // Once it is done, the last instance goes too (the group's minimum is 0).
    put_doc(
        s,
        &s.keys().key(
            capstan_core::keys::Family::StopTaskRequests,
            &["default", &pinned],
        ),
        &json!({"reason": "done"}),
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the group is empty",
        || async move {
            let group = g.describe("g1").await;
            let st = status(s, "cp1").await?;
            (group.instances.is_empty()
                && group.desired_capacity == 0
                && (st.capacity_provider_reservation - 100.0).abs() < 1e-9)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_base_and_weight_strategy_splits_tasks_over_two_providers() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let groups = NodeGroups::start(
        &ep,
        dir.path(),
        &[
            "ga:min=0,max=5,cpu=1024,memory=4096,provider=cpa,zones=za",
            "gb:min=0,max=5,cpu=1024,memory=4096,provider=cpb,zones=zb",
        ],
    );
    let _sched = scheduler(&ep, dir.path(), "s1");
    let _dep = deployer(&ep, dir.path(), "d1", "1s");
    let _scaler = scaler(&ep, dir.path(), "c1");
    let s = store(&ep).await;
    let s = &s;
    provider(s, "cpa", &groups.endpoint(), "ga", 15).await;
    provider(s, "cpb", &groups.endpoint(), "gb", 15).await;
    taskdef(s, "api", 256).await;
    service(
        s,
        "api",
        10,
        json!([{"capacityProvider": "cpa", "base": 2, "weight": 1},
               {"capacityProvider": "cpb", "weight": 3}]),
    )
    .await;
    let (on_a, on_b) = eventually(Duration::from_secs(90), "10 tasks RUNNING", || async move {
        let t = tasks(s, "default").await;
        let (a, b) = (running_of(&t, "cpa").len(), running_of(&t, "cpb").len());
        (a + b == 10).then_some((a, b))
    })
    .await;
    assert_eq!((on_a, on_b), (4, 6), "base 2 on A, the other 8 split 1:3");
    // Each task runs on an instance of its own provider.
    let t = tasks(s, "default").await;
    for task in running(&t) {
        let ci = task
            .container_instance_arn
            .as_deref()
            .and_then(|c| c.rsplit('/').next())
            .expect("placed");
        let group = if task.capacity_provider_name.as_deref() == Some("cpa") {
            "ga"
        } else {
            "gb"
        };
        assert!(
            groups
                .describe(group)
                .await
                .instances
                .iter()
                .any(|i| i.container_instance_id == ci),
            "task {} of {:?} on {ci}",
            task.id(),
            task.capacity_provider_name
        );
    }
    assert_eq!(groups.describe("ga").await.desired_capacity, 1);
    assert_eq!(groups.describe("gb").await.desired_capacity, 2);
}

#[tokio::test]
async fn a_leader_killed_during_scale_out_never_double_scales() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let groups = NodeGroups::start(
        &ep,
        dir.path(),
        &["g1:min=0,max=10,cpu=1024,memory=4096,provider=cp1"],
    );
    let _sched = scheduler(&ep, dir.path(), "s1");
    let _dep = deployer(&ep, dir.path(), "d1", "1s");
    let mut first = scaler(&ep, dir.path(), "c1");
    let s = store(&ep).await;
    let s = &s;
    let election = s.keys().election("scaler");
    let election = &election;
    eventually(Duration::from_secs(20), "c1 leads", || async move {
        let l = s.list(election).await.ok()?;
        l.kvs
            .iter()
            .any(|kv| String::from_utf8_lossy(&kv.value).contains("c1"))
            .then_some(())
    })
    .await;
    let _second = scaler(&ep, dir.path(), "c2");
    provider(s, "cp1", &groups.endpoint(), "g1", 15).await;
    taskdef(s, "web", 512).await;
    // 8 tasks of 512 need 4 instances.
    service(
        s,
        "web",
        8,
        json!([{"capacityProvider": "cp1", "weight": 1}]),
    )
    .await;
    let g = &groups;
    eventually(Duration::from_secs(60), "scale-out began", || async move {
        (g.describe("g1").await.desired_capacity > 0).then_some(())
    })
    .await;
    first.kill();

    let max_seen = std::sync::atomic::AtomicU32::new(0);
    let m = &max_seen;
    eventually(
        Duration::from_secs(90),
        "8 tasks RUNNING on 4 instances",
        || async move {
            let group = g.describe("g1").await;
            m.fetch_max(group.desired_capacity, std::sync::atomic::Ordering::SeqCst);
            let t = tasks(s, "default").await;
            (running_of(&t, "cp1").len() == 8 && group.instances.len() == 4).then_some(())
        },
    )
    .await;
    // The new leader keeps evaluating (every second): the group stays at 4.
    for _ in 0..30 {
        let group = groups.describe("g1").await;
        max_seen.fetch_max(group.desired_capacity, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        max_seen.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "desired capacity never went past what the tasks need"
    );
    let st = status(s, "cp1").await.expect("status");
    assert_eq!((st.instances_needed, st.running_instances), (4, 4));
}

#[tokio::test]
async fn run_task_with_a_capacity_provider_waits_in_provisioning_until_capacity_arrives() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let groups = NodeGroups::start(
        &ep,
        dir.path(),
        &["g1:min=0,max=4,cpu=1024,memory=4096,provider=cp1"],
    );
    let _sched = scheduler(&ep, dir.path(), "s1");
    let s = store(&ep).await;
    let s = &s;
    provider(s, "cp1", &groups.endpoint(), "g1", 15).await;
    taskdef(s, "job", 512).await;
    put_doc(
        s,
        &s.keys().key(
            capstan_core::keys::Family::RunTaskRequests,
            &["default", "r1"],
        ),
        &json!({"taskDefinition": "job:1", "count": 3,
            "capacityProviderStrategy": [{"capacityProvider": "cp1", "weight": 1}]}),
    )
    .await;
    // No instance yet: the tasks are accepted and wait in PROVISIONING, none failed.
    let result = eventually(Duration::from_secs(20), "RunTask answered", || async move {
        s.get_json::<capstan_core::requests::RunTaskResult>(&s.keys().key(
            capstan_core::keys::Family::RunTaskResults,
            &["default", "r1"],
        ))
        .await
        .ok()
        .flatten()
        .map(|v| v.value)
    })
    .await;
    assert_eq!(result.tasks.len(), 3, "{result:?}");
    assert!(result.failures.is_empty(), "{result:?}");
    let t = tasks(s, "default").await;
    assert!(
        t.iter().all(|x| x.last_status == TaskStatus::Provisioning),
        "{t:?}"
    );
    // The scaler adds two instances; the waiting tasks are placed and run.
    let _scaler = scaler(&ep, dir.path(), "c1");
    let g = &groups;
    eventually(
        Duration::from_secs(60),
        "3 one-off tasks RUNNING",
        || async move {
            let t = tasks(s, "default").await;
            (running_of(&t, "cp1").len() == 3 && g.describe("g1").await.desired_capacity == 2)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn with_tls_the_scaler_scales_through_the_provider_and_other_callers_are_refused() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let pki = capstan_testing::pki::Pki::new().expect("pki");
    let files = |who: &str| pki.files(who);
    let groups = NodeGroups::start_with_tls(
        &ep,
        dir.path(),
        &["g1:min=0,max=2,cpu=1024,memory=4096,provider=cp1"],
        Some(files("server")),
    );
    let endpoint = groups.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    // Plain text, no certificate and another CA's certificate are refused.
    let describe = |tls: Option<capstan_proto::tls::TlsFiles>, at: String| async move {
        let ch = capstan_proto::tls::connect(&at, tls.as_ref()).await.ok()?;
        capstan_proto::nodegroup::v1::node_group_provider_client::NodeGroupProviderClient::new(ch)
            .describe_group(capstan_proto::nodegroup::v1::DescribeGroupRequest {
                group_id: "g1".into(),
            })
            .await
            .ok()
    };
    let plain = endpoint.replace("https://", "http://");
    assert!(describe(None, plain).await.is_none(), "plain text got in");
    let rogue = capstan_proto::tls::TlsFiles {
        ca: pki.file("ca.pem"),
        ..files("rogue")
    };
    assert!(
        describe(Some(rogue), endpoint.clone()).await.is_none(),
        "another CA got in"
    );
    assert!(
        describe(Some(files("client")), endpoint.clone())
            .await
            .is_some()
    );
    // The scaler calls the provider, the scheduler the agents it starts: all over mutual TLS.
    let client: Vec<String> = tls_args(&files("client"));
    let client: Vec<&str> = client.iter().map(String::as_str).collect();
    let _sched = controller(
        "scheduler",
        &ep,
        dir.path(),
        "s1",
        &[&["--node-loss-grace", "2s"], &client[..]].concat(),
    );
    let _dep = deployer(&ep, dir.path(), "d1", "1s");
    let _scaler = controller(
        "scaler",
        &ep,
        dir.path(),
        "c1",
        &[&["--interval", "1s"], &client[..]].concat(),
    );
    let s = store(&ep).await;
    let s = &s;
    provider(s, "cp1", &endpoint, "g1", 15).await;
    taskdef(s, "api", 256).await;
    service(
        s,
        "api",
        2,
        json!([{"capacityProvider": "cp1", "weight": 1}]),
    )
    .await;
    eventually(Duration::from_secs(60), "2 tasks RUNNING", || async move {
        let t = tasks(s, "default").await;
        (running_of(&t, "cp1").len() == 2).then_some(())
    })
    .await;
    let instances = s
        .list(
            &s.keys()
                .list(capstan_core::keys::Family::ContainerInstances, &["default"]),
        )
        .await
        .expect("list");
    assert!(!instances.kvs.is_empty());
    for kv in &instances.kvs {
        let ci: capstan_core::instance::ContainerInstance = kv.json().expect("instance");
        assert!(
            ci.agent_endpoint.starts_with("https://"),
            "{}",
            ci.agent_endpoint
        );
    }
}

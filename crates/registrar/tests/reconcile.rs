//! The registrar in process against real etcd, without a data plane: a RUNNING task of a
//! load-balanced deployment becomes a target that its own TCP health checks find healthy; when
//! the task starts stopping (DEACTIVATING) the target drains and, with no sessions on it, is
//! marked drained for the scheduler.

use std::time::{Duration, Instant};

use capstan_core::deployment::{Deployment, DeploymentStatus};
use capstan_core::instance::ContainerInstance;
use capstan_core::lb::{TargetGroupStatusDoc, TargetState};
use capstan_core::service::LoadBalancer;
use capstan_core::task::{Container, DesiredStatus, NetworkBinding, Task, TaskStatus};
use capstan_registrar::RegistrarArgs;
use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use clap::Parser;

async fn status_until(
    s: &Store,
    what: &str,
    check: impl Fn(&TargetGroupStatusDoc) -> bool,
) -> TargetGroupStatusDoc {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = s
            .get_json::<TargetGroupStatusDoc>(&s.keys().target_group_status("web-tg"))
            .await
            .expect("read status")
            .map(|v| v.value);
        if let Some(d) = doc.filter(&check) {
            return d;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_running_task_becomes_a_healthy_target_then_drains_when_it_stops() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("connect");
    let keys = s.keys().clone();
    // What the task serves: a TCP port that accepts.
    let serving = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = serving.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = serving.accept().await {
            drop(conn);
        }
    });

    let tg = serde_json::json!({"protocol": "TCP", "port": 80, "healthCheck": {
        "protocol": "TCP", "intervalSeconds": 5, "healthyThresholdCount": 2}});
    s.put(&keys.target_group("web-tg"), tg.to_string().into_bytes())
        .await
        .expect("target group");
    let deployment = Deployment {
        id: "d1".into(),
        status: DeploymentStatus::Primary,
        task_definition: "web:1".into(),
        load_balancers: vec![LoadBalancer {
            target_group_arn: Some("web-tg".into()),
            container_name: Some("app".into()),
            container_port: Some(8080),
            ..Default::default()
        }],
        ..Default::default()
    };
    s.put_json(&keys.deployment("default", "web", "d1"), &deployment)
        .await
        .expect("deployment");
    let ci = ContainerInstance {
        agent_endpoint: "http://127.0.0.1:1".into(),
        ..Default::default()
    };
    s.put_json(&keys.container_instance("default", "i-1"), &ci)
        .await
        .expect("instance");
    let mut task = Task {
        task_arn: "arn:capstan:ecs:local:000000000000:task/default/t1".into(),
        cluster_arn: "arn:capstan:ecs:local:000000000000:cluster/default".into(),
        last_status: TaskStatus::Running,
        desired_status: DesiredStatus::Running,
        started_by: Some("d1".into()),
        group: Some("service:web".into()),
        container_instance_arn: Some("i-1".into()),
        containers: vec![Container {
            name: "app".into(),
            last_status: TaskStatus::Running,
            network_bindings: vec![NetworkBinding {
                bind_ip: "0.0.0.0".into(),
                container_port: 8080,
                host_port: u32::from(port),
                protocol: capstan_core::taskdef::Protocol::Tcp,
            }],
            ..Default::default()
        }],
        version: 1,
        ..Default::default()
    };
    s.put_json(&keys.task("default", "t1"), &task)
        .await
        .expect("task");

    let endpoints = etcd.endpoints().join(",");
    let args = RegistrarArgs::try_parse_from([
        "capstan-registrar",
        "--etcd-endpoints",
        &endpoints,
        "--election-ttl",
        "2",
        "--no-data-plane",
    ])
    .expect("args");
    let registrar = tokio::spawn(capstan_registrar::run(args));

    let doc = status_until(&s, "a healthy target", |d| {
        d.targets.iter().any(|t| t.state == TargetState::Healthy)
    })
    .await;
    let t = &doc.targets[0];
    assert_eq!(
        (t.task_id.as_str(), t.host.as_str(), t.port),
        ("t1", "127.0.0.1", port)
    );

    task.desired_status = DesiredStatus::Stopped;
    task.last_status = TaskStatus::Deactivating;
    task.version += 1;
    s.put_json(&keys.task("default", "t1"), &task)
        .await
        .expect("stopping");
    let doc = status_until(&s, "the target drained", |d| {
        d.targets
            .iter()
            .any(|t| t.state == TargetState::Draining && t.drained)
    })
    .await;
    registrar.abort();
    assert_eq!(doc.targets.len(), 1);
}

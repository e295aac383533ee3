//! The deployer in process against real etcd: a service spec becomes a PRIMARY deployment with
//! its task count and a status document; a desiredCount change scales that deployment instead of
//! starting another, and a new task definition starts one.

use std::time::{Duration, Instant};

use capstan_core::ServiceStatusDoc;
use capstan_core::deployment::{Deployment, DeploymentStatus};
use capstan_core::keys::Family;
use capstan_deployer::DeployerArgs;
use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use capstan_testing::builders::{service, task_definition};
use clap::Parser;

async fn deployments(s: &Store) -> Vec<Deployment> {
    let prefix = s.keys().list(Family::Deployments, &["default", "web"]);
    s.list(&prefix)
        .await
        .expect("list")
        .kvs
        .iter()
        .filter_map(|kv| kv.json().ok())
        .collect()
}

/// Polls `check` until it holds, 20 s at most.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_service_spec_becomes_a_primary_deployment_scaled_in_place_and_replaced_on_a_new_revision()
 {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("connect");
    let keys = s.keys().clone();
    for rev in [1, 2] {
        let mut td = task_definition("web", "sleep 100");
        td.revision = Some(rev);
        s.put_json(&keys.task_definition("web", rev), &td)
            .await
            .expect("task definition");
    }
    s.put_json(&keys.service("default", "web"), &service("web", "web:1", 2))
        .await
        .expect("service");

    let endpoints = etcd.endpoints().join(",");
    let args = DeployerArgs::try_parse_from([
        "capstan-deployer",
        "--etcd-endpoints",
        &endpoints,
        "--election-ttl",
        "2",
    ])
    .expect("args");
    let deployer = tokio::spawn(capstan_deployer::run(args));

    until("a PRIMARY deployment of 2 tasks", || async {
        let d = deployments(&s).await;
        d.len() == 1 && d[0].status == DeploymentStatus::Primary && d[0].desired_count == 2
    })
    .await;
    let first = deployments(&s).await.remove(0);
    assert_eq!(first.task_definition, "web:1");
    until("the service status", || async {
        s.get_json::<ServiceStatusDoc>(&keys.service_status("default", "web"))
            .await
            .ok()
            .flatten()
            .is_some_and(|d| d.value.desired_count == 2 && d.value.deployments.len() == 1)
    })
    .await;

    // desiredCount is not a new deployment: the PRIMARY scales.
    s.put_json(&keys.service("default", "web"), &service("web", "web:1", 3))
        .await
        .expect("scale");
    until("the PRIMARY at 3 tasks", || async {
        let d = deployments(&s).await;
        d.len() == 1 && d[0].desired_count == 3
    })
    .await;
    assert_eq!(deployments(&s).await[0].id, first.id, "the same deployment");

    // A new revision is: a second PRIMARY; the first one is no longer PRIMARY (ACTIVE while it
    // has tasks to drain; with none running here it goes straight to INACTIVE).
    s.put_json(&keys.service("default", "web"), &service("web", "web:2", 3))
        .await
        .expect("new revision");
    until("a PRIMARY of web:2 and the old one retired", || async {
        let d = deployments(&s).await;
        d.iter()
            .any(|x| x.status == DeploymentStatus::Primary && x.task_definition == "web:2")
            && d.iter()
                .any(|x| x.id == first.id && x.status != DeploymentStatus::Primary)
    })
    .await;
    deployer.abort();
}

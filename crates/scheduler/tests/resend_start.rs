//! A task recorded PENDING whose StartTask never reached its agent (a leader died between the
//! write and the call) is started again once the agent's snapshot shows it does not have it —
//! with the same request as at launch, a RunTask's overrides included. Real etcd, the scheduler
//! in process, a fake agent over real gRPC.

use std::time::{Duration, Instant};

use capstan_core::instance::{ContainerInstance, Resource};
use capstan_core::task::TaskOverride;
use capstan_plan::tasks::{self, NewTask, Placing};
use capstan_scheduler::SchedulerArgs;
use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use capstan_testing::agent::serve_fake_agents;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_start_task_sent_again_after_a_failover_carries_the_tasks_overrides() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let cancel = CancellationToken::new();
    let fakes = serve_fake_agents(1, &cancel).await.expect("fake agent");
    let store = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("connect");
    let keys = store.keys().clone();

    let mut td = capstan_testing::builders::task_definition("job", "echo default");
    td.revision = Some(1);
    store
        .put_json(&keys.task_definition("job", 1), &td)
        .await
        .expect("task definition");
    let ci = ContainerInstance {
        container_instance_arn: "arn:capstan:ecs:local:000000000000:container-instance/default/i-1"
            .into(),
        agent_endpoint: fakes.endpoints[0].clone(),
        registered_resources: vec![
            Resource::integer("CPU", 1024),
            Resource::integer("MEMORY", 1024),
        ],
        agent_connected: true,
        ..Default::default()
    };
    store
        .put_json(&keys.container_instance("default", "i-1"), &ci)
        .await
        .expect("instance");
    // What a RunTask leader wrote just before it died: the record, and no StartTask.
    let mut t = tasks::new_task(
        NewTask {
            id: "t1",
            cluster: "default",
            group: "family:job",
            started_by: None,
            task_definition: &td,
            now: capstan_runtime::now(),
        },
        Placing::On(&ci, "i-1"),
    );
    let overrides: TaskOverride = serde_json::from_value(serde_json::json!({
        "containerOverrides": [{"name": "app", "command": ["echo overridden"]}]
    }))
    .expect("overrides");
    t.overrides = Some(overrides);
    store
        .put_json(&keys.task("default", "t1"), &t)
        .await
        .expect("task record");

    let endpoints = etcd.endpoints().join(",");
    let args = SchedulerArgs::try_parse_from([
        "capstan-scheduler",
        "--etcd-endpoints",
        &endpoints,
        "--election-ttl",
        "2",
    ])
    .expect("args");
    let scheduler = tokio::spawn(capstan_scheduler::run(args));

    let deadline = Instant::now() + Duration::from_secs(30);
    let sent = loop {
        if let Some(r) = fakes.agents[0]
            .started()
            .into_iter()
            .find(|r| r.task_id == "t1")
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler never sent StartTask for the unacknowledged task"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    scheduler.abort();
    cancel.cancel();
    assert_eq!(sent.cluster, "default");
    assert_eq!(sent.task_definition_arn, "job:1");
    let overrides: serde_json::Value =
        serde_json::from_str(&sent.overrides_json).expect("overrides were sent");
    assert_eq!(
        overrides["containerOverrides"][0]["command"][0], "echo overridden",
        "{overrides}"
    );
    assert!(sent.fencing_token > 0, "fenced with the leader's token");
}

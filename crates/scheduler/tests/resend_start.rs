//! A task recorded PENDING whose StartTask never reached its agent (a leader died between the
//! write and the call) is started again once the agent's snapshot shows it does not have it —
//! with the same request as at launch, a RunTask's overrides included. Real etcd, the scheduler
//! in process, a fake agent over real gRPC.

mod support;

use std::time::{Duration, Instant};

use capstan_core::task::TaskOverride;
use capstan_plan::tasks::{self, NewTask, Placing};

#[tokio::test]
async fn a_start_task_sent_again_after_a_failover_carries_the_tasks_overrides() {
    let setup = support::setup(1, "echo default").await;
    let (fakes, store, td) = (&setup.fakes, &setup.store, &setup.td);
    let keys = store.keys().clone();
    let ci = &setup.instances[0];
    // What a RunTask leader wrote just before it died: the record, and no StartTask.
    let mut t = tasks::new_task(
        NewTask {
            id: "t1",
            cluster: "default",
            group: "family:job",
            started_by: None,
            task_definition: td,
            now: capstan_runtime::now(),
            enable_execute_command: false,
        },
        Placing::On(ci, "i-1"),
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

    let scheduler = setup.scheduler();

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
    setup.cancel.cancel();
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

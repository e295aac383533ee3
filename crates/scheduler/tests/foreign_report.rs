//! An agent speaks only for its own tasks: a report about a task placed on another instance is
//! never recorded, and an agent claiming to run such a task is told to stop it. Real etcd, the
//! scheduler in process, fake agents over real gRPC (one of them lying).

mod support;

use std::time::{Duration, Instant};

use capstan_core::task::{Task, TaskStatus};
use capstan_plan::tasks::{self, NewTask, Placing};
use capstan_proto::agent::v1 as pb;

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_report_about_another_agents_task_is_ignored_and_the_liar_is_told_to_stop_it() {
    let setup = support::setup(2, "sleep 600").await;
    let (fakes, store, td) = (&setup.fakes, &setup.store, &setup.td);
    let keys = store.keys().clone();
    // t1 is placed on i-1; the scheduler starts it there.
    let t = tasks::new_task(
        NewTask {
            id: "t1",
            cluster: "default",
            group: "family:job",
            started_by: None,
            task_definition: td,
            now: capstan_runtime::now(),
            enable_execute_command: false,
        },
        Placing::On(&setup.instances[0], "i-1"),
    );
    store
        .put_json(&keys.task("default", "t1"), &t)
        .await
        .expect("task record");
    let scheduler = setup.scheduler();
    let key = keys.task("default", "t1");
    let record = || async {
        store
            .get_json::<Task>(&key)
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
    };
    wait_for("t1 RUNNING on i-1", async || {
        record()
            .await
            .filter(|t| t.last_status == TaskStatus::Running)
    })
    .await;

    // i-2's agent lies: t1 stopped with exit code 1 there, then running there.
    let liar = &fakes.agents[1];
    let state = |status: pb::TaskStatus, version| pb::TaskState {
        task_id: "t1".into(),
        last_status: status as i32,
        desired_status: status as i32,
        containers: vec![pb::ContainerState {
            name: "app".into(),
            last_status: status as i32,
            exit_code: Some(1),
            ..Default::default()
        }],
        version,
        ..Default::default()
    };
    liar.report(state(pb::TaskStatus::Stopped, 50));
    liar.report(state(pb::TaskStatus::Running, 51));
    // The liar's reports come in order: once it is told to stop t1, both were handled.
    wait_for("the liar is told to stop t1", async || {
        liar.stopped().contains(&"t1".to_string()).then_some(())
    })
    .await;
    let t = record().await.expect("t1's record");
    assert_eq!(t.last_status, TaskStatus::Running, "{t:?}");
    assert_eq!(t.instance_id(), Some("i-1"));
    assert!(t.stopped_reason.is_none(), "{t:?}");
    assert!(
        fakes.agents[0].stopped().is_empty(),
        "the real agent's task was left alone"
    );
    scheduler.abort();
    setup.cancel.cancel();
}

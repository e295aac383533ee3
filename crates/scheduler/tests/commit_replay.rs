//! A launch's commit whose answer was lost: the store replays it, the replay fails its compares,
//! and the records are recognised as this commit's own (real etcd).

use std::time::Duration;

use capstan_core::task::{Task, TaskStatus};
use capstan_scheduler::execute::commit_task_records;
use capstan_store::{Candidate, Store, StoreConfig, StoreError, Write, campaign};
use capstan_testing::EtcdCluster;
use tokio_util::sync::CancellationToken;

fn task(id: &str) -> Task {
    Task {
        task_arn: format!("arn:capstan:ecs:local:000000000000:task/default/{id}"),
        last_status: TaskStatus::Pending,
        version: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_replayed_commit_that_had_landed_counts_as_committed_and_a_real_conflict_does_not() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let store = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("connect");
    let cancel = CancellationToken::new();
    let (mut lead, _h) = campaign(
        store.clone(),
        Candidate {
            election: "/capstan/elections/scheduler".into(),
            id: "test".into(),
            ttl_secs: 5,
        },
        cancel.clone(),
    );
    let claim = tokio::time::timeout(Duration::from_secs(10), lead.acquired())
        .await
        .expect("leads in time")
        .expect("leads");
    let keys = store.keys().clone();
    let (a, b) = (task("a"), task("b"));
    let (ka, kb) = (keys.task("default", "a"), keys.task("default", "b"));
    let records = || {
        Write::new()
            .put_json(&ka, &a)
            .if_absent(&ka)
            .put_json(&kb, &b)
            .if_absent(&kb)
    };

    // The first attempt lands...
    let first = commit_task_records(&store, &claim, records(), Some((&ka, &a)))
        .await
        .expect("first commit");
    // ...and its replay fails `if_absent`, yet the records are exactly what it wrote.
    let replay = commit_task_records(&store, &claim, records(), Some((&ka, &a)))
        .await
        .expect("a replay of a landed commit is that commit");
    assert_eq!(replay, first, "the revision of the records as written");

    // Someone else's record under the same key is a real conflict.
    let mut other = task("a");
    other.version = 2;
    store
        .commit(Write::new().put_json(&ka, &other), Some(&claim))
        .await
        .expect("change a");
    let err = commit_task_records(&store, &claim, records(), Some((&ka, &a)))
        .await
        .expect_err("records that differ are a conflict");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    cancel.cancel();
}

//! The store against real etcd members: typed access, fenced writes, watch caches, election.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use capstan_store::{
    Cache, Candidate, Change, Claim, Leadership, Store, StoreConfig, StoreError, Write, campaign,
    json_decoder,
};
use capstan_testing::EtcdCluster;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const TTL: i64 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    n: u32,
}

async fn store(endpoints: Vec<String>) -> Store {
    Store::connect(&StoreConfig::new(endpoints, "/capstan"))
        .await
        .expect("connect to etcd")
}

fn candidate(id: &str) -> Candidate {
    Candidate {
        election: "/capstan/elections/test".into(),
        id: id.into(),
        ttl_secs: TTL,
    }
}

async fn next_changes(rx: &mut UnboundedReceiver<Change>, n: usize) -> Vec<Change> {
    let mut out = Vec::new();
    while out.len() < n {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(c)) => out.push(c),
            other => panic!("expected {n} changes, got {out:?} then {other:?}"),
        }
    }
    out
}

async fn leader_within(l: &mut Leadership, d: Duration) -> Arc<Claim> {
    timeout(d, l.acquired())
        .await
        .unwrap_or_else(|_| panic!("no leadership within {d:?}"))
        .expect("leadership channel open")
}

#[tokio::test]
async fn typed_reads_writes_and_optimistic_concurrency() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let key = s.keys().cluster("default");

    assert!(s.get_json::<Doc>(&key).await.expect("get").is_none());
    let rev = s
        .commit(
            Write::new().put_json(&key, &Doc { n: 1 }).if_absent(&key),
            None,
        )
        .await
        .expect("create");
    let got = s
        .get_json::<Doc>(&key)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.value, Doc { n: 1 });
    assert_eq!(got.mod_revision, rev);

    // Creating again fails: the key exists.
    let err = s
        .commit(
            Write::new().put_json(&key, &Doc { n: 9 }).if_absent(&key),
            None,
        )
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    // A write based on the revision we read succeeds once; the stale second one conflicts.
    s.commit(
        Write::new()
            .put_json(&key, &Doc { n: 2 })
            .if_unchanged(&key, rev),
        None,
    )
    .await
    .expect("update at read revision");
    let err = s
        .commit(
            Write::new()
                .put_json(&key, &Doc { n: 3 })
                .if_unchanged(&key, rev),
            None,
        )
        .await
        .expect_err("stale revision");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        s.get_json::<Doc>(&key)
            .await
            .expect("get")
            .expect("present")
            .value,
        Doc { n: 2 }
    );

    // Bad JSON is a decode error naming the key, not a panic.
    s.put(&key, b"{not json".to_vec()).await.expect("put raw");
    let err = s.get_json::<Doc>(&key).await.expect_err("bad json");
    assert!(
        err.to_string().starts_with("/capstan/clusters/default:"),
        "{err}"
    );
}

#[tokio::test]
async fn listing_pages_through_more_keys_than_one_page() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let total = 2_345u32;
    for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
        let mut w = Write::new();
        for i in chunk {
            w = w.put_json(
                &s.keys().task("default", &format!("t{i:05}")),
                &Doc { n: *i },
            );
        }
        s.commit(w, None).await.expect("batch");
    }
    s.put_json(&s.keys().task("other", "x"), &Doc { n: 0 })
        .await
        .expect("other cluster");
    let listing = s.list("/capstan/tasks/default/").await.expect("list");
    assert_eq!(listing.kvs.len(), total as usize);
    let ns: Vec<u32> = listing
        .kvs
        .iter()
        .map(|kv| kv.json::<Doc>().expect("decodes").n)
        .collect();
    assert_eq!(ns, (0..total).collect::<Vec<_>>());
    assert!(
        listing.revision
            >= listing
                .kvs
                .iter()
                .map(|k| k.mod_revision)
                .max()
                .unwrap_or(0)
    );
}

#[tokio::test]
async fn watch_cache_sees_every_put_and_delete_in_order() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let k = |n: &str| s.keys().task("default", n);
    let before = s.put_json(&k("a"), &Doc { n: 0 }).await.expect("seed");

    let cancel = CancellationToken::new();
    let (cache, _task) = Cache::<Doc>::spawn(
        s.clone(),
        "/capstan/tasks/".into(),
        json_decoder(),
        Duration::from_secs(300),
        cancel.clone(),
    );
    let mut rx = cache.subscribe();
    cache.ready().await;
    assert_eq!(cache.len(), 1);
    assert!(cache.revision() >= before);
    // The initial list reports what it found.
    assert_eq!(
        next_changes(&mut rx, 1).await,
        vec![Change::Put {
            key: k("a"),
            revision: before
        }]
    );

    let mut expected = Vec::new();
    let r = s.put_json(&k("b"), &Doc { n: 1 }).await.expect("put b");
    expected.push(Change::Put {
        key: k("b"),
        revision: r,
    });
    let r = s.put_json(&k("a"), &Doc { n: 2 }).await.expect("update a");
    expected.push(Change::Put {
        key: k("a"),
        revision: r,
    });
    let r = s.delete(&k("b")).await.expect("delete b");
    expected.push(Change::Delete {
        key: k("b"),
        revision: r,
    });
    let r = s
        .commit(
            Write::new()
                .put_json(&k("c"), &Doc { n: 3 })
                .put_json(&k("d"), &Doc { n: 4 })
                .delete(&k("a")),
            None,
        )
        .await
        .expect("txn");
    expected.push(Change::Put {
        key: k("c"),
        revision: r,
    });
    expected.push(Change::Put {
        key: k("d"),
        revision: r,
    });
    expected.push(Change::Delete {
        key: k("a"),
        revision: r,
    });
    // A malformed document is cached with its error, not dropped and not fatal.
    let r = s.put(&k("e"), b"{oops".to_vec()).await.expect("bad doc");
    expected.push(Change::Put {
        key: k("e"),
        revision: r,
    });

    assert_eq!(next_changes(&mut rx, expected.len()).await, expected);
    cache.wait_revision(r).await;
    assert_eq!(cache.keys(), vec![k("c"), k("d"), k("e")]);
    assert_eq!(cache.get(&k("d")).expect("d").value, Ok(Doc { n: 4 }));
    let bad = cache.get(&k("e")).expect("e");
    assert!(
        bad.value
            .as_ref()
            .is_err_and(|e| e.contains("key must be a string")),
        "{:?}",
        bad.value
    );
    cancel.cancel();
}

#[tokio::test]
async fn watch_cache_relists_after_compaction_while_disconnected() {
    let mut etcd = EtcdCluster::three().await.expect("etcd");
    // The cache talks to member 0 only; the writer to members 1 and 2.
    let cached = store(vec![etcd.endpoint(0)]).await;
    let writer = store(vec![etcd.endpoint(1), etcd.endpoint(2)]).await;
    let k = |n: &str| writer.keys().task("default", n);
    writer
        .put_json(&k("gone"), &Doc { n: 1 })
        .await
        .expect("seed");

    let cancel = CancellationToken::new();
    let (cache, _task) = Cache::<Doc>::spawn(
        cached,
        "/capstan/tasks/".into(),
        json_decoder(),
        Duration::from_secs(300),
        cancel.clone(),
    );
    cache.ready().await;
    let mut rx = cache.subscribe();
    assert_eq!(cache.keys(), vec![k("gone")]);
    let lists_before = cache.stats().lists;

    etcd.kill(0);
    writer
        .put_json(&k("new"), &Doc { n: 2 })
        .await
        .expect("put while disconnected");
    writer
        .delete(&k("gone"))
        .await
        .expect("delete while disconnected");
    let last = writer
        .put_json(&k("newer"), &Doc { n: 3 })
        .await
        .expect("put");
    writer.compact(last).await.expect("compact");
    etcd.restart(0).await.expect("member 0 back");

    let mut changes = next_changes(&mut rx, 3).await;
    changes.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(
        changes,
        vec![
            Change::Delete {
                key: k("gone"),
                revision: last
            },
            Change::Put {
                key: k("new"),
                revision: last - 2
            },
            Change::Put {
                key: k("newer"),
                revision: last
            },
        ]
    );
    assert_eq!(cache.keys(), vec![k("new"), k("newer")]);
    let stats = cache.stats();
    assert!(stats.compactions >= 1, "{stats:?}");
    assert!(stats.lists > lists_before, "{stats:?}");
    cancel.cancel();
}

#[tokio::test]
async fn revoking_the_leaders_lease_hands_over_and_fences_the_old_leader() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let cancel = CancellationToken::new();
    let (mut a, _ha) = campaign(s.clone(), candidate("a"), cancel.clone());
    let claim_a = leader_within(&mut a, Duration::from_secs(5)).await;
    let (mut b, _hb) = campaign(s.clone(), candidate("b"), cancel.clone());

    let key = s.keys().service("default", "web");
    s.commit(Write::new().put_json(&key, &Doc { n: 1 }), Some(&claim_a))
        .await
        .expect("leader writes");
    assert!(b.current().is_none(), "only one leader");

    let mut client = s.client();
    client.lease_revoke(claim_a.lease).await.expect("revoke");
    let claim_b = leader_within(&mut b, Duration::from_secs(TTL as u64 + 1)).await;
    assert!(claim_b.fencing_token() > claim_a.fencing_token());
    timeout(Duration::from_secs(TTL as u64), a.lost(&claim_a))
        .await
        .expect("a steps down");

    let err = s
        .commit(Write::new().put_json(&key, &Doc { n: 2 }), Some(&claim_a))
        .await
        .expect_err("deposed leader is fenced");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    s.commit(Write::new().put_json(&key, &Doc { n: 3 }), Some(&claim_b))
        .await
        .expect("new leader writes");
    assert_eq!(
        s.get_json::<Doc>(&key)
            .await
            .expect("get")
            .expect("some")
            .value,
        Doc { n: 3 }
    );
    cancel.cancel();
}

/// Child half of the process-kill test: campaigns and prints its claim, then waits to be killed.
#[tokio::test]
#[ignore = "run as a child process by killing_the_leader_process_hands_over_within_ttl"]
async fn child_campaigner() {
    let Ok(endpoints) = std::env::var("CAPSTAN_CHILD_ENDPOINTS") else {
        return;
    };
    let s = store(endpoints.split(',').map(str::to_string).collect()).await;
    let (mut l, _h) = campaign(s, candidate("child"), CancellationToken::new());
    let claim = l.acquired().await.expect("leads");
    println!("LEADER {} {} {}", claim.key, claim.revision, claim.lease);
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn killing_the_leader_process_hands_over_within_ttl() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_campaigner", "--ignored", "--nocapture"])
        .env("CAPSTAN_CHILD_ENDPOINTS", etcd.endpoints().join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("LEADER "))
    })
    .await
    .expect("reader")
    .expect("child became leader");
    let parts: Vec<&str> = line.split_whitespace().collect();
    let child_claim = Claim {
        election: "/capstan/elections/test".into(),
        holder: "child".into(),
        key: parts[1].into(),
        revision: parts[2].parse().expect("revision"),
        lease: parts[3].parse().expect("lease"),
    };

    let cancel = CancellationToken::new();
    let (mut b, _hb) = campaign(s.clone(), candidate("b"), cancel.clone());
    // b is queued behind the child.
    assert!(
        timeout(Duration::from_millis(500), b.acquired())
            .await
            .is_err()
    );

    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let claim_b = leader_within(&mut b, Duration::from_secs(TTL as u64 + 1)).await;
    assert!(claim_b.fencing_token() > child_claim.fencing_token());
    let err = s
        .commit(
            Write::new().put(&s.keys().cluster("x"), b"{}".to_vec()),
            Some(&child_claim),
        )
        .await
        .expect_err("dead leader is fenced");
    assert!(matches!(err, StoreError::NotLeader { .. }), "{err}");
    cancel.cancel();
}

#[tokio::test]
async fn three_members_with_one_stopped_keep_store_and_election_working() {
    let mut etcd = EtcdCluster::three().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let key = s.keys().service("default", "web");
    s.put_json(&key, &Doc { n: 1 })
        .await
        .expect("put with 3 members");

    etcd.kill(0);
    for n in 2..12 {
        s.put_json(&key, &Doc { n })
            .await
            .expect("put with 2 members");
        assert_eq!(
            s.get_json::<Doc>(&key)
                .await
                .expect("get")
                .expect("some")
                .value,
            Doc { n }
        );
    }
    let cancel = CancellationToken::new();
    let (mut a, _h) = campaign(s.clone(), candidate("a"), cancel.clone());
    let claim = leader_within(&mut a, Duration::from_secs(10)).await;
    s.commit(Write::new().put_json(&key, &Doc { n: 100 }), Some(&claim))
        .await
        .expect("fenced write with 2 members");
    let listing = s
        .list("/capstan/services/")
        .await
        .expect("list with 2 members");
    assert_eq!(listing.kvs.len(), 1);

    // Leadership survives the member coming back.
    etcd.restart(0).await.expect("restart");
    s.commit(Write::new().put_json(&key, &Doc { n: 101 }), Some(&claim))
        .await
        .expect("fenced write after restart");
    assert_eq!(a.current().as_deref(), Some(&*claim));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_json_retries_a_lost_compare_and_status_is_written_only_when_it_changed() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(etcd.endpoints()).await;
    let key = "/capstan/test/counter";
    assert_eq!(
        s.update_json(key, None, |d: &mut Doc| {
            d.n += 1;
            true
        })
        .await
        .expect("absent key"),
        None
    );
    s.put_json(key, &Doc { n: 1 }).await.expect("put");
    // Another writer gets in between the first read and its commit: the update reads again.
    let mut attempts = 0;
    let other = s.clone();
    let done = s
        .update_json(key, None, |d: &mut Doc| {
            attempts += 1;
            if attempts == 1 {
                let other = other.clone();
                // Runs to completion before this attempt commits (block_in_place keeps the
                // runtime's other tasks going).
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(other.put_json(key, &Doc { n: 10 }))
                        .expect("concurrent put");
                });
            }
            d.n += 1;
            true
        })
        .await
        .expect("update")
        .expect("present");
    assert_eq!(attempts, 2, "the lost compare was retried");
    assert_eq!(
        done,
        Doc { n: 11 },
        "the retry started from the other writer's value"
    );
    let stored: Doc = s.get_json(key).await.expect("get").expect("present").value;
    assert_eq!(stored, Doc { n: 11 });

    // Status documents: equal but for the stamp is not written again.
    let status_key = "/capstan/status/capacityproviders/cp";
    let doc = capstan_core::capacity::CapacityProviderStatusDoc {
        desired_capacity: 2,
        ..Default::default()
    };
    assert!(
        s.put_status_if_changed(status_key, None, doc.clone(), 100.0, None)
            .await
            .expect("first write")
    );
    let written: capstan_core::capacity::CapacityProviderStatusDoc = s
        .get_json(status_key)
        .await
        .expect("get")
        .expect("present")
        .value;
    assert_eq!(written.updated_at, Some(100.0));
    let rev = s.revision().await.expect("revision");
    assert!(
        !s.put_status_if_changed(status_key, Some(&written), doc.clone(), 200.0, None)
            .await
            .expect("unchanged")
    );
    assert_eq!(
        s.revision().await.expect("revision"),
        rev,
        "nothing written"
    );
    let moved = capstan_core::capacity::CapacityProviderStatusDoc {
        desired_capacity: 3,
        ..doc
    };
    assert!(
        s.put_status_if_changed(status_key, Some(&written), moved, 300.0, None)
            .await
            .expect("changed")
    );
}

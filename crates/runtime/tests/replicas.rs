//! Two replicas of a small controller against real etcd: only the leader reconciles, and the
//! follower takes over at once when the leader shuts down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use capstan_core::keys::Family;
use capstan_runtime::{Action, CommonArgs, Controller, ControllerConfig, Runtime};
use capstan_store::{Cache, Claim, Store, StoreError, Write, json_decoder};
use capstan_testing::EtcdCluster;
use clap::Parser;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Mirror {
    by: String,
}

struct Replica {
    runtime: Runtime,
    reconciles: Arc<AtomicUsize>,
}

struct Ctx {
    store: Store,
    clusters: Cache<serde_json::Value>,
    id: String,
    reconciles: Arc<AtomicUsize>,
}

fn mirror_key(name: &str) -> String {
    format!("/capstan-test/mirror/{name}")
}

async fn reconcile(name: String, claim: Arc<Claim>, ctx: Arc<Ctx>) -> Result<Action, StoreError> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let key = ctx.store.keys().cluster(&name);
    let w = if ctx.clusters.get(&key).is_some() {
        Write::new().put_json(&mirror_key(&name), &Mirror { by: ctx.id.clone() })
    } else {
        Write::new().delete(&mirror_key(&name))
    };
    ctx.store.commit(w, Some(&claim)).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn replica(endpoints: &[String], id: &str) -> Replica {
    let args = Args::parse_from([
        "test",
        "--etcd-endpoints",
        &endpoints.join(","),
        "--election-ttl",
        "2",
        "--id",
        id,
    ]);
    let runtime = Runtime::start("mirror", &args.common)
        .await
        .expect("runtime");
    let clusters = runtime.cache(Family::Clusters, json_decoder());
    let reconciles = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new(Ctx {
        store: runtime.store.clone(),
        clusters: clusters.clone(),
        id: id.to_string(),
        reconciles: reconciles.clone(),
    });
    let keys = runtime.store.keys().clone();
    let controller =
        Controller::new(ControllerConfig::new("mirror")).watches(&clusters, move |k| {
            keys.parse(k)
                .map(|p| p.parts[0].clone())
                .into_iter()
                .collect()
        });
    tokio::spawn(controller.run(
        runtime.leadership.clone(),
        ctx,
        |k, c, x| reconcile(k, c, x).boxed(),
        |_k, _e, _c| Action::Backoff,
        runtime.cancel.clone(),
    ));
    Replica {
        runtime,
        reconciles,
    }
}

async fn mirrored_by(store: &Store, name: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(m)) = store.get_json::<Mirror>(&mirror_key(name)).await
            && m.value.by == id
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not mirrored by {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn only_the_leader_reconciles_and_the_follower_takes_over_at_once() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let a = replica(&etcd.endpoints(), "a").await;
    let mut la = a.runtime.leadership.clone();
    tokio::time::timeout(Duration::from_secs(5), la.acquired())
        .await
        .expect("a leads");
    let b = replica(&etcd.endpoints(), "b").await;
    let store = a.runtime.store.clone();

    for name in ["one", "two"] {
        store
            .put(
                &store.keys().cluster(name),
                format!(r#"{{"clusterName":"{name}"}}"#).into_bytes(),
            )
            .await
            .expect("put cluster");
    }
    mirrored_by(&store, "one", "a").await;
    mirrored_by(&store, "two", "a").await;
    assert_eq!(
        b.reconciles.load(Ordering::SeqCst),
        0,
        "a follower reconciled"
    );
    assert!(a.reconciles.load(Ordering::SeqCst) >= 2);

    let ready = http_get(b.runtime.admin_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = http_get(a.runtime.admin_addr, "/metrics").await;
    assert!(metrics.contains("capstan_reconcile_total"), "{metrics}");

    // Graceful shutdown resigns: b leads without waiting for the lease TTL.
    let started = tokio::time::Instant::now();
    a.runtime.shutdown().await;
    let mut lb = b.runtime.leadership.clone();
    tokio::time::timeout(Duration::from_secs(1), lb.acquired())
        .await
        .expect("b leads at once after a resigns");
    assert!(started.elapsed() < Duration::from_secs(2));

    // b's first sweep takes over every key, and it acts on new changes.
    mirrored_by(&store, "one", "b").await;
    store
        .put(
            &store.keys().cluster("three"),
            br#"{"clusterName":"three"}"#.to_vec(),
        )
        .await
        .expect("put");
    mirrored_by(&store, "three", "b").await;
    store
        .delete(&store.keys().cluster("two"))
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get(&mirror_key("two")).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mirror of a deleted cluster kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.runtime.shutdown().await;
}

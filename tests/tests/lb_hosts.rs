//! Several load-balancer hosts, and a data plane that outlives the control plane, end to end:
//! two registrar replicas each run their own HAProxy on their own address (127.0.0.2 and
//! 127.0.0.3 stand for two hosts), with real etcd, agents, scheduler and deployer. Every host
//! serves every listener; losing the registrar leader, a whole LB host, or etcd for a while
//! fails no request sent to a surviving host.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use capstan_core::task::TaskStatus;
use capstan_e2e::web::{body, counting_client, kill_haproxy, task_definition};
use capstan_e2e::*;
use capstan_store::Store;
use capstan_testing::EtcdCluster;
use serde_json::json;

/// The two LB hosts' addresses.
const HOSTS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

struct Plane {
    etcd: EtcdCluster,
    endpoints: Vec<String>,
    dir: tempfile::TempDir,
    store: Store,
    procs: Vec<Proc>,
    /// Registrar replica per LB host (`None` once killed).
    registrars: Vec<Option<Proc>>,
    port: u16,
}

impl Drop for Plane {
    fn drop(&mut self) {
        for p in self
            .procs
            .iter_mut()
            .chain(self.registrars.iter_mut().flatten())
        {
            p.kill();
        }
        kill_task_processes(self.dir.path());
        for i in 0..HOSTS.len() {
            kill_haproxy(&self.haproxy_dir(i));
        }
    }
}

impl Plane {
    fn haproxy_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("haproxy-{i}"))
    }

    /// Starts (or restarts) LB host `i`'s registrar, `lb-<i>`, on its own HAProxy directory.
    fn start_registrar(&mut self, i: usize) {
        let hp = self.haproxy_dir(i).display().to_string();
        let id = format!("lb-{i}");
        let args = ["--haproxy-dir", &hp, "--listen-address", HOSTS[i]];
        let p = controller("registrar", &self.endpoints, self.dir.path(), &id, &args);
        self.registrars[i] = Some(p);
    }

    /// Sets the service's desired count.
    async fn scale(&self, n: u32) {
        put_doc(
            &self.store,
            &self.store.keys().service("default", "web"),
            &json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": n,
                "loadBalancers": [{"targetGroupArn": "web-tg", "containerName": "app",
                    "containerPort": 8080}]}),
        )
        .await;
    }

    /// Waits until LB host `host` spreads requests over exactly `n` tasks.
    async fn serves(&self, host: &'static str, n: usize) -> BTreeSet<String> {
        let port = self.port;
        eventually(
            Duration::from_secs(40),
            &format!("{host} serves {n} tasks"),
            || async move {
                let seen = served(host, port, 8 * n).await;
                (seen.len() == n).then_some(seen)
            },
        )
        .await
    }
}

/// The task ids that answered `requests` requests through `host:port`.
async fn served(host: &str, port: u16, requests: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..requests {
        if let Some(b) = body(host, port).await
            && let Some((_, id)) = b.split_once(' ')
        {
            seen.insert(id.to_string());
        }
    }
    seen
}

/// Agents, scheduler, deployer and two LB hosts (lb-0 leading), serving `web` (2 tasks)
/// behind listener `web` on both hosts.
async fn plane() -> Plane {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let eps = etcd.endpoints();
    let dir = test_dir();
    let (procs, store) = workers(&eps, dir.path()).await;
    let mut p = Plane {
        etcd,
        endpoints: eps,
        dir,
        store,
        procs,
        registrars: vec![None, None],
        port: capstan_testing::free_port().expect("port"),
    };
    let s = p.store.clone();
    put_doc(
        &s,
        &s.keys().target_group("web-tg"),
        &json!({"protocol": "HTTP", "port": 80,
            "healthCheck": {"path": "/", "intervalSeconds": 5, "timeoutSeconds": 2}}),
    )
    .await;
    put_doc(
        &s,
        &s.keys().listener("web"),
        &json!({"port": p.port, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]}),
    )
    .await;
    task_definition(&s, 1).await;
    p.scale(2).await;
    p.start_registrar(0);
    eventually(Duration::from_secs(20), "lb-0 leads", || {
        let s = s.clone();
        async move { (s.leader("registrar").await.ok().flatten()? == "lb-0").then_some(()) }
    })
    .await;
    p.start_registrar(1);
    p
}

/// Counting clients, one per LB host.
/// One host's client: its stop flag and (served, failed) counts.
type Client = (&'static str, Arc<AtomicBool>, Arc<(AtomicU32, AtomicU32)>);

struct Traffic(Vec<Client>);

impl Traffic {
    fn start(port: u16, hosts: &[&'static str]) -> Self {
        Self(
            hosts
                .iter()
                .map(|h| {
                    let (stop, counts) = counting_client(h, port);
                    (*h, stop, counts)
                })
                .collect(),
        )
    }

    /// Stops the clients; (host, served, failed) each, also printed for the record.
    fn stop(self, what: &str) -> Vec<(&'static str, u32, u32)> {
        self.0
            .into_iter()
            .map(|(h, stop, c)| {
                stop.store(true, Ordering::SeqCst);
                let (ok, bad) = (c.0.load(Ordering::SeqCst), c.1.load(Ordering::SeqCst));
                eprintln!("{what}: {h} served {ok} requests, {bad} failed");
                (h, ok, bad)
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lb_host_serves_and_losing_the_leader_or_a_host_fails_no_request() {
    let mut p = plane().await;
    let s = p.store.clone();
    // The follower serves what the leader decided, though it checks no health itself.
    let two = p.serves(HOSTS[0], 2).await;
    assert_eq!(p.serves(HOSTS[1], 2).await, two);

    // The registrar leader dies (its HAProxy lives on): no request fails on either host, the
    // other replica leads, and a scale-out is served once a supervisor restarts the replica.
    let traffic = Traffic::start(p.port, &HOSTS);
    if let Some(mut r) = p.registrars[0].take() {
        r.kill();
    }
    eventually(Duration::from_secs(20), "lb-1 leads", || async {
        (s.leader("registrar").await.ok().flatten()? == "lb-1").then_some(())
    })
    .await;
    p.scale(3).await;
    let three = p.serves(HOSTS[1], 3).await;
    p.start_registrar(0);
    assert_eq!(p.serves(HOSTS[0], 3).await, three);
    for (h, ok, bad) in traffic.stop("registrar leader killed") {
        assert_eq!(bad, 0, "{h}: {bad} of {} requests failed", ok + bad);
        assert!(ok > 0, "{h} served nothing");
    }

    // A whole LB host is lost (the leader, lb-1, and its HAProxy): the other keeps serving
    // with no failed request, leads, and drains what a scale-in removes.
    let traffic = Traffic::start(p.port, &HOSTS[..1]);
    if let Some(mut r) = p.registrars[1].take() {
        r.kill();
    }
    kill_haproxy(&p.haproxy_dir(1));
    eventually(Duration::from_secs(20), "lb-0 leads", || async {
        (s.leader("registrar").await.ok().flatten()? == "lb-0").then_some(())
    })
    .await;
    p.scale(2).await;
    let left = p.serves(HOSTS[0], 2).await;
    assert!(left.is_subset(&three), "{left:?} ⊄ {three:?}");
    for (h, ok, bad) in traffic.stop("LB host lb-1 lost") {
        assert_eq!(bad, 0, "{h}: {bad} of {} requests failed", ok + bad);
        assert!(ok > 0, "{h} served nothing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn while_etcd_hangs_both_lb_hosts_keep_serving_and_a_change_after_it_goes_through() {
    let p = plane().await;
    let s = p.store.clone();
    let before = p.serves(HOSTS[0], 2).await;
    assert_eq!(p.serves(HOSTS[1], 2).await, before);
    let traffic = Traffic::start(p.port, &HOSTS);
    // etcd hangs for five election TTLs (and agent lease TTLs): every controller loses its
    // leadership, nothing can be read or written.
    let pid = nix::unistd::Pid::from_raw(p.etcd.pid(0).expect("etcd pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP etcd");
    let hang = Duration::from_secs(10);
    let counts: Vec<u32> = traffic
        .0
        .iter()
        .map(|(_, _, c)| c.0.load(Ordering::SeqCst))
        .collect();
    tokio::time::sleep(hang).await;
    for ((h, _, c), at_start) in traffic.0.iter().zip(counts) {
        let during = c.0.load(Ordering::SeqCst) - at_start;
        eprintln!("etcd hung {hang:?}: {h} served {during} requests meanwhile");
        assert!(during > 0, "{h} served nothing while etcd hung");
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT etcd");

    // Controllers resume without a restart: a scale-out is served on both hosts.
    p.scale(3).await;
    let three = p.serves(HOSTS[0], 3).await;
    assert_eq!(p.serves(HOSTS[1], 3).await, three);
    for (h, ok, bad) in traffic.stop("etcd hung") {
        assert_eq!(bad, 0, "{h}: {bad} of {} requests failed", ok + bad);
    }
    // The tasks that served before the hang still run: nothing was torn down.
    assert!(before.is_subset(&three), "{before:?} ⊄ {three:?}");
    let all = tasks(&s, "default").await;
    for id in &before {
        let t = all.iter().find(|t| t.id() == id).expect("task record");
        assert_eq!(t.last_status, TaskStatus::Running, "{id}: {t:?}");
    }
}

//! The HA topology of `deploy/compose` on this machine's Docker engine: three etcd members, two
//! APIs, two replicas of each controller, two LB hosts and three agent hosts, each its own
//! container with its own address, mutual TLS on every hop. Needs the images
//! (`deploy/images/build.sh`, which `scripts/test.sh` runs first), docker and docker-compose;
//! with `CI=true` a missing tool fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use capstan_core::deployment::RolloutState;
use capstan_e2e::web::{body, counting_client};
use capstan_e2e::{
    binary, deployments_of, eventually, run_task_id, running, tasks, tools_or_not_in_ci,
};
use capstan_store::{EtcdTls, Store, StoreConfig};

/// The compose project the test runs as (apart from a user's `capstan`).
const PROJECT: &str = "capstan-e2e";
/// The first three octets of the project's /24: not the default's (10.213.0), so a user's
/// deployment on this engine does not collide with the test's.
const NET: &str = "10.214.0";
/// The example's listener port.
const PORT: u16 = 8000;

/// The address of the host whose last octet is `octet` (docker-compose.yml).
fn at(octet: u8) -> String {
    format!("{NET}.{octet}")
}

/// The LB hosts' addresses.
fn lb(i: usize) -> String {
    at(if i == 0 { 41 } else { 42 })
}

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// The container of compose service `service`.
fn container(service: &str) -> String {
    format!("{PROJECT}_{service}_1")
}

/// One topology at a time: its addresses and names are fixed.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The topology, torn down (volumes too) on drop.
struct Topology;

impl Topology {
    fn up() -> Self {
        // Tear down what an interrupted run left, then bring it up.
        let down = Topology;
        drop(down);
        run(Command::new("bash")
            .arg(compose_dir().join("up.sh"))
            .env("COMPOSE_PROJECT_NAME", PROJECT)
            .env("CAPSTAN_NET", NET)
            .env("CAPSTAN_SKIP_CARGO", "1"));
        Topology
    }

    /// The CLI with the operator's certificate against api-2 (any API will do); it must
    /// succeed.
    fn capstan(&self, args: &[&str]) -> Output {
        run(&mut self.cli(args))
    }

    /// The CLI command with the operator's certificate against api-2.
    fn cli(&self, args: &[&str]) -> Command {
        let op = compose_dir().join(".operator");
        let f = |n: &str| op.join(n).display().to_string();
        let mut c = Command::new(binary("capstan"));
        c.args(["--endpoint", &format!("https://{}:7400", at(22))])
            .args(["--tls-ca", &f("ca.pem")])
            .args([
                "--tls-cert",
                &f("operator.pem"),
                "--tls-key",
                &f("operator.key"),
            ])
            .args(args);
        c
    }

    /// A store client of the topology's etcd, over mutual TLS with the operator's certificate.
    async fn store(&self) -> Store {
        let op = compose_dir().join(".operator");
        let mut cfg = StoreConfig::new(
            (11..=13)
                .map(|i| format!("https://{}:2379", at(i)))
                .collect(),
            "/capstan",
        );
        cfg.tls = Some(EtcdTls {
            ca: Some(op.join("ca.pem")),
            cert: Some(op.join("operator.pem")),
            key: Some(op.join("operator.key")),
        });
        Store::connect(&cfg).await.expect("etcd over mutual TLS")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A failing test shows what the hosts logged last: CI keeps nothing else.
        if std::thread::panicking() {
            let logs = Command::new("docker-compose")
                .args(["logs", "--no-color", "--tail=25"])
                .current_dir(compose_dir())
                .env("COMPOSE_PROJECT_NAME", PROJECT)
                .env("CAPSTAN_NET", NET)
                .output();
            if let Ok(l) = logs {
                eprintln!(
                    "---- docker-compose logs\n{}",
                    String::from_utf8_lossy(&l.stdout)
                );
            }
        }
        let _ = Command::new("bash")
            .arg(compose_dir().join("down.sh"))
            .env("COMPOSE_PROJECT_NAME", PROJECT)
            .env("CAPSTAN_NET", NET)
            .output();
    }
}

/// What answered `n` requests through LB host `host`: (task id, agent host) pairs.
async fn served(host: &str, n: usize) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        // "hello from <task> on <agent host>, revision <r>"
        if let Some(b) = body(host, PORT).await {
            let words: Vec<&str> = b.split_whitespace().collect();
            if let (Some(t), Some(h)) = (words.get(2), words.get(4)) {
                seen.insert((t.to_string(), h.trim_end_matches(',').to_string()));
            }
        }
    }
    seen
}

/// Whether to run: docker and docker-compose are here (see `tools_or_not_in_ci`).
fn can_run() -> bool {
    tools_or_not_in_ci(&[&["docker", "version"], &["docker-compose", "version"]])
}

/// The topology up, one at a time, and a store client of its etcd.
async fn start() -> (tokio::sync::MutexGuard<'static, ()>, Topology, Store) {
    let one = ONE_AT_A_TIME.lock().await;
    let t = Topology::up();
    let s = t.store().await;
    (one, t, s)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ha_topology_serves_on_both_lb_hosts_through_host_leader_and_etcd_faults() {
    if !can_run() {
        return;
    }
    let (_one, t, s) = start().await;
    let s = &s;

    // 3 tasks, one on each agent host, served through both LB hosts.
    let three = eventually(
        Duration::from_secs(180),
        "3 tasks on 3 hosts through lb-1",
        || async {
            let s = served(&lb(0), 30).await;
            let hosts: BTreeSet<&String> = s.iter().map(|(_, h)| h).collect();
            (s.len() == 3 && hosts.len() == 3).then_some(s)
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the same 3 through lb-2", || {
        let three = three.clone();
        async move { (served(&lb(1), 30).await == three).then_some(()) }
    })
    .await;

    // The registrar leader's whole LB host dies: the other host fails no request.
    let first = eventually(Duration::from_secs(20), "a registrar leader", || async {
        s.leader("registrar").await.ok().flatten()
    })
    .await;
    let (dead, alive) = if first == "lb-1" {
        ("lb-1", lb(1))
    } else {
        ("lb-2", lb(0))
    };
    let (stop, counts) = counting_client(&alive, PORT);
    let killed_at = Instant::now();
    docker(&["kill", &container(dead)]);
    let standby = eventually(
        Duration::from_secs(30),
        "the other registrar leads",
        || async {
            s.leader("registrar")
                .await
                .ok()
                .flatten()
                .filter(|l| l != dead)
        },
    )
    .await;
    eprintln!(
        "registrar leader {dead} killed: {standby} leads after {:?}",
        killed_at.elapsed()
    );

    // etcd's majority hangs for 20 s: requests keep being served, tasks keep running.
    docker(&["pause", &container("etcd-1"), &container("etcd-2")]);
    let at = counts.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = counts.0.load(Ordering::SeqCst) - at;
    docker(&["unpause", &container("etcd-1"), &container("etcd-2")]);
    assert!(during > 0, "{alive} served nothing while etcd hung");
    eprintln!("etcd majority paused 20 s: {alive} served {during} requests meanwhile");
    // The members elect a leader again before the control plane can decide anything.
    let back = Instant::now();
    eventually(
        Duration::from_secs(60),
        "etcd has a leader again",
        || async {
            s.list(&s.keys().list(capstan_core::keys::Family::Clusters, &[]))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    eprintln!(
        "etcd answered reads again {:?} after the unpause",
        back.elapsed()
    );

    // A rolling deploy after it completes, with no failed request on the surviving host.
    let td = compose_dir().join("web-taskdef.json").display().to_string();
    t.capstan(&["taskdef", "register", "-f", &td]);
    t.capstan(&[
        "deploy",
        "web",
        "--task-definition",
        "web:2",
        "--wait",
        "--timeout",
        "5m",
    ]);
    stop.store(true, Ordering::SeqCst);
    let (ok, bad) = (
        counts.0.load(Ordering::SeqCst),
        counts.1.load(Ordering::SeqCst),
    );
    eprintln!("{alive} during the faults and the deploy: {ok} served, {bad} failed");
    assert_eq!(bad, 0, "{bad} of {} requests failed on {alive}", ok + bad);
    // COMPLETED can come while the old tasks still drain (deregistration delay 5 s), and a
    // draining target may answer until the data plane has its drain: wait for only new ones.
    let (three, alive) = (&three, alive.as_str());
    eventually(
        Duration::from_secs(60),
        "3 new tasks serve on the surviving LB host, none of the old",
        || async move {
            let after = served(alive, 30).await;
            (after.len() == 3 && after.is_disjoint(three)).then_some(after)
        },
    )
    .await;
}

/// Task id → the agent hosts (container instance ids) RUNNING records place it on.
async fn placements(s: &Store) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in running(&tasks(s, "default").await) {
        let ci = t.container_instance_arn.clone().unwrap_or_default();
        m.entry(t.id().to_string()).or_default().insert(ci);
    }
    m
}

/// Whether a call to the API (ListClusters) or an agent (Describe) at `endpoint` is answered.
async fn answers(endpoint: &str, tls: Option<&capstan_proto::tls::TlsFiles>, api: bool) -> bool {
    let Ok(ch) = capstan_proto::tls::connect(endpoint, tls).await else {
        return false;
    };
    if api {
        capstan_proto::api::v1::capstan_client::CapstanClient::new(ch)
            .list_clusters(capstan_proto::api::v1::ListClustersRequest::default())
            .await
            .is_ok()
    } else {
        capstan_proto::agent::v1::agent_client::AgentClient::new(ch)
            .describe(capstan_proto::agent::v1::DescribeRequest {})
            .await
            .is_ok()
    }
}

/// The container instance id of the agent that advertises `address`.
async fn instance_at(s: &Store, address: &str) -> String {
    let prefix = s
        .keys()
        .list(capstan_core::keys::Family::ContainerInstances, &["default"]);
    let l = s.list(&prefix).await.expect("instances");
    l.kvs
        .iter()
        .find(|kv| {
            kv.json::<capstan_core::instance::ContainerInstance>()
                .is_ok_and(|ci| ci.agent_endpoint.contains(address))
        })
        .and_then(|kv| kv.key.rsplit('/').next().map(str::to_string))
        .expect("the agent's instance")
}

/// Task processes (busybox httpd) running on agent host `agent`.
fn task_processes(agent: &str) -> usize {
    let out = docker(&["exec", &container(agent), "ps", "-o", "args"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("busybox httpd"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_member_scheduler_deployer_and_agent_host_faults_and_callers_without_the_ca() {
    if !can_run() {
        return;
    }
    let (_one, t, s) = start().await;
    let s = &s;
    eventually(Duration::from_secs(180), "3 tasks RUNNING", || async {
        (placements(s).await.len() == 3).then_some(())
    })
    .await;
    // A task's logs come from its agent host, the API calling it with its own certificate.
    let one = placements(s).await.into_keys().next().expect("a task");
    t.capstan(&["task", "logs", &one, "--tail", "5"]);

    // Secrets work in this deployment: an API seals one with the key every API and agent host
    // is given, and an agent host opens it for a task's environment.
    let files = tempfile::tempdir().expect("tmp");
    let value = files.path().join("value");
    std::fs::write(&value, "twenty-characters-ok").expect("write");
    t.capstan(&[
        "secret",
        "put",
        "compose/token",
        "--from-file",
        &value.display().to_string(),
    ]);
    let td = files.path().join("td.json");
    let doc = serde_json::json!({"family": "secret-check", "containerDefinitions": [{
        "name": "app", "image": "busybox", "memory": 16, "entryPoint": ["sh", "-c"],
        "command": ["echo token has ${#TOKEN} characters; exec sleep 600"],
        "secrets": [{"name": "TOKEN", "valueFrom": "compose/token"}]}]});
    std::fs::write(&td, doc.to_string()).expect("write");
    t.capstan(&["taskdef", "register", "-f", &td.display().to_string()]);
    let out = t.capstan(&[
        "-o",
        "json",
        "task",
        "run",
        "--task-definition",
        "secret-check",
    ]);
    let id = run_task_id(&String::from_utf8_lossy(&out.stdout));
    eventually(
        Duration::from_secs(60),
        "the secret in the task's environment",
        || {
            let out = t
                .cli(&["task", "logs", &id])
                .output()
                .expect("capstan runs");
            let logs = String::from_utf8_lossy(&out.stdout).into_owned();
            async move { logs.contains("token has 20 characters").then_some(()) }
        },
    )
    .await;
    t.capstan(&["task", "stop", &id]);
    eventually(
        Duration::from_secs(60),
        "the secret's task gone",
        || async { (!placements(s).await.contains_key(&id)).then_some(()) },
    )
    .await;

    // Plain text and certificates from another CA are refused by the API, an agent and etcd.
    let rogue_dir = tempfile::tempdir().expect("tmp");
    let rogue = capstan_pki::Ca::create(rogue_dir.path(), "rogue")
        .and_then(|ca| ca.issue("rogue", &["rogue".into()], 1))
        .expect("rogue certificate");
    let op = compose_dir().join(".operator");
    let rogue_tls = capstan_proto::tls::TlsFiles {
        cert: rogue.cert.clone(),
        key: rogue.key.clone(),
        ca: op.join("ca.pem"),
    };
    for (endpoint, api) in [
        (format!("https://{}:7400", at(21)), true),
        (format!("https://{}:7500", at(51)), false),
    ] {
        let endpoint = endpoint.as_str();
        let plain = endpoint.replace("https://", "http://");
        assert!(
            !answers(&plain, None, api).await,
            "plain text got into {endpoint}"
        );
        assert!(
            !answers(endpoint, Some(&rogue_tls), api).await,
            "another CA got into {endpoint}"
        );
        let mine = capstan_proto::tls::TlsFiles {
            cert: op.join("operator.pem"),
            key: op.join("operator.key"),
            ca: op.join("ca.pem"),
        };
        assert!(
            answers(endpoint, Some(&mine), api).await,
            "the operator is refused by {endpoint}"
        );
    }
    let mut cfg = StoreConfig::new(vec![format!("https://{}:2379", at(11))], "/capstan");
    cfg.tls = Some(EtcdTls {
        ca: Some(op.join("ca.pem")),
        cert: Some(rogue.cert.clone()),
        key: Some(rogue.key.clone()),
    });
    cfg.call_timeout = Duration::from_secs(3);
    let rogue_etcd = match Store::connect(&cfg).await {
        Ok(st) => st.list("/capstan/").await.is_ok(),
        Err(_) => false,
    };
    assert!(!rogue_etcd, "etcd took a certificate from another CA");

    // One etcd member is stopped for what follows, until the agent host is cut off: everything
    // keeps working on the other two.
    docker(&["stop", "--time", "1", &container("etcd-3")]);

    // The scheduler leader is SIGKILLed during a scale-out: exactly the desired count runs, and
    // no task id runs on two hosts.
    let first = eventually(Duration::from_secs(20), "a scheduler leader", || async {
        s.leader("scheduler").await.ok().flatten()
    })
    .await;
    t.capstan(&["service", "update", "web", "--desired-count", "9"]);
    let killed_at = Instant::now();
    docker(&["kill", &container(&first)]);
    let standby = eventually(
        Duration::from_secs(30),
        "the other scheduler leads",
        || async {
            s.leader("scheduler")
                .await
                .ok()
                .flatten()
                .filter(|l| *l != first)
        },
    )
    .await;
    eprintln!(
        "scheduler leader {first} killed mid scale-out: {standby} leads after {:?}",
        killed_at.elapsed()
    );
    let nine = eventually(Duration::from_secs(120), "9 tasks RUNNING", || async {
        let p = placements(s).await;
        (p.len() == 9).then_some(p)
    })
    .await;
    assert!(nine.values().all(|hosts| hosts.len() == 1), "{nine:?}");
    let served = served(&lb(0), 90).await;
    let ids: BTreeSet<&String> = served.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        served.len(),
        "a task id answered from two hosts: {served:?}"
    );

    // The deployer leader is SIGKILLed during a rolling deployment: the standby carries it to
    // COMPLETED, every task on the new revision, never above maximumPercent (200 %: 18 tasks).
    let td = compose_dir().join("web-taskdef.json").display().to_string();
    t.capstan(&["taskdef", "register", "-f", &td]);
    let first = eventually(Duration::from_secs(20), "a deployer leader", || async {
        s.leader("deployer").await.ok().flatten()
    })
    .await;
    t.capstan(&["service", "update", "web", "--task-definition", "web:2"]);
    docker(&["kill", &container(&first)]);
    let killed_at = Instant::now();
    let most = std::sync::atomic::AtomicUsize::new(0);
    let done = eventually(Duration::from_secs(180), "web:2 COMPLETED", || async {
        let live = running(&tasks(s, "default").await).len();
        most.fetch_max(live, Ordering::SeqCst);
        let d = deployments_of(s, "web").await;
        d.iter()
            .find(|d| {
                d.task_definition.ends_with("web:2") && d.rollout_state == RolloutState::Completed
            })
            .map(|_| live)
    })
    .await;
    let most = most.load(Ordering::SeqCst);
    eprintln!(
        "deployer leader {first} killed mid deployment: web:2 COMPLETED after {:?}, at most {most} tasks live",
        killed_at.elapsed()
    );
    assert!(
        most <= 18,
        "{most} tasks live at once, above maximumPercent"
    );
    let on_two: Vec<_> = running(&tasks(s, "default").await)
        .iter()
        .filter(|t| t.task_definition_arn.ends_with("web:2"))
        .map(|t| t.id().to_string())
        .collect();
    assert_eq!((done, on_two.len()), (9, 9), "{on_two:?}");
    docker(&["start", &container("etcd-3")]);

    // An agent host is cut off for longer than the node-loss grace: its tasks are replaced on
    // the others; back on the network, its old tasks are stopped, never left running twice.
    let agent3 = instance_at(s, &at(53)).await;
    let before = task_processes("agent-3");
    assert!(before > 0, "agent-3 runs none of the 9 tasks");
    let network = format!("{PROJECT}_capstan");
    docker(&["network", "disconnect", &network, &container("agent-3")]);
    let cut_at = Instant::now();
    let replaced = eventually(Duration::from_secs(120), "9 RUNNING elsewhere", || async {
        let p = placements(s).await;
        let on_3 = p
            .values()
            .flatten()
            .filter(|ci| ci.ends_with(&agent3))
            .count();
        (p.len() == 9 && on_3 == 0).then_some(p)
    })
    .await;
    eprintln!(
        "agent-3 cut off: its {before} tasks replaced after {:?}",
        cut_at.elapsed()
    );
    docker(&[
        "network",
        "connect",
        "--ip",
        &at(53),
        &network,
        &container("agent-3"),
    ]);
    eventually(
        Duration::from_secs(60),
        "agent-3's old tasks stopped",
        || async { (task_processes("agent-3") == 0).then_some(()) },
    )
    .await;
    assert!(
        replaced.values().all(|hosts| hosts.len() == 1),
        "{replaced:?}"
    );
}

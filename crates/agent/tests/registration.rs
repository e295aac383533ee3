//! The agent's container instance in etcd: documented fields, lease-bound, DRAINING kept, and
//! mutual TLS on its gRPC endpoint.

mod support;

use std::time::Duration;

use capstan_core::instance::{ContainerInstance, InstanceStatus};
use capstan_proto::agent::v1 as pb;
use capstan_proto::tls::TlsFiles;
use capstan_store::{Store, StoreConfig, Write};
use capstan_testing::EtcdCluster;
use support::*;

async fn store(etcd: &EtcdCluster) -> Store {
    Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("store")
}

async fn registration(
    s: &Store,
    id: &str,
    within: Duration,
    pred: impl Fn(&ContainerInstance) -> bool,
) -> ContainerInstance {
    let key = s.keys().container_instance("default", id);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = s.get_json::<ContainerInstance>(&key).await.expect("get")
            && pred(&v.value)
        {
            return v.value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registration of {id} not as expected within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn registration_has_the_documented_fields_and_vanishes_within_the_ttl_after_a_kill() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(&etcd).await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut agent = AgentProc::start(
        &etcd.endpoints(),
        &dir.path().join("agent"),
        &[
            "--attribute",
            "ecs.availability-zone=zone-a",
            "--cpu",
            "2048",
            "--memory",
            "4096",
        ],
    );
    let ci = registration(&s, &agent.instance, Duration::from_secs(10), |_| true).await;
    assert_eq!(ci.id(), agent.instance);
    assert_eq!(ci.agent_endpoint, agent.endpoint);
    assert_eq!(ci.status, InstanceStatus::Active);
    assert!(ci.agent_connected);
    assert_eq!(ci.registered("CPU"), Some(2048));
    assert_eq!(ci.registered("MEMORY"), Some(4096));
    assert!(
        ci.registered_resources
            .iter()
            .any(|r| r.name == "PORTS" && r.string_set_value.contains(&"22".to_string()))
    );
    assert_eq!(ci.attribute("ecs.availability-zone"), Some("zone-a"));
    assert_eq!(ci.attribute("ecs.os-type"), Some("linux"));
    assert!(ci.attribute("ecs.cpu-architecture").is_some());
    assert!(!ci.version_info.agent_version.is_empty());
    assert_eq!(ci.running_tasks_count, 0);

    // Running a task is reflected in the counts and remaining resources.
    let mut c = agent.client().await;
    c.start_task(start_request("t1", 1, sh("app", "exec sleep 600")))
        .await
        .expect("start");
    let ci = registration(&s, &agent.instance, Duration::from_secs(5), |ci| {
        ci.running_tasks_count == 1
    })
    .await;
    let remaining_cpu = ci
        .remaining_resources
        .iter()
        .find(|r| r.name == "CPU")
        .and_then(|r| r.integer_value);
    assert_eq!(remaining_cpu, Some(2048 - 128));

    // The id survives a restart.
    let state = agent.state_dir.clone();
    agent.kill();
    let key = s.keys().container_instance("default", &agent.instance);
    let killed = tokio::time::Instant::now();
    while s.get(&key).await.expect("get").is_some() {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "registration outlived TTL + 1 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = AgentProc::start(&etcd.endpoints(), &state, &[]);
    assert_eq!(again.instance, agent.instance);
    registration(&s, &again.instance, Duration::from_secs(10), |ci| {
        ci.running_tasks_count == 1
    })
    .await;
}

#[tokio::test]
async fn a_draining_status_set_by_others_is_never_overwritten() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(&etcd).await;
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    registration(&s, &agent.instance, Duration::from_secs(10), |_| true).await;

    let key = s.keys().container_instance("default", &agent.instance);
    let kv = s.get(&key).await.expect("get").expect("registered");
    let mut ci: ContainerInstance = kv.json().expect("decodes");
    ci.status = InstanceStatus::Draining;
    // Keep the agent's lease: a user edit with etcdctl would use --ignore-lease.
    s.commit(
        Write::new()
            .put_json_with_lease(&key, &ci, kv.lease)
            .if_unchanged(&key, kv.mod_revision),
        None,
    )
    .await
    .expect("drain");

    // The agent rewrites its registration when its tasks change: the status stays DRAINING.
    let mut c = agent.client().await;
    c.start_task(start_request("t1", 1, sh("app", "exec sleep 600")))
        .await
        .expect("start");
    let ci = registration(&s, &agent.instance, Duration::from_secs(5), |ci| {
        ci.running_tasks_count == 1
    })
    .await;
    assert_eq!(ci.status, InstanceStatus::Draining);
}

struct Pki(capstan_testing::pki::Pki);

impl Pki {
    fn new() -> Self {
        Self(capstan_testing::pki::Pki::new().expect("pki"))
    }

    fn path(&self, f: &str) -> String {
        self.0.path(f)
    }

    fn files(&self, who: &str) -> TlsFiles {
        self.0.files(who)
    }
}

#[tokio::test]
async fn with_tls_only_callers_with_a_ca_signed_certificate_get_in() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new();
    let agent = AgentProc::start(
        &etcd.endpoints(),
        &dir.path().join("agent"),
        &[
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
            "--tls-ca",
            &pki.path("ca.pem"),
        ],
    );
    assert!(agent.endpoint.starts_with("https://"), "{}", agent.endpoint);
    let endpoint = agent.endpoint.replace("127.0.0.1", "localhost");

    // With a CA-signed client certificate: works.
    let mut ok = client(&endpoint, Some(&pki.files("client"))).await;
    ok.describe(pb::DescribeRequest {})
        .await
        .expect("mTLS call");

    // Without a client certificate, with one from another CA, or in plain text: refused.
    let no_cert = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .expect("endpoint")
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(std::fs::read(pki.path("ca.pem")).expect("ca")),
        ))
        .expect("tls");
    let refused = match no_cert.connect().await {
        Ok(ch) => pb::agent_client::AgentClient::new(ch)
            .describe(pb::DescribeRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a caller without a client certificate got in");

    let rogue = TlsFiles {
        ca: pki.files("client").ca,
        ..pki.files("rogue")
    };
    let refused = match capstan_proto::tls::connect(&endpoint, Some(&rogue)).await {
        Ok(ch) => pb::agent_client::AgentClient::new(ch)
            .describe(pb::DescribeRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a certificate from another CA got in");

    let plain = endpoint.replace("https://", "http://");
    let refused = match capstan_proto::tls::connect(&plain, None).await {
        Ok(ch) => pb::agent_client::AgentClient::new(ch)
            .describe(pb::DescribeRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plain-text caller got in");
}

#[tokio::test]
async fn the_agent_registers_again_after_losing_its_lease_or_etcd() {
    let mut etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(&etcd).await;
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    registration(&s, &agent.instance, Duration::from_secs(10), |_| true).await;
    let key = s.keys().container_instance("default", &agent.instance);

    // The lease is revoked (as if it had expired): the key goes, and comes back on a new lease.
    let lease = s.get(&key).await.expect("get").expect("registered").lease;
    s.client().lease_revoke(lease).await.expect("revoke");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(kv) = s.get(&key).await.expect("get")
            && kv.lease != lease
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not registered again after losing its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // etcd goes away for longer than the lease TTL, then comes back: the agent is registered.
    etcd.kill(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.restart(0).await.expect("etcd back");
    let s = store(&etcd).await;
    registration(&s, &agent.instance, Duration::from_secs(15), |ci| {
        ci.agent_connected
    })
    .await;
}

#[tokio::test]
async fn an_agent_listening_everywhere_with_only_loopback_to_advertise_refuses_to_start() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = store(&etcd).await;
    let dir = tempfile::tempdir().expect("tmp");
    // etcd is on loopback, so the route toward it gives 127.0.0.1: controllers elsewhere
    // would dial their own loopback.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan-agent"))
        .args(["--etcd-endpoints", &etcd.endpoints().join(",")])
        .args([
            "--state-dir",
            &dir.path().join("agent").display().to_string(),
        ])
        .args(["--runtime", "process", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run capstan-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains("--advertise HOST:PORT"), "{stderr}");
    let listed = s
        .list(
            &s.keys()
                .list(capstan_core::keys::Family::ContainerInstances, &[]),
        )
        .await
        .expect("list");
    assert!(listed.kvs.is_empty(), "registered: {:?}", listed.kvs);
    // Told where it is reached, it starts and registers that address.
    let agent = AgentProc::start(
        &etcd.endpoints(),
        &dir.path().join("agent"),
        &[
            "--listen",
            "0.0.0.0:0",
            "--advertise",
            "agent-1.example:7000",
        ],
    );
    let ci = registration(&s, &agent.instance, Duration::from_secs(10), |_| true).await;
    assert_eq!(ci.agent_endpoint, "http://agent-1.example:7000");
}

#[tokio::test]
async fn with_tls_an_agent_whose_certificate_does_not_name_its_advertised_host_refuses_to_start() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new();
    let tls = |who: &str| {
        [
            "--tls-cert".to_string(),
            pki.path(&format!("{who}.pem")),
            "--tls-key".to_string(),
            pki.path(&format!("{who}.key")),
            "--tls-ca".to_string(),
            pki.path("ca.pem"),
        ]
    };
    // The server certificate names localhost and 127.0.0.1, not agent-9.example.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan-agent"))
        .args(["--etcd-endpoints", &etcd.endpoints().join(",")])
        .args([
            "--state-dir",
            &dir.path().join("agent").display().to_string(),
        ])
        .args([
            "--runtime",
            "process",
            "--advertise",
            "agent-9.example:7000",
        ])
        .args(tls("server"))
        .output()
        .expect("run capstan-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("not agent-9.example") && stderr.contains("capstan certs issue"),
        "{stderr}"
    );
    // Issued for that host, it starts and registers it.
    pki.0.issue("agent-9", &["agent-9.example"]).expect("issue");
    let args = tls("agent-9");
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--advertise", "agent-9.example:7000"]);
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &extra);
    let s = store(&etcd).await;
    let ci = registration(&s, &agent.instance, Duration::from_secs(10), |_| true).await;
    assert_eq!(ci.agent_endpoint, "https://agent-9.example:7000");
}

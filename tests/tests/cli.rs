//! The `capstan` CLI end to end against `capstan dev`: register, create, `deploy --wait` to
//! COMPLETED, a broken revision that exits non-zero with the circuit breaker's reason, and a
//! clean stop that leaves no process behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{Dev, binary, test_dir};
use serde_json::json;

/// A marker in every task's environment, to find stray task processes.
const MARKER: &str = "capstan-cli-e2e-marker";

fn taskdef(dir: &Path, name: &str, cmd: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let td = json!({
        "family": "hello",
        "containerDefinitions": [{"name": "app", "image": "x", "cpu": 64, "memory": 32,
            "entryPoint": ["sh", "-c"], "command": [cmd], "stopTimeout": 2,
            "environment": [{"name": "E2E_MARKER", "value": MARKER}],
            "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "retries": 2}}]
    });
    std::fs::write(&p, td.to_string()).expect("write");
    p
}

fn capstan(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    capstan_as(endpoint, None, args)
}

/// `capstan` with a bearer token in CAPSTAN_TOKEN.
fn capstan_as(endpoint: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(binary("capstan"));
    cmd.arg("--endpoint").arg(endpoint).args(args);
    if let Some(t) = token {
        cmd.env("CAPSTAN_TOKEN", t);
    }
    let out = cmd.output().expect("capstan runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Processes whose command line or environment mention `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) || String::from_utf8_lossy(&environ).contains(needle) {
            found.push(format!("{name}: {text}"));
        }
    }
    found
}

#[test]
fn cli_against_capstan_dev_deploys_rolls_back_and_stops_cleanly() {
    let dir = test_dir();
    let data = dir.path().join("dev");
    let mut guard = Dev::spawn(&data);
    let dev = &mut guard.0;
    let stdout = dev.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.trim()
                .strip_prefix("API:")
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        })
        .expect("capstan dev prints its API endpoint");
    // Auth is on: dev bootstraps IAM and prints its administrator's token.
    let token = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_once("CAPSTAN_TOKEN=")
                .map(|(_, t)| t.trim_end_matches(')').trim().to_string())
        })
        .expect("capstan dev prints an admin token");
    let tok = Some(token.as_str());
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let ep = endpoint.as_str();
    let (rc, _, err) = capstan(ep, &["cluster", "list"]);
    assert_ne!(
        rc, 0,
        "capstan dev must refuse a caller without credentials"
    );
    assert!(err.contains("AccessDeniedException"), "{err}");
    let (rc, out, err) = capstan_as(ep, tok, &["auth", "whoami"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("capstan://user/admin"), "{out}");

    let v1 = taskdef(dir.path(), "v1.json", "exec sleep 601");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &["taskdef", "register", "-f", v1.to_str().expect("path")],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("hello:1"), "{out}");
    let svc = dir.path().join("svc.json");
    std::fs::write(
        &svc,
        json!({"serviceName": "hello", "taskDefinition": "hello:1", "desiredCount": 2,
            "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200,
                "deploymentCircuitBreaker": {"enable": true, "rollback": true}}})
        .to_string(),
    )
    .expect("write");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &["service", "create", "-f", svc.to_str().expect("path")],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("ACTIVE"), "{out}");

    // A good revision, named by its family (its latest revision now): deploy --wait follows it
    // to COMPLETED and exits 0.
    let v2 = taskdef(dir.path(), "v2.json", "exec sleep 602");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &["taskdef", "register", "-f", v2.to_str().expect("path")],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &[
            "deploy",
            "hello",
            "--task-definition",
            "hello",
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    assert_eq!(rc, 0, "deploy of a good revision:\n{out}\n{err}");
    assert!(out.contains("updated to hello:2"), "{out}");
    assert!(out.contains("COMPLETED"), "{out}");
    assert!(out.contains("running 2/2"), "progress lines: {out}");
    // The same again: nothing to deploy.
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &["deploy", "hello", "--task-definition", "hello", "--wait"],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("nothing to deploy"), "{out}");

    // A broken revision: the breaker trips, deploy --wait exits 1 with its reason.
    let broken = taskdef(dir.path(), "broken.json", "echo crash; exit 1");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &["taskdef", "register", "-f", broken.to_str().expect("path")],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &[
            "deploy",
            "hello",
            "--task-definition",
            "hello:3",
            "--wait",
            "--timeout",
            "180s",
        ],
    );
    assert_eq!(rc, 1, "deploy of a broken revision:\n{out}\n{err}");
    assert!(
        err.contains("FAILED") && err.contains("circuit breaker"),
        "the breaker's reason: {err}"
    );
    let (rc, out, err) = capstan_as(ep, tok, &["-o", "json", "service", "describe", "hello"]);
    assert_eq!(rc, 0, "{out}{err}");
    let d: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        d["deployments"][0]["taskDefinition"], "hello:2",
        "rolled back"
    );
    let (rc, out, _) = capstan_as(ep, tok, &["service", "events", "hello"]);
    assert_eq!(rc, 0);
    assert!(out.contains("rolling back"), "{out}");

    // A service on the dev capacity provider: the scaler starts agents of the local node group
    // for its tasks.
    let batch = dir.path().join("batch.json");
    std::fs::write(
        &batch,
        json!({"serviceName": "batch", "taskDefinition": "hello:2", "desiredCount": 2,
            "capacityProviderStrategy": [{"capacityProvider": "dev-pool", "weight": 1}],
            "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 200}})
        .to_string(),
    )
    .expect("write");
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &["service", "create", "-f", batch.to_str().expect("path")],
    );
    assert_eq!(rc, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, out, _) = capstan_as(ep, tok, &["-o", "json", "service", "describe", "batch"]);
        let d: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if d["runningCount"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "batch never ran 2 tasks: {out}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (rc, out, err) = capstan_as(
        ep,
        tok,
        &[
            "-o",
            "json",
            "instance",
            "list",
            "--filter",
            "attribute:capstan.capacity-provider == dev-pool",
        ],
    );
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("dev-pool"), "agents of the node group: {out}");

    // A mistake reads as ECS's exception.
    let (rc, _, err) = capstan_as(ep, tok, &["--cluster", "nope", "service", "list"]);
    assert_eq!(rc, 1);
    assert!(err.contains("ClusterNotFoundException"), "{err}");

    // Ctrl-C stops everything: no process of this dev plane, and no task, is left.
    assert!(
        !processes_with(MARKER).is_empty(),
        "tasks run before the stop"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(dev.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = dev.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "capstan dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "capstan dev exit: {status}");
    let data_text = data.canonicalize().unwrap_or(data).display().to_string();
    let left: Vec<String> = processes_with(MARKER)
        .into_iter()
        .chain(processes_with(&data_text))
        .collect();
    assert!(left.is_empty(), "stray processes: {left:#?}");
}

#[tokio::test]
async fn capstan_certs_makes_a_ca_once_and_certificates_the_api_and_the_cli_use() {
    let etcd = capstan_testing::EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let pki = dir.path().join("pki");
    let pki_dir = pki.display().to_string();
    let certs = |args: &[&str]| capstan("unused", &[&["certs"], args].concat());
    let (code, out, err) = certs(&["init", "--dir", &pki_dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ca.pem"), "{out}");
    // The CA is never replaced.
    let (code, _, err) = certs(&["init", "--dir", &pki_dir]);
    assert_ne!(code, 0);
    assert!(err.contains("never replaced"), "{err}");
    for (name, host) in [("api", "127.0.0.1"), ("operator", "operator")] {
        let (code, _, err) = certs(&["issue", "--dir", &pki_dir, name, "--host", host]);
        assert_eq!(code, 0, "{err}");
    }
    // A certificate names a host, and a bad name is refused.
    let (code, _, _) = certs(&["issue", "--dir", &pki_dir, "nohost"]);
    assert_ne!(code, 0);
    let (code, _, err) = certs(&["issue", "--dir", &pki_dir, "../x", "--host", "h"]);
    assert_ne!(code, 0);
    assert!(err.contains("not a component name"), "{err}");

    // The API serves with its certificate; the CLI gets in with the operator's, not without.
    let file = |f: &str| pki.join(f).display().to_string();
    let api = capstan_e2e::api_with(
        &etcd.endpoints(),
        dir.path(),
        Some(&capstan_proto::tls::TlsFiles {
            cert: pki.join("api.pem"),
            key: pki.join("api.key"),
            ca: pki.join("ca.pem"),
        }),
        &["--admin", "capstan://user/operator"],
    );
    let endpoint = api.field("grpc").to_string();
    let tls = [
        "--tls-ca",
        &file("ca.pem"),
        "--tls-cert",
        &file("operator.pem"),
        "--tls-key",
        &file("operator.key"),
    ];
    let (code, out, err) = capstan(&endpoint, &[&tls[..], &["cluster", "list"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("default"), "{out}");
    let plain = endpoint.replace("https://", "http://");
    let (code, _, _) = capstan(&plain, &["cluster", "list"]);
    assert_ne!(code, 0, "plain text got in");
}

//! The docker runtime's test fixtures: a locally built busybox image (no registry is
//! reachable), a docker-runtime agent, and `docker` look-ups by task.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use capstan_testing::EtcdCluster;
use serde_json::json;

use super::{AgentProc, status, wait_for};

pub const IMAGE: &str = "capstan-test/busybox:1";

/// Builds the test image once; `None` (test skipped) when there is no Docker engine.
pub fn image() -> Option<&'static str> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let ok = *BUILT.get_or_init(|| {
        let info = Command::new("docker").arg("info").output();
        if !info.is_ok_and(|o| o.status.success()) {
            // No silent skips in CI: there, a missing engine fails the test.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "docker info failed and CI=true: the docker runtime tests need a Docker engine"
            );
            eprintln!("docker info failed: skipping docker runtime tests");
            return false;
        }
        let script = format!(
            r#"set -e
d=$(mktemp -d)
mkdir -p "$d/bin" "$d/www"
cp "$(command -v busybox)" "$d/bin/busybox"
for a in sh sleep httpd cat echo true id touch tty stty ls hostname grep wget; do ln -s busybox "$d/bin/$a"; done
echo hello-from-capstan > "$d/www/index.html"
tar -C "$d" -c . | docker import - {IMAGE} >/dev/null
rm -rf "$d""#
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "building the test image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        true
    });
    ok.then_some(IMAGE)
}

pub fn container(name: &str, command: &[&str]) -> serde_json::Value {
    json!({"name": name, "image": IMAGE, "memory": 64, "cpu": 128, "command": command})
}

/// Ids of `task`'s containers: running ones, or with `all` stopped ones too.
pub fn container_ids(task: &str, all: bool) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            if all { "-aq" } else { "-q" },
            "--filter",
            &format!("label=capstan.task-id={task}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn containers_of(task: &str) -> usize {
    container_ids(task, false).len()
}

/// A task id unique to this run, so leftovers of earlier runs never interfere.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Removes every container of `task`, whatever its state.
pub fn remove_containers(task: &str) {
    for id in container_ids(task, true) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
}

pub fn docker_args() -> Vec<&'static str> {
    vec!["--runtime", "docker", "--docker-pull", "false"]
}

/// etcd, a state dir and a docker-runtime agent; `None` (not run) without a Docker engine.
pub async fn docker_agent() -> Option<(EtcdCluster, tempfile::TempDir, AgentProc)> {
    image()?;
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &docker_args());
    Some((etcd, dir, agent))
}

pub fn inspect(task: &str, format: &str) -> String {
    let id = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=capstan.task-id={task}"),
        ])
        .output()
        .expect("docker ps");
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let out = Command::new("docker")
        .args(["inspect", "-f", format, &id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Stops `task` (1 s grace) and waits until it is STOPPED.
pub async fn stop_and_wait(
    c: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    task: &str,
) {
    c.stop_task(pb::StopTaskRequest {
        task_id: task.to_string(),
        fencing_token: 1,
        timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .expect("stop");
    wait_for(c, task, Duration::from_secs(30), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
}

//! Helpers for agent tests: the real `capstan-agent` binary, a gRPC client, and task builders.

#![allow(dead_code)]

pub mod docker;
pub mod exec;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_client::AgentClient;
use capstan_proto::tls::TlsFiles;
use tonic::transport::Channel;

/// A running `capstan-agent` process, killed on drop.
pub struct AgentProc {
    pub child: Child,
    pub endpoint: String,
    pub admin: String,
    pub instance: String,
    pub state_dir: PathBuf,
}

impl AgentProc {
    /// Starts the agent with `--runtime process` (unless overridden) and waits for its address.
    pub fn start(etcd: &[String], state_dir: &Path, extra: &[&str]) -> Self {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(state_dir.with_extension("log"))
            .expect("agent log");
        let mut args: Vec<String> = vec![
            "--etcd-endpoints".into(),
            etcd.join(","),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--lease-ttl".into(),
            "2".into(),
        ];
        if !extra.contains(&"--runtime") {
            args.extend(["--runtime".into(), "process".into()]);
        }
        // These tests drive the agent as a scheduler would, without an election; the fencing
        // check itself has its own test.
        if !extra.contains(&"--fencing-check") {
            args.extend(["--fencing-check".into(), "none".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan-agent"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn capstan-agent");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("capstan-agent "))
            .unwrap_or_else(|| {
                panic!(
                    "agent did not start; log:\n{}",
                    std::fs::read_to_string(state_dir.with_extension("log")).unwrap_or_default()
                )
            });
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_string()
        };
        Self {
            endpoint: field("grpc"),
            admin: field("admin"),
            instance: field("instance"),
            state_dir: state_dir.to_path_buf(),
            child,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A plain-text client.
    pub async fn client(&self) -> AgentClient<Channel> {
        client(&self.endpoint, None).await
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        capstan_testing::kill_task_processes(&self.state_dir);
    }
}

pub async fn client(endpoint: &str, tls: Option<&TlsFiles>) -> AgentClient<Channel> {
    let channel = capstan_proto::tls::connect(endpoint, tls)
        .await
        .expect("connect to agent");
    AgentClient::new(channel)
}

/// A StartTask request for a one-container task running `script` under `sh -c`.
pub fn start_request(
    task_id: &str,
    token: u64,
    container: serde_json::Value,
) -> pb::StartTaskRequest {
    let td = serde_json::json!({
        "family": "test",
        "revision": 1,
        "containerDefinitions": [container],
    });
    pb::StartTaskRequest {
        task_id: task_id.into(),
        cluster: "default".into(),
        task_definition_arn: "test:1".into(),
        task_definition_json: td.to_string(),
        overrides_json: String::new(),
        fencing_token: token,
        enable_execute_command: false,
    }
}

/// A container running `script` through `sh -c`.
pub fn sh(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "image": "capstan/busybox:test", "memory": 64, "cpu": 128,
        "entryPoint": ["sh", "-c"], "command": [script],
    })
}

/// `<dir>/shared`, writable by everyone: tasks run as the agent's unprivileged task user.
pub fn world_writable(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    shared
}

/// Follows WatchTasks until `pred` holds for the task, or panics after `within`.
pub async fn wait_for(
    client: &mut AgentClient<Channel>,
    task_id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&pb::TaskState) -> bool,
) -> pb::TaskState {
    let mut stream = client
        .watch_tasks(pb::WatchTasksRequest {})
        .await
        .expect("watch")
        .into_inner();
    let deadline = tokio::time::Instant::now() + within;
    let mut last = None;
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!("{task_id}: not {what} within {within:?}; last state {last:#?}")
            })
            .expect("stream")
            .expect("stream open");
        let states = match msg.event {
            Some(pb::task_event::Event::Snapshot(s)) => s.tasks,
            Some(pb::task_event::Event::Update(t)) => vec![t],
            None => vec![],
        };
        for t in states {
            if t.task_id == task_id {
                if pred(&t) {
                    return t;
                }
                last = Some(t);
            }
        }
    }
}

pub fn status(t: &pb::TaskState) -> pb::TaskStatus {
    pb::TaskStatus::try_from(t.last_status).unwrap_or(pb::TaskStatus::Unspecified)
}

pub fn health(t: &pb::TaskState) -> pb::HealthStatus {
    pb::HealthStatus::try_from(t.health_status).unwrap_or(pb::HealthStatus::Unknown)
}

/// GET http://127.0.0.1:<port>/ and return the status line and body.
pub async fn http_get(port: u32) -> std::io::Result<String> {
    http_get_at("127.0.0.1", port).await
}

/// One HTTP/1.0 GET of `/` at `host:port`: the whole reply.
pub async fn http_get_at(host: &str, port: u32) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, u16::try_from(port).unwrap_or(0))).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with(['R', 'S', 'D']))
        })
        .unwrap_or(false)
}

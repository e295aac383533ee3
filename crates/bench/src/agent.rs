//! Node agent figures: StartTask → RUNNING latency with the process runtime, and the agent's
//! resident memory with many running tasks.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_proto::agent::v1 as pb;
use capstan_proto::agent::v1::agent_client::AgentClient;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::{KillOnDrop, rss_kib};

/// What one run measured.
#[derive(Debug)]
pub struct AgentFigures {
    /// StartTask → RUNNING, one task at a time.
    pub latencies: Vec<Duration>,
    /// Tasks running when RSS was read.
    pub running: usize,
    /// Agent resident set size, KiB.
    pub rss_kib: u64,
    /// Median accepted -> RUNNING as the agent's own timestamps say, ms.
    pub agent_p50_ms: f64,
}

struct Running {
    at: Mutex<HashMap<String, Instant>>,
    notify: Notify,
}

fn start_request(id: &str) -> pb::StartTaskRequest {
    let td = serde_json::json!({
        "family": "bench", "revision": 1,
        "containerDefinitions": [{"name": "app", "image": "none", "memory": 16, "cpu": 2,
            "entryPoint": ["sleep"], "command": ["3600"], "stopTimeout": 1}]
    });
    pb::StartTaskRequest {
        task_id: id.into(),
        cluster: "default".into(),
        task_definition_arn: "bench:1".into(),
        task_definition_json: td.to_string(),
        overrides_json: String::new(),
        fencing_token: 1,
        enable_execute_command: false,
    }
}

async fn wait_running(running: &Running, ids: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let notified = running.notify.notified();
        {
            let at = running
                .at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if ids.iter().all(|id| at.contains_key(id)) {
                return Ok(());
            }
        }
        tokio::time::timeout_at(deadline, notified)
            .await
            .map_err(|_| anyhow::anyhow!("tasks not RUNNING within {within:?}"))?;
    }
}

/// Runs the agent binary against `etcd`, measures, stops every task and the agent.
pub async fn measure(
    agent_bin: &Path,
    etcd: &[String],
    state: &Path,
    sequential: usize,
    total: usize,
) -> anyhow::Result<AgentFigures> {
    let mut child = KillOnDrop(
        Command::new(agent_bin)
            .args([
                "--runtime",
                "process",
                // The bench drives the agent as a scheduler would, without an election.
                "--fencing-check",
                "none",
                "--etcd-endpoints",
                &etcd.join(","),
                "--state-dir",
            ])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("capstan-agent "))
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("agent did not start"))?;
    let endpoint = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("grpc="))
        .ok_or_else(|| anyhow::anyhow!("no endpoint in {line:?}"))?
        .to_string();
    let channel = capstan_proto::tls::connect(&endpoint, None).await?;
    let mut client: AgentClient<Channel> = AgentClient::new(channel);

    let running = Arc::new(Running {
        at: Mutex::new(HashMap::new()),
        notify: Notify::new(),
    });
    let mut stream = client
        .watch_tasks(pb::WatchTasksRequest {})
        .await?
        .into_inner();
    let r = running.clone();
    tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.message().await {
            let tasks = match ev.event {
                Some(pb::task_event::Event::Snapshot(s)) => s.tasks,
                Some(pb::task_event::Event::Update(t)) => vec![t],
                None => continue,
            };
            let now = Instant::now();
            let mut at =
                r.at.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            for t in tasks {
                if t.last_status == pb::TaskStatus::Running as i32 {
                    at.entry(t.task_id).or_insert(now);
                }
            }
            drop(at);
            r.notify.notify_waiters();
        }
    });

    let mut latencies = Vec::with_capacity(sequential);
    for i in 0..sequential {
        let id = format!("seq-{i}");
        let t0 = Instant::now();
        client.start_task(start_request(&id)).await?;
        wait_running(&running, std::slice::from_ref(&id), Duration::from_secs(30)).await?;
        let at = running
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[&id];
        latencies.push(at.duration_since(t0));
    }
    // Where the time goes, as the agent itself saw it: accepted -> RUNNING.
    let tasks = client
        .list_tasks(pb::ListTasksRequest {})
        .await?
        .into_inner()
        .tasks;
    let mut inside: Vec<f64> = tasks
        .iter()
        .filter_map(|t| {
            let c = t.created_at.as_ref()?;
            let s = t.started_at.as_ref()?;
            Some((s.seconds - c.seconds) as f64 * 1e3 + f64::from(s.nanos - c.nanos) / 1e6)
        })
        .collect();
    inside.sort_by(f64::total_cmp);
    let agent_p50_ms = inside.get(inside.len() / 2).copied().unwrap_or(0.0);
    let more: Vec<String> = (sequential..total).map(|i| format!("bulk-{i}")).collect();
    for chunk in more.chunks(50) {
        let calls = chunk.iter().map(|id| {
            let mut c = client.clone();
            let req = start_request(id);
            async move { c.start_task(req).await }
        });
        futures::future::try_join_all(calls).await?;
    }
    wait_running(&running, &more, Duration::from_secs(120)).await?;
    // Let the agent settle (health of the registration, persistence) before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(child.0.id());

    let ids: Vec<String> = (0..sequential)
        .map(|i| format!("seq-{i}"))
        .chain(more)
        .collect();
    for chunk in ids.chunks(50) {
        let calls = chunk.iter().map(|id| {
            let mut c = client.clone();
            let req = pb::StopTaskRequest {
                task_id: id.clone(),
                fencing_token: 1,
                timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            };
            async move { c.stop_task(req).await }
        });
        futures::future::try_join_all(calls).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = client
            .list_tasks(pb::ListTasksRequest {})
            .await?
            .into_inner()
            .tasks;
        if tasks
            .iter()
            .all(|t| t.last_status == pb::TaskStatus::Stopped as i32)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(child);
    Ok(AgentFigures {
        latencies,
        running: total,
        rss_kib: rss,
        agent_p50_ms,
    })
}

/// Prints the figures.
pub fn print(f: &AgentFigures) {
    let mut l = f.latencies.clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "agent (process runtime): StartTask -> RUNNING over {} tasks, one at a time",
        l.len()
    );
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        l.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  inside the agent (createdAt -> startedAt): p50 {:.2} ms",
        f.agent_p50_ms
    );
    println!(
        "agent RSS with {} running tasks: {:.1} MiB",
        f.running,
        f.rss_kib as f64 / 1024.0
    );
}

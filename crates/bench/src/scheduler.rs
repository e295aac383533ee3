//! Scheduler throughput: desiredCount 0 → N over M fake agents (in process, over real gRPC, that
//! report RUNNING at once) against one real etcd, with the real `capstan-scheduler` binary.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{KillOnDrop, Usage, rss_kib};
use std::time::{Duration, Instant};

use capstan_core::Deployment;
use capstan_core::deployment::DeploymentStatus;
use capstan_core::instance::{Attribute, ContainerInstance, Resource};
use capstan_core::task::TaskStatus;
use capstan_store::{Cache, Change, Store, Write, json_decoder};
use tokio_util::sync::CancellationToken;

pub use capstan_testing::agent::{FakeAgent, FakeAgents, serve_fake_agents};

/// The one field of a task record the bench follows: decoding whole records would take CPU from
/// the scheduler and etcd it measures.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TaskLastStatus {
    #[serde(rename = "lastStatus")]
    pub(crate) last_status: TaskStatus,
}

/// What one run measured.
#[derive(Debug)]
pub struct SchedulerFigures {
    /// Tasks asked for.
    pub tasks: usize,
    /// Fake agents.
    pub agents: usize,
    /// From writing the deployment to the last task RUNNING in etcd.
    pub elapsed: Duration,
    /// From writing the deployment to the first task record created.
    pub first_created: Duration,
    /// From writing the deployment to the last task record created.
    pub created: Duration,
    /// Task records in etcd when the last task was RUNNING.
    pub records: usize,
    /// etcd revisions consumed per task.
    pub writes_per_task: f64,
    /// Scheduler resident memory at the end, KiB.
    pub rss_kib: u64,
    /// Requests etcd handled during the run (everyone's, the bench's own watch included), by
    /// gRPC method.
    pub etcd_requests: Vec<(String, u64)>,
    /// CPU seconds the hypervisor took from the machine during the run.
    pub stolen: f64,
    /// Mean size of a task record at the end, bytes.
    pub record_bytes: usize,
    /// CPU seconds used during the run by the scheduler, etcd, and this bench (its fake agents
    /// and its watch), in that order.
    pub cpu: [f64; 3],
}

/// Registers each fake agent endpoint as an ACTIVE container instance spread over ten zones.
pub async fn register_fake_instances(store: &Store, endpoints: &[String]) -> anyhow::Result<()> {
    let keys = store.keys().clone();
    for (chunk_no, chunk) in endpoints.chunks(100).enumerate() {
        let mut w = Write::new();
        for (i, ep) in chunk.iter().enumerate() {
            let id = format!("fake{:05}", chunk_no * 100 + i);
            let ci = ContainerInstance {
                container_instance_arn: format!(
                    "arn:capstan:ecs:local:000000000000:container-instance/default/{id}"
                ),
                agent_endpoint: ep.clone(),
                registered_resources: vec![
                    Resource::integer("CPU", 1_000_000),
                    Resource::integer("MEMORY", 1_000_000),
                ],
                agent_connected: true,
                attributes: vec![Attribute {
                    name: "ecs.availability-zone".into(),
                    value: Some(format!("zone-{}", (chunk_no * 100 + i) % 10)),
                }],
                ..Default::default()
            };
            w = w.put_json(&keys.container_instance("default", &id), &ci);
        }
        store.commit(w, None).await?;
    }
    Ok(())
}

/// Starts one of our controller binaries against `etcd`; its log goes to `$<log_env>` if set.
pub fn spawn_controller(
    bin: &Path,
    etcd: &[String],
    extra: &[&str],
    log_env: &str,
) -> anyhow::Result<KillOnDrop> {
    Ok(KillOnDrop(
        Command::new(bin)
            .args(["--etcd-endpoints", &etcd.join(",")])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::env::var_os(log_env)
                    .and_then(|p| std::fs::File::create(p).ok())
                    .map_or_else(Stdio::null, Stdio::from),
            )
            .spawn()?,
    ))
}

/// Registers the fake agents as container instances, runs the scheduler binary and measures
/// 0 → `n`.
pub async fn measure(
    scheduler_bin: &Path,
    store: &Store,
    etcd: &[String],
    etcd_pid: Option<u32>,
    fakes: &FakeAgents,
    n: usize,
) -> anyhow::Result<SchedulerFigures> {
    let keys = store.keys().clone();
    let endpoints = &fakes.endpoints;
    register_fake_instances(store, endpoints).await?;
    let td = serde_json::json!({"family": "bench", "revision": 1, "status": "ACTIVE",
        "containerDefinitions": [{"name": "app", "image": "none", "cpu": 1, "memory": 6,
            "entryPoint": ["true"]}]});
    store
        .put(
            &keys.task_definition("bench", 1),
            td.to_string().into_bytes(),
        )
        .await?;
    let svc = serde_json::json!({"serviceName": "bench", "taskDefinition": "bench:1", "desiredCount": n,
        "deploymentConfiguration": {"maximumPercent": 200}});
    store
        .put(
            &keys.service("default", "bench"),
            svc.to_string().into_bytes(),
        )
        .await?;

    // A free loopback port for its admin server, to see when its caches are synced.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = spawn_controller(
        scheduler_bin,
        etcd,
        &["--admin-addr", &admin.to_string()],
        "CAPSTAN_BENCH_SCHEDULER_LOG",
    )?;
    // Wait for it to lead, with warm caches and a task stream open on every agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let readyz = format!("http://{admin}/readyz");
    while store
        .list(&keys.list(capstan_core::keys::Family::Elections, &["scheduler"]))
        .await?
        .kvs
        .is_empty()
        || !crate::answers_ok(&readyz).await
        || fakes.followed() < endpoints.len()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "scheduler not ready after 30 s (it follows {} of {} agents)",
            fakes.followed(),
            endpoints.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cancel = CancellationToken::new();
    let (tasks, _h) = Cache::<TaskLastStatus>::spawn(
        store.clone(),
        keys.list(capstan_core::keys::Family::Tasks, &["default"]),
        json_decoder(),
        Duration::from_secs(3600),
        cancel.clone(),
    );
    tasks.ready().await;
    let changes = tasks.subscribe();
    let before = store.revision().await?;
    let etcd_url = etcd.first().map(String::as_str).unwrap_or_default();
    let metrics_before = crate::etcd::metrics(etcd_url).await?;
    let d = Deployment {
        id: "ecs-svc/bench".into(),
        status: DeploymentStatus::Primary,
        task_definition: "bench:1".into(),
        desired_count: n as u32,
        ..Default::default()
    };
    let usage = Usage::start([child.0.id(), etcd_pid.unwrap_or(0), std::process::id()]);
    let t0 = Instant::now();
    store
        .put_json(&keys.deployment("default", "bench", &d.id), &d)
        .await?;
    let mut created = None;
    let mut first_created = None;
    until_running(&tasks, changes, n, |records| {
        first_created.get_or_insert_with(|| t0.elapsed());
        if records == n {
            created = Some(t0.elapsed());
        }
    })
    .await?;
    let elapsed = t0.elapsed();
    let (cpu, stolen) = usage.since();
    let after = store.revision().await?;
    let metrics_after = crate::etcd::metrics(etcd_url).await?;
    let etcd_requests = metrics_after.requests_since(&metrics_before);
    // Every task is counted once: more records than tasks would be a double placement.
    let listing = store
        .list(&keys.list(capstan_core::keys::Family::Tasks, &["default"]))
        .await?
        .kvs;
    let records = listing.len();
    let record_bytes = listing.iter().map(|kv| kv.value.len()).sum::<usize>() / records.max(1);
    let rss = rss_kib(child.0.id());
    cancel.cancel();
    drop(child);
    Ok(SchedulerFigures {
        first_created: first_created.unwrap_or(elapsed),
        created: created.unwrap_or(elapsed),
        records,
        tasks: n,
        agents: endpoints.len(),
        elapsed,
        writes_per_task: (after - before) as f64 / n as f64,
        rss_kib: rss,
        etcd_requests,
        record_bytes,
        stolen,
        cpu,
    })
}

/// Follows a task watch until `n` records are RUNNING; `on_new(records)` runs each time a record
/// is seen for the first time, with the number seen so far.
pub(crate) async fn until_running(
    tasks: &Cache<TaskLastStatus>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
    n: usize,
    mut on_new: impl FnMut(usize),
) -> anyhow::Result<()> {
    let mut running = HashSet::new();
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while running.len() < n {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("only {} of {n} tasks RUNNING after 600 s", running.len())
            })?
            .ok_or_else(|| anyhow::anyhow!("the task watch ended"))?;
        let Change::Put { key, .. } = change else {
            continue;
        };
        if seen.insert(key.clone()) {
            on_new(seen.len());
        }
        if tasks.get(&key).is_some_and(|e| {
            e.value
                .as_ref()
                .is_ok_and(|t| t.last_status == TaskStatus::Running)
        }) {
            running.insert(key);
        }
    }
    Ok(())
}

/// Prints the figures beside the raw etcd rate measured in the same run.
pub fn print(f: &SchedulerFigures, raw_puts_per_sec: f64) {
    let rate = f.tasks as f64 / f.elapsed.as_secs_f64();
    println!(
        "scheduler: desiredCount 0 -> {} over {} fake agents",
        f.tasks, f.agents
    );
    println!(
        "  {:.0} tasks RUNNING/s end to end ({:.2} s); raw etcd batched puts {:.0}/s; ratio {:.1}%",
        rate,
        f.elapsed.as_secs_f64(),
        raw_puts_per_sec,
        100.0 * rate / raw_puts_per_sec
    );
    println!(
        "  first task record written after {:.2} s, all {} after {:.2} s; {} task records in etcd at the end",
        f.first_created.as_secs_f64(),
        f.tasks,
        f.created.as_secs_f64(),
        f.records
    );
    println!(
        "  etcd writes per task {:.2}; scheduler RSS {:.1} MiB",
        f.writes_per_task,
        f.rss_kib as f64 / 1024.0
    );
    let requests: Vec<String> = f
        .etcd_requests
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    println!("  etcd requests during the run: {}", requests.join(", "));
    let [scheduler, etcd, bench] = f.cpu;
    println!(
        "  CPU during the run: scheduler {scheduler:.2} s, etcd {etcd:.2} s, bench (fake agents, watch) {bench:.2} s; {:.0} µs of CPU per task in all; stolen by the hypervisor {:.2} s; task records {} bytes",
        1e6 * (scheduler + etcd + bench) / f.tasks as f64,
        f.stolen,
        f.record_bytes
    );
}

//! Registrar: N load-balanced tasks (busybox httpd, process runtime) behind a listener, with the
//! real scheduler, deployer and registrar driving a real HAProxy. Figures per task: RUNNING →
//! its server taking traffic in HAProxy, and (scaling to 0) DEACTIVATING → drained for idle
//! targets, as p50/p99.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use capstan_core::keys::Family;
use capstan_core::lb::TargetGroupStatusDoc;
use capstan_core::task::{Task, TaskStatus};
use capstan_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::capacity::{put_json, spawn_controllers, start_nodegroups};
use crate::scheduler::spawn_controller;

/// What one run measured (seconds).
#[derive(Debug, Clone)]
pub struct RegistrarFigures {
    /// Tasks.
    pub tasks: usize,
    /// RUNNING → serving, sorted.
    pub serving: Vec<f64>,
    /// DEACTIVATING → drained, sorted.
    pub drained: Vec<f64>,
    /// The target group's health check interval.
    pub interval: u32,
}

async fn command(sock: &Path, cmd: &str) -> String {
    let Ok(mut s) = tokio::net::UnixStream::connect(sock).await else {
        return String::new();
    };
    let _ = s.write_all(format!("{cmd}\n").as_bytes()).await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

async fn tasks(store: &Store) -> anyhow::Result<Vec<Task>> {
    Ok(store
        .list(&store.keys().list(Family::Tasks, &["default"]))
        .await?
        .kvs
        .iter()
        .filter_map(|kv| kv.json::<Task>().ok())
        .collect())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs it and measures.
pub async fn measure(
    bin_dir: &Path,
    store: &Store,
    etcd: &[String],
    data: &Path,
    n: usize,
) -> anyhow::Result<RegistrarFigures> {
    let interval = 5;
    let (_provider, _) = start_nodegroups(
        bin_dir,
        etcd,
        &data.join("nodes"),
        "lb:min=3,max=3,desired=3,cpu=65536,memory=65536,provider=lb,zones=za|zb|zc",
    )
    .await?;
    let hp = data.join("haproxy");
    let keys = store.keys().clone();
    let put = |key: String, v: serde_json::Value| async move { put_json(store, &key, v).await };
    let port = capstan_testing::free_port()?;
    put(
        keys.target_group("bench-tg"),
        serde_json::json!({"protocol": "HTTP", "healthCheck": {"path": "/", "intervalSeconds": interval, "timeoutSeconds": 2},
            "attributes": [{"key": "deregistration_delay.timeout_seconds", "value": "30"}]}),
    )
    .await?;
    put(
        keys.listener("bench"),
        serde_json::json!({"port": port, "defaultActions": [{"type": "forward", "targetGroupArn": "bench-tg"}]}),
    )
    .await?;
    let cmd = "d=/tmp/capstan-bench-www-$CAPSTAN_TASK_ID; mkdir -p $d; echo $CAPSTAN_TASK_ID > $d/index.html; \
               exec busybox httpd -f -p 127.0.0.1:$PORT -h $d";
    put(
        keys.task_definition("web", 1),
        serde_json::json!({"family": "web", "revision": 1, "status": "ACTIVE",
            "containerDefinitions": [{"name": "app", "image": "x", "cpu": 16, "memory": 16,
                "portMappings": [{"containerPort": 8080, "hostPort": 0}],
                "entryPoint": ["sh", "-c"], "command": [cmd], "stopTimeout": 1}]}),
    )
    .await?;
    let registrar = spawn_controller(
        &bin_dir.join("capstan-registrar"),
        etcd,
        &["--haproxy-dir", &hp.display().to_string()],
        "CAPSTAN_BENCH_REGISTRAR_LOG",
    )?;
    let _controllers = spawn_controllers(bin_dir, etcd)?;
    let service = |desired: usize| {
        serde_json::json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": desired,
            "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 200},
            "loadBalancers": [{"targetGroupArn": "bench-tg", "containerName": "app", "containerPort": 8080}]})
    };
    let result = async {
        put(keys.service("default", "web"), service(n)).await?;
        let sock = hp.join("admin.sock");
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut serving_at: HashMap<String, f64> = HashMap::new();
        let mut started: HashMap<String, f64> = HashMap::new();
        while serving_at.len() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} targets serving",
                serving_at.len()
            );
            let servers = command(&sock, "show servers state be_bench-tg").await;
            let t = now();
            for l in servers.lines().filter(|l| !l.starts_with('#')) {
                let f: Vec<&str> = l.split_whitespace().collect();
                // srv_op_state 2 (running) and srv_admin_state 0 (ready): in traffic.
                if f.len() > 6 && f[5] == "2" && f[6] == "0" {
                    serving_at.entry(f[3].to_string()).or_insert(t);
                }
            }
            if started.len() < n {
                for task in tasks(store).await? {
                    if let (TaskStatus::Running, Some(s)) = (task.last_status, task.started_at) {
                        started.insert(task.id().to_string(), s);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut serving: Vec<f64> = serving_at
            .iter()
            .filter_map(|(id, at)| Some(at - started.get(id)?))
            .collect();
        serving.sort_by(f64::total_cmp);

        // Scale in: every target drains; with no sessions, at once.
        put(keys.service("default", "web"), service(0)).await?;
        let mut drained_at: HashMap<String, f64> = HashMap::new();
        let mut stopping: HashMap<String, f64> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(240);
        while drained_at.len() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} targets drained",
                drained_at.len()
            );
            let t = now();
            if let Some(kv) = store.get(&keys.target_group_status("bench-tg")).await? {
                let doc: TargetGroupStatusDoc = kv.json()?;
                for target in doc.targets.iter().filter(|x| x.drained) {
                    drained_at.entry(target.task_id.clone()).or_insert(t);
                }
            }
            for task in tasks(store).await? {
                if let Some(s) = task.stopping_at {
                    stopping.insert(task.id().to_string(), s);
                }
                // A target drained and removed between two polls: its task's stop (which came
                // after the drain) bounds the figure from above.
                if task.last_status == TaskStatus::Stopped
                    && !drained_at.contains_key(task.id())
                    && let Some(s) = task.stopped_at
                {
                    drained_at.insert(task.id().to_string(), s);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut drained: Vec<f64> = drained_at
            .iter()
            .filter_map(|(id, at)| Some(at - stopping.get(id)?))
            .collect();
        drained.sort_by(f64::total_cmp);
        Ok(RegistrarFigures {
            tasks: n,
            serving,
            drained,
            interval,
        })
    }
    .await;
    // The registrar leaves HAProxy serving by design; the bench stops it.
    drop(registrar);
    if let Ok(pid) = std::fs::read_to_string(hp.join("haproxy.pid"))
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    result
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Prints the figures.
pub fn print(f: &RegistrarFigures) {
    println!(
        "registrar: {} load-balanced tasks behind HAProxy (health check every {} s)",
        f.tasks, f.interval
    );
    println!(
        "  RUNNING -> serving traffic: p50 {:.2} s  p99 {:.2} s  (n={})",
        pct(&f.serving, 0.5),
        pct(&f.serving, 0.99),
        f.serving.len()
    );
    println!(
        "  DEACTIVATING -> drained (idle targets): p50 {:.3} s  p99 {:.3} s  (n={})",
        pct(&f.drained, 0.5),
        pct(&f.drained, 0.99),
        f.drained.len()
    );
}

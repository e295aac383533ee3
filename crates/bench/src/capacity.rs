//! Capacity: a capacity-provider service from desiredCount 0 to N on an empty node group (min 0),
//! with the real scheduler, deployer and scaler and `capstan-nodegroup-local` starting real
//! agents. Figures: time until every task is RUNNING, and the scale steps it took (distinct
//! desired capacities the provider was given).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan_core::keys::Family;
use capstan_core::task::{Task, TaskStatus};
use capstan_proto::nodegroup::v1 as pb;
use capstan_proto::nodegroup::v1::node_group_provider_client::NodeGroupProviderClient;
use capstan_store::Store;

use crate::KillOnDrop;
use crate::scheduler::spawn_controller;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct CapacityFigures {
    /// Tasks.
    pub tasks: usize,
    /// CPU units per task and per instance.
    pub task_cpu: u32,
    /// CPU units of one instance.
    pub instance_cpu: u32,
    /// Service update → every task RUNNING.
    pub all_running: Duration,
    /// Service update → first desired-capacity change.
    pub first_scale: Duration,
    /// Desired capacities set, in order.
    pub steps: Vec<u32>,
    /// Instances at the end.
    pub instances: usize,
}

/// A `capstan-nodegroup-local`, stopped gracefully on drop so its agents and their tasks go
/// with it.
pub struct Provider(std::process::Child);

/// Starts `capstan-nodegroup-local` with one `--group`; returns it and its endpoint.
pub async fn start_nodegroups(
    bin_dir: &Path,
    etcd: &[String],
    data: &Path,
    group: &str,
) -> anyhow::Result<(Provider, String)> {
    let mut child = Command::new(bin_dir.join("capstan-nodegroup-local"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stop-on-exit",
            "--agent-lease-ttl",
            "3",
        ])
        .args(["--etcd-endpoints", &etcd.join(",")])
        .arg("--data-dir")
        .arg(data)
        .arg("--group")
        .arg(group)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let provider = Provider(child);
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("capstan-nodegroup-local "))
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("capstan-nodegroup-local did not start"))?;
    let endpoint = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .ok_or_else(|| anyhow::anyhow!("no endpoint in {line:?}"))?
        .to_string();
    Ok((provider, endpoint))
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `v` as JSON at `key`.
pub async fn put_json(store: &Store, key: &str, v: serde_json::Value) -> anyhow::Result<()> {
    store.put(key, v.to_string().into_bytes()).await?;
    Ok(())
}

/// The real scheduler and deployer (health grace 1 s) beside this bench.
pub fn spawn_controllers(bin_dir: &Path, etcd: &[String]) -> anyhow::Result<Vec<KillOnDrop>> {
    Ok(vec![
        spawn_controller(
            &bin_dir.join("capstan-scheduler"),
            etcd,
            &[],
            "CAPSTAN_BENCH_SCHEDULER_LOG",
        )?,
        spawn_controller(
            &bin_dir.join("capstan-deployer"),
            etcd,
            &["--health-grace", "1s"],
            "CAPSTAN_BENCH_DEPLOYER_LOG",
        )?,
    ])
}

/// Runs 0 → `n` and measures it.
pub async fn measure(
    bin_dir: &Path,
    store: &Store,
    etcd: &[String],
    data: &Path,
    n: usize,
) -> anyhow::Result<CapacityFigures> {
    let (task_cpu, instance_cpu) = (256u32, 1024u32);
    let max = (n as u32 * task_cpu).div_ceil(instance_cpu) + 2;
    let (_provider, endpoint) = start_nodegroups(
        bin_dir,
        etcd,
        data,
        &format!(
            "bench:min=0,max={max},cpu={instance_cpu},memory=8192,provider=bench,zones=za|zb|zc"
        ),
    )
    .await?;
    let keys = store.keys().clone();
    let put = |key: String, v: serde_json::Value| async move { put_json(store, &key, v).await };
    put(
        keys.capacity_provider("bench"),
        serde_json::json!({"name": "bench", "nodeGroupProvider": {"endpoint": endpoint, "groupId": "bench",
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100, "instanceWarmupPeriod": 10}}}),
    )
    .await?;
    put(
        keys.task_definition("bench", 1),
        serde_json::json!({"family": "bench", "revision": 1, "status": "ACTIVE",
            "containerDefinitions": [{"name": "app", "image": "none", "cpu": task_cpu, "memory": 16,
                "entryPoint": ["sh", "-c"], "command": ["exec sleep 3600"], "stopTimeout": 1}]}),
    )
    .await?;
    let mut controllers = spawn_controllers(bin_dir, etcd)?;
    controllers.push(spawn_controller(
        &bin_dir.join("capstan-scaler"),
        etcd,
        &["--interval", "2s"],
        "CAPSTAN_BENCH_SCALER_LOG",
    )?);
    let channel = capstan_proto::tls::connect(&endpoint, None).await?;
    let mut group = NodeGroupProviderClient::new(channel);
    let t0 = Instant::now();
    put(
        keys.service("default", "bench"),
        serde_json::json!({"serviceName": "bench", "taskDefinition": "bench:1", "desiredCount": n,
            "capacityProviderStrategy": [{"capacityProvider": "bench", "weight": 1}],
            "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 200}}),
    )
    .await?;
    let mut steps: Vec<u32> = Vec::new();
    let mut first_scale = None;
    let prefix = keys.list(Family::Tasks, &["default"]);
    let deadline = t0 + Duration::from_secs(300);
    let (all_running, instances) = loop {
        let g = group
            .describe_group(pb::DescribeGroupRequest {
                group_id: "bench".into(),
            })
            .await?
            .into_inner();
        if steps.last() != Some(&g.desired_capacity) && g.desired_capacity > 0 {
            first_scale.get_or_insert_with(|| t0.elapsed());
            steps.push(g.desired_capacity);
        }
        let running = store
            .list(&prefix)
            .await?
            .kvs
            .iter()
            .filter(|kv| {
                kv.json::<Task>()
                    .is_ok_and(|t| t.last_status == TaskStatus::Running)
            })
            .count();
        if running >= n {
            break (t0.elapsed(), g.instances.len());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {running} of {n} tasks RUNNING after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok(CapacityFigures {
        tasks: n,
        task_cpu,
        instance_cpu,
        all_running,
        first_scale: first_scale.unwrap_or_default(),
        steps,
        instances,
    })
}

/// Prints the figures.
pub fn print(f: &CapacityFigures) {
    println!(
        "capacity: service 0 -> {} tasks of {} CPU on an empty node group (instances of {} CPU, local agents)",
        f.tasks, f.task_cpu, f.instance_cpu
    );
    println!(
        "  all RUNNING after {:.2} s; first scale-out after {:.2} s; {} scale step(s) {:?}; {} instances",
        f.all_running.as_secs_f64(),
        f.first_scale.as_secs_f64(),
        f.steps.len(),
        f.steps,
        f.instances
    );
}

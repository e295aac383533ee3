//! Deployer: a rolling update of N tasks (minimumHealthyPercent 100, maximumPercent 200) over
//! in-process fake agents that report RUNNING at once, with the real `capstan-scheduler` and
//! `capstan-deployer` binaries on one real etcd. The figure is the time from the service update
//! to the new deployment's COMPLETED, minus the health grace (the one wait ECS's rules impose).

use std::path::Path;
use std::time::{Duration, Instant};

use capstan_core::deployment::{Deployment, DeploymentStatus, RolloutState};
use capstan_core::keys::Family;
use capstan_store::Store;

use crate::scheduler::{register_fake_instances, spawn_controller};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct DeployerFigures {
    /// Tasks.
    pub tasks: usize,
    /// Health grace given to the deployer.
    pub grace: Duration,
    /// Update written → new deployment COMPLETED.
    pub elapsed: Duration,
    /// First deployment (0 → N) written → COMPLETED.
    pub first: Duration,
}

async fn completed(store: &Store, td: &str, deadline: Instant) -> anyhow::Result<()> {
    let prefix = store
        .keys()
        .list(Family::Deployments, &["default", "bench"]);
    loop {
        let done = store.list(&prefix).await?.kvs.iter().any(|kv| {
            kv.json::<Deployment>().is_ok_and(|d| {
                d.status == DeploymentStatus::Primary
                    && d.task_definition == td
                    && d.rollout_state == RolloutState::Completed
            })
        });
        if done {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{td} did not complete in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn put_service(store: &Store, revision: u32, n: usize) -> anyhow::Result<()> {
    let svc = serde_json::json!({"serviceName": "bench", "taskDefinition": format!("bench:{revision}"),
        "desiredCount": n, "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}});
    store
        .put(
            &store.keys().service("default", "bench"),
            svc.to_string().into_bytes(),
        )
        .await?;
    Ok(())
}

/// Runs the rolling update and measures it.
pub async fn measure(
    bins: (&Path, &Path),
    store: &Store,
    etcd: &[String],
    agents: &[String],
    n: usize,
    grace: Duration,
) -> anyhow::Result<DeployerFigures> {
    let keys = store.keys().clone();
    register_fake_instances(store, agents).await?;
    for rev in [1u32, 2] {
        let td = serde_json::json!({"family": "bench", "revision": rev, "status": "ACTIVE",
            "containerDefinitions": [{"name": "app", "image": "none", "cpu": 1, "memory": 6,
                "entryPoint": ["true"]}]});
        store
            .put(
                &keys.task_definition("bench", rev),
                td.to_string().into_bytes(),
            )
            .await?;
    }
    let grace_arg = format!("{}ms", grace.as_millis());
    let _scheduler = spawn_controller(bins.0, etcd, &[], "CAPSTAN_BENCH_SCHEDULER_LOG")?;
    let _deployer = spawn_controller(
        bins.1,
        etcd,
        &["--health-grace", &grace_arg],
        "CAPSTAN_BENCH_DEPLOYER_LOG",
    )?;
    let t0 = Instant::now();
    put_service(store, 1, n).await?;
    completed(store, "bench:1", t0 + Duration::from_secs(120)).await?;
    let first = t0.elapsed();
    let t1 = Instant::now();
    put_service(store, 2, n).await?;
    completed(store, "bench:2", t1 + Duration::from_secs(120)).await?;
    Ok(DeployerFigures {
        tasks: n,
        grace,
        elapsed: t1.elapsed(),
        first,
    })
}

/// Prints the figures.
pub fn print(f: &DeployerFigures) {
    println!(
        "deployer: rolling update of {} tasks (min 100 / max 200) over fake agents",
        f.tasks
    );
    println!(
        "  update -> COMPLETED {:.2} s; health grace {:.2} s; controller time {:.2} s",
        f.elapsed.as_secs_f64(),
        f.grace.as_secs_f64(),
        (f.elapsed.saturating_sub(f.grace)).as_secs_f64()
    );
    println!(
        "  (first deployment 0 -> {} COMPLETED in {:.2} s, grace included)",
        f.tasks,
        f.first.as_secs_f64()
    );
}

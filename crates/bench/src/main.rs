//! `capstan-bench`: benchmarks that print figures.

use std::path::PathBuf;
use std::time::Duration;

use capstan_bench::etcd;

use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use clap::{Parser, Subcommand};

/// Capstan benchmarks; each prints a table.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw etcd puts/s for batch sizes 1, 16, 128 (one txn per batch) at concurrency 1 and 8.
    EtcdPut {
        /// Use this etcd instead of starting one (comma-separated client URLs).
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        /// Where the started etcd keeps its data (a disk, to measure this machine's fsync).
        #[arg(long, default_value = "/var/tmp")]
        data_root: PathBuf,
        /// Seconds per combination.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 512)]
        value_size: usize,
    },
    /// Placement planner alone: N tasks over M instances, then N/2 scale-in victims.
    Placement {
        /// Tasks.
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        /// Instances.
        #[arg(long, default_value_t = 1_000)]
        instances: usize,
    },
    /// Scheduler: desiredCount 0 -> N over M in-process fake agents, with the real binary.
    Scheduler {
        /// The capstan-scheduler binary; by default the one beside this bench.
        #[arg(long)]
        scheduler_bin: Option<PathBuf>,
        /// Tasks.
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        /// Fake agents.
        #[arg(long, default_value_t = 1_000)]
        agents: usize,
    },
    /// Deployer: rolling update of N tasks (100/200) over fake agents, real scheduler and deployer.
    Deployer {
        /// Tasks.
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        /// Fake agents.
        #[arg(long, default_value_t = 20)]
        agents: usize,
        /// Health grace given to the deployer.
        #[arg(long, default_value = "1s")]
        grace: humantime::Duration,
    },
    /// Capacity: a capacity-provider service 0 -> N on an empty local node group, real scaler.
    Capacity {
        /// Tasks (256 CPU each, 4 per instance).
        #[arg(long, default_value_t = 100)]
        tasks: usize,
    },
    /// Registrar: RUNNING -> serving and DEACTIVATING -> drained through a real HAProxy.
    Registrar {
        /// Load-balanced tasks.
        #[arg(long, default_value_t = 100)]
        tasks: usize,
    },
    /// Node agent: StartTask -> RUNNING latency (process runtime) and RSS with many tasks.
    Agent {
        /// The capstan-agent binary; by default the one beside this bench.
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// Tasks started one at a time for the latency figures.
        #[arg(long, default_value_t = 200)]
        sequential: usize,
        /// Tasks running when memory is read.
        #[arg(long, default_value_t = 500)]
        total: usize,
    },
}

/// The directory of the binaries beside this bench, a fresh etcd and its store, and a data dir.
async fn local_plane() -> anyhow::Result<(
    std::path::PathBuf,
    EtcdCluster,
    Vec<String>,
    Store,
    tempfile::TempDir,
)> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no binary directory"))?
        .to_path_buf();
    let etcd = EtcdCluster::single().await?;
    let endpoints = etcd.endpoints();
    let store = Store::connect(&StoreConfig::new(endpoints.clone(), "/capstan")).await?;
    Ok((bin_dir, etcd, endpoints, store, tempfile::tempdir()?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::EtcdPut {
            endpoints,
            data_root,
            seconds,
            value_size,
        } => {
            let (_etcd, endpoints) = if endpoints.is_empty() {
                let etcd = EtcdCluster::start_in(1, &data_root).await?;
                let eps = etcd.endpoints();
                println!("started etcd (data under {})", data_root.display());
                (Some(etcd), eps)
            } else {
                (None, endpoints)
            };
            let store = Store::connect(&StoreConfig::new(endpoints, "/capstan-bench")).await?;
            let mut rows = Vec::new();
            for batch in [1, 16, 128] {
                for concurrency in [1, 8] {
                    rows.push(
                        etcd::measure(
                            &store,
                            batch,
                            concurrency,
                            Duration::from_secs(seconds),
                            value_size,
                        )
                        .await?,
                    );
                }
            }
            etcd::clean(&store).await?;
            println!("etcd put throughput, {value_size}-byte values, {seconds} s per row");
            etcd::print_table(&rows);
        }
        Command::Placement { tasks, instances } => {
            capstan_bench::placement::print(&capstan_bench::placement::measure(instances, tasks));
        }
        Command::Scheduler {
            scheduler_bin,
            tasks,
            agents,
        } => {
            let bin = match scheduler_bin {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("capstan-scheduler"),
            };
            let etcd_cluster = EtcdCluster::single().await?;
            let endpoints = etcd_cluster.endpoints();
            let store = Store::connect(&StoreConfig::new(endpoints.clone(), "/capstan")).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let fakes = capstan_bench::scheduler::serve_fake_agents(agents, &cancel).await?;
            let etcd_pid = etcd_cluster.pid(0);
            let figures = capstan_bench::scheduler::measure(
                &bin, &store, &endpoints, etcd_pid, &fakes, tasks,
            )
            .await?;
            cancel.cancel();
            let etcd_pid = etcd_pid.unwrap_or(0);
            let ceiling = capstan_bench::ceiling::after_scheduler_run(&store, etcd_pid).await?;
            // The physical limit, measured on the same etcd right after (not before: see
            // `etcd::clean`).
            let usage = capstan_bench::Usage::start([etcd_pid]);
            let raw = etcd::measure(&store, 128, 1, Duration::from_secs(2), 512).await?;
            let ([etcd_cpu], stolen) = usage.since();
            capstan_bench::scheduler::print(&figures, raw.puts_per_sec());
            for c in &ceiling {
                capstan_bench::ceiling::print(c, raw.puts_per_sec());
            }
            println!(
                "  raw etcd puts: {:.0} µs of etcd CPU per put; stolen by the hypervisor {stolen:.2} s",
                1e6 * etcd_cpu / (raw.txns as f64 * raw.batch as f64).max(1.0)
            );
        }
        Command::Deployer {
            tasks,
            agents,
            grace,
        } => {
            let exe = std::env::current_exe()?;
            let (sched, dep) = (
                exe.with_file_name("capstan-scheduler"),
                exe.with_file_name("capstan-deployer"),
            );
            let etcd_cluster = EtcdCluster::single().await?;
            let endpoints = etcd_cluster.endpoints();
            let store = Store::connect(&StoreConfig::new(endpoints.clone(), "/capstan")).await?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let fakes = capstan_bench::scheduler::serve_fake_agents(agents, &cancel).await?;
            let figures = capstan_bench::deployer::measure(
                (&sched, &dep),
                &store,
                &endpoints,
                &fakes.endpoints,
                tasks,
                grace.into(),
            )
            .await?;
            capstan_bench::deployer::print(&figures);
            cancel.cancel();
        }
        Command::Registrar { tasks } => {
            let (bin_dir, _etcd, endpoints, store, data) = local_plane().await?;
            let figures =
                capstan_bench::registrar::measure(&bin_dir, &store, &endpoints, data.path(), tasks)
                    .await?;
            capstan_bench::registrar::print(&figures);
        }
        Command::Capacity { tasks } => {
            let (bin_dir, _etcd, endpoints, store, data) = local_plane().await?;
            let figures =
                capstan_bench::capacity::measure(&bin_dir, &store, &endpoints, data.path(), tasks)
                    .await?;
            capstan_bench::capacity::print(&figures);
        }
        Command::Agent {
            agent_bin,
            sequential,
            total,
        } => {
            let bin = match agent_bin {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("capstan-agent"),
            };
            let etcd = EtcdCluster::single().await?;
            let state = tempfile::tempdir()?;
            let figures = capstan_bench::agent::measure(
                &bin,
                &etcd.endpoints(),
                state.path(),
                sequential,
                total.max(sequential),
            )
            .await?;
            capstan_bench::agent::print(&figures);
        }
    }
    Ok(())
}

//! The scheduler's flags.

use capstan_proto::tls::TlsArgs;
use capstan_runtime::CommonArgs;

/// Command-line arguments of `capstan-scheduler`.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-scheduler", version)]
pub struct SchedulerArgs {
    /// etcd, prefix, admin address, election and logging.
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long an instance may be missing before its tasks are recorded STOPPED and replaced;
    /// the election TTL by default.
    #[arg(long, env = "CAPSTAN_NODE_LOSS_GRACE")]
    pub node_loss_grace: Option<humantime::Duration>,
    /// How long stopped tasks stay visible before their records are deleted.
    #[arg(long, env = "CAPSTAN_TASK_RETENTION", default_value = "1h")]
    pub task_retention: humantime::Duration,
    /// Longest wait in DEACTIVATING for the registrar's drained mark before StopTask (ELB's
    /// default deregistration delay is 300 s).
    #[arg(long, env = "CAPSTAN_DRAIN_TIMEOUT", default_value = "330s")]
    pub drain_timeout: humantime::Duration,
    /// Reconciles at once.
    #[arg(long, env = "CAPSTAN_SCHEDULER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Least time between two reconciles of one service: task reports arriving meanwhile are
    /// handled by one reconcile (a service with thousands of tasks would otherwise re-plan for
    /// each). 0 reconciles on every change.
    #[arg(long, env = "CAPSTAN_SCHEDULER_SETTLE", default_value = "100ms")]
    pub settle: humantime::Duration,
    /// Mutual TLS to the agents: the scheduler's certificate and key, and the cluster CA that
    /// signed the agents'. With it, an agent registered at an `http://` endpoint is refused.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl SchedulerArgs {
    /// How long an instance may be missing before its tasks are lost.
    pub fn grace(&self) -> std::time::Duration {
        self.node_loss_grace
            .map_or_else(|| self.common.election_ttl(), Into::into)
    }
}

//! The deployer's flags.

use capstan_runtime::CommonArgs;

/// Command-line arguments of `capstan-deployer`.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-deployer", version)]
pub struct DeployerArgs {
    /// etcd, prefix, admin address, election and logging.
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long a task without health checks or load balancers must run to count as healthy
    /// (ECS: 40 s).
    #[arg(long, env = "CAPSTAN_HEALTH_GRACE", default_value = "40s")]
    pub health_grace: humantime::Duration,
    /// INACTIVE deployments kept per service (history and rollback targets).
    #[arg(long, env = "CAPSTAN_DEPLOYMENT_HISTORY", default_value_t = 10)]
    pub history: usize,
    /// Reconciles at once.
    #[arg(long, env = "CAPSTAN_DEPLOYER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
}

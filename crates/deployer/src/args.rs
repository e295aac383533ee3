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
    /// A file holding the key webhook calls are signed with (`X-Capstan-Signature`); each hook's
    /// secret is derived from it and the hook's URL (`capstan webhook secret`).
    #[arg(long, env = "CAPSTAN_WEBHOOK_SIGNING_KEY_FILE")]
    pub webhook_signing_key_file: Option<std::path::PathBuf>,
    /// A host webhooks may be called on, e.g. hooks.example.com or *.example.com (repeatable;
    /// comma-separated in the variable); any host when none is given.
    #[arg(
        long = "webhook-allow-host",
        env = "CAPSTAN_WEBHOOK_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub webhook_allow_hosts: Vec<String>,
    /// Reconciles at once.
    #[arg(long, env = "CAPSTAN_DEPLOYER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
}

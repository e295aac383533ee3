//! The `capstan` command: ECS's actions over Capstan's gRPC API (`capstan <noun> <verb>`), a
//! live `deploy --wait`, and `capstan dev`, which starts a whole local control plane.

pub mod auth;
pub mod certs;
pub mod commands;
pub mod deploy;
pub mod dev;
pub mod etcd;
pub mod output;

use capstan_proto::auth::{ApiClient, Credentials, IamApiClient};
use capstan_proto::tls::TlsFiles;
use clap::{Parser, Subcommand};
use tonic::transport::Channel;

pub use output::Format;

/// Default API endpoint (what `capstan dev` serves).
pub const ENDPOINT_DEFAULT: &str = "http://127.0.0.1:7400";

/// Capstan: ECS's model on your own machines.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, propagate_version = true)]
pub struct Cli {
    /// API endpoint.
    #[arg(long, global = true, env = "CAPSTAN_ENDPOINT", default_value = ENDPOINT_DEFAULT)]
    pub endpoint: String,
    /// Cluster to act on.
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_CLUSTER",
        default_value = "default"
    )]
    pub cluster: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Mutual TLS to the API: the client certificate and key, and the cluster CA.
    #[command(flatten)]
    pub tls: capstan_proto::tls::TlsArgs,
    /// A bearer token (`capstan_…`, from `capstan auth token create` or `capstan dev`), for
    /// callers without a client certificate.
    #[arg(long, global = true, env = "CAPSTAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clusters.
    #[command(subcommand)]
    Cluster(commands::ClusterCmd),
    /// Task definitions.
    #[command(subcommand, name = "taskdef")]
    TaskDef(commands::TaskDefCmd),
    /// Services.
    #[command(subcommand)]
    Service(commands::ServiceCmd),
    /// Roll a service to a task definition; with --wait, follow the rollout to its end.
    Deploy(deploy::DeployArgs),
    /// Tasks.
    #[command(subcommand)]
    Task(commands::TaskCmd),
    /// Container instances.
    #[command(subcommand)]
    Instance(commands::InstanceCmd),
    /// Capacity providers.
    #[command(subcommand, name = "capacity-provider")]
    CapacityProvider(commands::CapacityProviderCmd),
    /// Target groups.
    #[command(subcommand, name = "targetgroup")]
    TargetGroup(commands::TargetGroupCmd),
    /// Listeners.
    #[command(subcommand)]
    Listener(commands::ListenerCmd),
    /// Secrets containers get as environment variables (`secrets[].valueFrom`).
    #[command(subcommand)]
    Secret(commands::SecretCmd),
    /// ECS account settings Capstan honours (defaultLogDriverMode).
    #[command(subcommand, name = "account-setting")]
    AccountSetting(commands::AccountSettingCmd),
    /// Start a local control plane: etcd, the API, the controllers, agents and HAProxy.
    Dev(dev::DevArgs),
    /// The cluster's certificates: a CA, and one certificate per component.
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// Identities and permissions: tokens, policies, groups, who you are.
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// etcd: per-component users and roles.
    #[command(subcommand)]
    Etcd(etcd::EtcdCmd),
    /// Webhook signing: the secret a hook receiver checks `X-Capstan-Signature` with.
    #[command(subcommand)]
    Webhook(auth::WebhookCmd),
}

/// Connection settings for the API.
#[derive(Debug, Clone)]
pub struct Conn {
    endpoint: String,
    tls: Option<TlsFiles>,
    token: Option<String>,
}

impl Conn {
    /// From the command line.
    pub fn from_cli(cli: &Cli) -> Self {
        let tls = cli.tls.files();
        Self {
            endpoint: cli.endpoint.clone(),
            tls,
            token: cli.token.clone(),
        }
    }

    /// A client of the API.
    pub async fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(self.clients().await?.0)
    }

    /// A client of the Iam service.
    pub async fn iam(&self) -> anyhow::Result<IamApiClient> {
        Ok(self.clients().await?.1)
    }

    async fn clients(&self) -> anyhow::Result<(ApiClient, IamApiClient)> {
        let creds = Credentials::bearer(self.token.as_deref())
            .map_err(|e| anyhow::anyhow!("--token / CAPSTAN_TOKEN: {e}"))?;
        Ok(capstan_proto::auth::clients(self.channel().await?, creds))
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        capstan_proto::tls::connect(&self.endpoint, self.tls.as_ref())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the Capstan API at {}: {e}. Is `capstan dev` or capstan-api running? Set --endpoint or CAPSTAN_ENDPOINT.",
                    self.endpoint
                )
            })
    }
}

/// Turns an API status into an error whose message is the API's (`ExceptionName: what to fix`).
pub fn api_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let conn = Conn::from_cli(&cli);
    let out = cli.output;
    let cluster = cli.cluster.clone();
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Certs(c) => certs::run(c),
        Command::Auth(c) => auth::run(&conn, out, c).await,
        Command::Webhook(c) => auth::webhook(c),
        Command::Etcd(c) => etcd::run(c).await,
        Command::Deploy(args) => deploy::run(&conn, &cluster, out, args).await,
        Command::Cluster(c) => commands::cluster(&conn, out, c).await,
        Command::TaskDef(c) => commands::taskdef(&conn, out, c).await,
        Command::Service(c) => commands::service(&conn, &cluster, out, c).await,
        Command::Task(c) => commands::task(&conn, &cluster, out, c).await,
        Command::Instance(c) => commands::instance(&conn, &cluster, out, c).await,
        Command::CapacityProvider(c) => commands::capacity_provider(&conn, &cluster, out, c).await,
        Command::TargetGroup(c) => commands::target_group(&conn, out, c).await,
        Command::Listener(c) => commands::listener(&conn, out, c).await,
        Command::Secret(c) => commands::secret(&conn, out, c).await,
        Command::AccountSetting(c) => commands::account_setting(&conn, out, c).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        // clap's own checks (unique names, valid defaults) for every subcommand.
        super::Cli::command().debug_assert();
    }
}

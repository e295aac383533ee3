//! The scaler's flags.

use capstan_runtime::CommonArgs;

/// `capstan-scaler` arguments.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "capstan-scaler",
    version,
    about = "Capstan capacity-provider scaler"
)]
pub struct ScalerArgs {
    /// Shared flags (etcd, prefix, election, admin server, logs).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Mutual TLS to node-group providers (never plain text once set).
    #[command(flatten)]
    pub tls: capstan_proto::tls::TlsArgs,
    /// How often each provider is evaluated (ECS: every minute), besides on every change.
    #[arg(long, env = "CAPSTAN_SCALER_INTERVAL", default_value = "10s")]
    pub interval: humantime::Duration,
}

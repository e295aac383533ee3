//! Command-line arguments every Capstan binary shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use capstan_store::{EtcdTls, StoreConfig};

use crate::telemetry::LogFormat;

/// Default etcd endpoint.
pub const ETCD_ENDPOINTS_DEFAULT: &str = "http://127.0.0.1:2379";
/// Default election TTL, seconds.
pub const ELECTION_TTL_DEFAULT: u64 = 5;

/// How to reach etcd: endpoints, the installation's prefix, TLS and auth. Every binary that
/// talks to etcd flattens it.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("etcd_secret").args(["etcd_password", "etcd_password_file"])))]
pub struct StoreArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "CAPSTAN_ETCD_ENDPOINTS", default_value = ETCD_ENDPOINTS_DEFAULT, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this installation; several installations can share one etcd.
    #[arg(long, env = "CAPSTAN_PREFIX", default_value = capstan_core::keys::DEFAULT_PREFIX)]
    pub prefix: String,
    /// CA certificate that signed etcd's server certificates (enables TLS to etcd).
    #[arg(long, env = "CAPSTAN_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (mutual TLS).
    #[arg(long, env = "CAPSTAN_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd (mutual TLS).
    #[arg(long, env = "CAPSTAN_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name (etcd auth; `capstan etcd setup-auth` makes one per component).
    #[arg(long, env = "CAPSTAN_ETCD_USER", requires = "etcd_secret")]
    pub etcd_user: Option<String>,
    /// etcd password (etcd auth).
    #[arg(
        long,
        env = "CAPSTAN_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user",
        conflicts_with = "etcd_password_file"
    )]
    pub etcd_password: Option<String>,
    /// A file holding the etcd password (what `capstan etcd setup-auth` writes).
    #[arg(long, env = "CAPSTAN_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store configuration these arguments describe.
    pub fn store_config(&self) -> StoreConfig {
        let mut cfg = StoreConfig::new(self.etcd_endpoints.clone(), &self.prefix);
        if let (Some(u), Some(p)) = (&self.etcd_user, &self.etcd_password) {
            cfg.credentials = Some((u.clone(), p.clone()));
        }
        if let (Some(u), None, Some(f)) = (
            &self.etcd_user,
            &self.etcd_password,
            &self.etcd_password_file,
        ) {
            cfg.password_file = Some((u.clone(), f.clone()));
        }
        if self.etcd_ca.is_some() || self.etcd_cert.is_some() {
            cfg.tls = Some(EtcdTls {
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            });
        }
        cfg
    }
}

/// Leader election: a controller's replicas campaign; the API and agents do not.
#[derive(Debug, Clone, clap::Args)]
pub struct ElectionArgs {
    /// Leader election lease TTL in whole seconds (at least 2).
    #[arg(long, env = "CAPSTAN_ELECTION_TTL", default_value_t = ELECTION_TTL_DEFAULT, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub election_ttl: u64,
    /// Replica identity, stored in the election value; default `<hostname>-<pid>`.
    #[arg(long, env = "CAPSTAN_ID")]
    pub id: Option<String>,
}

impl ElectionArgs {
    /// This replica's identity.
    pub fn replica_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "capstan".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The election TTL.
    pub fn election_ttl(&self) -> Duration {
        Duration::from_secs(self.election_ttl)
    }
}

/// The admin server (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin server (/metrics, /healthz, /readyz); port 0 picks a free port.
    #[arg(long, env = "CAPSTAN_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,
}

/// Logging.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "CAPSTAN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// What every controller takes: etcd, election, admin server and logs. A binary that does not
/// campaign (the API, an agent) flattens only the groups it uses.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// etcd.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Leader election.
    #[command(flatten)]
    pub election: ElectionArgs,
    /// Admin server.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Logs.
    #[command(flatten)]
    pub log: LogArgs,
}

impl CommonArgs {
    /// The store configuration.
    pub fn store_config(&self) -> StoreConfig {
        self.store.store_config()
    }

    /// The election TTL.
    pub fn election_ttl(&self) -> Duration {
        self.election.election_ttl()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults_and_lists_parse() {
        let a = Args::try_parse_from(["x"]).expect("defaults");
        assert_eq!(a.common.store.etcd_endpoints, vec![ETCD_ENDPOINTS_DEFAULT]);
        assert_eq!(a.common.store.prefix, "/capstan");
        assert_eq!(a.common.election.election_ttl, 5);
        let a = Args::try_parse_from([
            "x",
            "--etcd-endpoints",
            "http://a:1,http://b:2",
            "--election-ttl",
            "2",
            "--id",
            "r1",
        ])
        .expect("parses");
        assert_eq!(
            a.common.store.etcd_endpoints,
            vec!["http://a:1", "http://b:2"]
        );
        assert_eq!(a.common.election.replica_id(), "r1");
        assert!(a.common.store_config().tls.is_none());
        assert!(Args::try_parse_from(["x", "--election-ttl", "1"]).is_err());
        assert!(Args::try_parse_from(["x", "--etcd-user", "u"]).is_err());
    }

    #[derive(Parser)]
    struct ApiLike {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        admin: AdminArgs,
    }

    #[test]
    fn a_binary_that_does_not_campaign_takes_no_election_flags() {
        let a = ApiLike::try_parse_from(["x", "--prefix", "/p"]).expect("parses");
        assert_eq!(a.store.store_config().prefix, "/p");
        assert_eq!(a.admin.admin_addr.ip().to_string(), "127.0.0.1");
        assert!(ApiLike::try_parse_from(["x", "--election-ttl", "3"]).is_err());
    }
}

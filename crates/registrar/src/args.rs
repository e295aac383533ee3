//! The registrar's flags.

use std::path::PathBuf;

use capstan_runtime::CommonArgs;

/// Command-line arguments of `capstan-registrar`.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-registrar", version)]
pub struct RegistrarArgs {
    /// etcd, prefix, admin address, election and logging.
    #[command(flatten)]
    pub common: CommonArgs,
    /// HAProxy binary every replica runs as this host's data plane.
    #[arg(long, env = "CAPSTAN_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Directory for HAProxy's configuration, map and admin socket; a temporary one by default.
    #[arg(long, env = "CAPSTAN_HAPROXY_DIR")]
    pub haproxy_dir: Option<PathBuf>,
    /// Address this host's HAProxy binds listeners on that name no `bindAddress` (loopback
    /// unless asked: a load-balancer host passes its own, or 0.0.0.0).
    #[arg(long, env = "CAPSTAN_LISTEN_ADDRESS", default_value = "127.0.0.1")]
    pub listen_address: std::net::IpAddr,
    /// Run without a data plane (health checks and status only).
    #[arg(long, env = "CAPSTAN_NO_DATA_PLANE")]
    pub no_data_plane: bool,
    /// Stop the HAProxy this registrar runs when it exits (`capstan dev`); by default HAProxy
    /// keeps serving across a registrar restart.
    #[arg(long, env = "CAPSTAN_STOP_HAPROXY_ON_EXIT")]
    pub stop_haproxy_on_exit: bool,
    /// Drive an HAProxy that runs already, through this admin-level stats socket, instead of
    /// starting one (its configuration must have `fe_<listener>` / `be_<group>` as Capstan
    /// renders them).
    #[arg(long, env = "CAPSTAN_HAPROXY_SOCKET", requires = "haproxy_map")]
    pub haproxy_socket: Option<PathBuf>,
    /// With --haproxy-socket: the map file its frontends route by.
    #[arg(long, env = "CAPSTAN_HAPROXY_MAP", requires = "haproxy_socket")]
    pub haproxy_map: Option<PathBuf>,
}

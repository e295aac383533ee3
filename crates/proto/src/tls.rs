//! Mutual TLS between controllers and agents: servers demand a client certificate signed by the
//! cluster CA; clients present theirs and verify the server against the same CA.

use std::path::{Path, PathBuf};

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// Certificate, key and CA files in PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This side's certificate.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
    /// The cluster CA that signs both sides.
    pub ca: PathBuf,
}

/// This component's identity for mutual TLS, one flag group for every binary: its certificate
/// and key, and the cluster CA that signs every peer. All three or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Certificate (PEM) this component presents; with --tls-key and --tls-ca turns on mutual
    /// TLS: peers without a certificate from the CA are refused, and nothing speaks plain text.
    #[arg(long, global = true, env = "CAPSTAN_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "CAPSTAN_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM) that signed every peer's certificate.
    #[arg(long, global = true, env = "CAPSTAN_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when mutual TLS is configured.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }
}

/// Why TLS could not be set up, or a connection made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the configuration or the endpoint.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS is configured and the endpoint is not `https://`: tonic picks TLS by scheme, so it
    /// would be dialled in plain text.
    #[error("TLS is configured and {endpoint} is not https://: plain text refused")]
    PlainText {
        /// The endpoint.
        endpoint: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsFiles {
    /// Server config that refuses clients without a certificate signed by the CA.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }

    /// Client config presenting this side's certificate.
    pub fn client(&self) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }
}

/// gRPC channels by endpoint, one each, connected lazily with this component's TLS identity.
/// With TLS configured, an `http://` endpoint is refused, never dialled in plain text.
pub struct Channels {
    channels: std::sync::Mutex<std::collections::HashMap<String, Channel>>,
    tls: Option<TlsFiles>,
}

impl Channels {
    /// A pool; with `tls`, every channel uses mutual TLS.
    pub fn new(tls: Option<TlsFiles>) -> Self {
        Self {
            channels: std::sync::Mutex::default(),
            tls,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The channel to `endpoint`.
    pub fn get(&self, endpoint: &str) -> Result<Channel, TlsError> {
        if let Some(c) = self.lock().get(endpoint) {
            return Ok(c.clone());
        }
        let mut ep = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            if !endpoint.starts_with("https://") {
                return Err(TlsError::PlainText {
                    endpoint: endpoint.to_string(),
                });
            }
            ep = ep.tls_config(tls.client()?)?;
        }
        let channel = ep.connect_lazy();
        self.lock().insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// Drops the channel to `endpoint`: the next call connects anew.
    pub fn forget(&self, endpoint: &str) {
        self.lock().remove(endpoint);
    }
}

/// Connects to a gRPC endpoint (`http://host:port` or, with TLS, `https://host:port`).
pub async fn connect(endpoint: &str, tls: Option<&TlsFiles>) -> Result<Channel, TlsError> {
    let mut ep = Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls.client()?)?;
    }
    Ok(ep.connect().await?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[tokio::test]
    async fn with_tls_configured_a_plain_text_endpoint_is_refused() {
        let tls = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: "/nonexistent/ca.pem".into(),
        };
        let e = Channels::new(Some(tls))
            .get("http://127.0.0.1:1")
            .expect_err("plain text must be refused");
        assert!(e.to_string().contains("plain text refused"), "{e}");
        // Without TLS the same endpoint is an ordinary (lazy) plain-text channel.
        assert!(Channels::new(None).get("http://127.0.0.1:1").is_ok());
    }

    #[test]
    fn tls_is_all_three_files_or_none() {
        let none = Args::try_parse_from(["x"]).expect("no TLS");
        assert!(none.tls.files().is_none());
        let all = Args::try_parse_from([
            "x",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
        ])
        .expect("mutual TLS");
        let f = all.tls.files().expect("files");
        assert_eq!(
            (f.cert.to_str(), f.key.to_str(), f.ca.to_str()),
            (Some("c.pem"), Some("k.pem"), Some("ca.pem"))
        );
        assert!(Args::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
        assert!(Args::try_parse_from(["x", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_err());
    }
}

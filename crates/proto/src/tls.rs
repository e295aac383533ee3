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

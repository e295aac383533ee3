//! A throwaway PKI for mutual-TLS tests: a CA, a server certificate for `localhost`/`127.0.0.1`,
//! a client certificate, and a client certificate from another CA (which must be refused).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Certificates and keys as PEM files in a temporary directory: `ca.pem`, `server.pem`/`.key`,
/// `client.pem`/`.key`, `rogue.pem`/`.key`.
pub struct Pki {
    dir: tempfile::TempDir,
}

/// Why the PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating or signing.
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing the files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Pki {
    /// Makes a fresh CA and its certificates.
    pub fn new() -> Result<Self, PkiError> {
        let dir = tempfile::tempdir()?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem())?;
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", vec!["client".to_string()]),
        ] {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(sans)?.signed_by(&key, &issuer)?;
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem())?;
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())?;
        }
        let rogue_key = KeyPair::generate()?;
        let mut rogue_params = CertificateParams::new(Vec::<String>::new())?;
        rogue_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let rogue_issuer = Issuer::new(rogue_params, rogue_key);
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(vec!["intruder".to_string()])?.signed_by(&key, &rogue_issuer)?;
        std::fs::write(dir.path().join("rogue.pem"), cert.pem())?;
        std::fs::write(dir.path().join("rogue.key"), key.serialize_pem())?;
        Ok(Self { dir })
    }

    /// The path of one of its files, as a string for command lines.
    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// The path of one of its files.
    pub fn file(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }
}

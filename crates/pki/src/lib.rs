//! Capstan's cluster PKI, behind `capstan certs`: one cluster CA, and for each component a
//! certificate naming every host (DNS name or address) it is reached by. Every certificate is
//! good for both ends of mutual TLS (server and client authentication), since each component
//! serves some peers and calls others. Keys are written readable by their owner only.
//!
//! Files in a PKI directory: `ca.pem` and `ca.key` (the CA), `<name>.pem` and `<name>.key` per
//! component. Issuing a name again replaces its files (rotation); the CA is never replaced.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use x509_parser::extensions::GeneralName;

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";
/// How long the CA is valid.
pub const CA_DAYS: i64 = 3650;
/// How long a component certificate is valid by default.
pub const DEFAULT_DAYS: i64 = 365;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating, signing or parsing a key or certificate.
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `init` on a directory that has a CA already.
    #[error(
        "{0} exists: a cluster CA is never replaced (every certificate it signed would stop working)"
    )]
    CaExists(PathBuf),
    /// A name that cannot be a file name or a certificate's common name.
    #[error("{0:?} is not a component name: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    /// A certificate that does not parse.
    #[error("{path}: not a PEM certificate: {reason}")]
    BadCertificate {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// A component certificate with no host to name.
    #[error("a certificate needs at least one host (--host) it is reached by")]
    NoHosts,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `text` to `path`, readable by its owner only when `secret`.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A minute back, so that a peer whose clock is slightly behind accepts it at once.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days);
}

/// A cluster CA that can issue component certificates.
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// The files one `issue` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Ca {
    /// Creates a new CA named `name` in `dir` (created if missing); refuses if one exists.
    pub fn create(dir: &Path, name: &str) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT);
        if cert_path.exists() || dir.join(CA_KEY).exists() {
            return Err(PkiError::CaExists(cert_path));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key)?;
        write(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p).map_err(io(&p))
        };
        let key = KeyPair::from_pem(&read(CA_KEY)?)?;
        let issuer = Issuer::from_ca_cert_pem(&read(CA_CERT)?, key)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            issuer,
        })
    }

    /// Issues `<name>.pem`/`<name>.key` in the CA's directory for a component reached as each
    /// of `hosts` (DNS names or addresses), valid for `days`. Replaces an earlier one.
    pub fn issue(&self, name: &str, hosts: &[String], days: i64) -> Result<Issued, PkiError> {
        self.issue_for(name, hosts, None, days)
    }

    /// [`Ca::issue`], naming `principal` (a `capstan://…` URI) in a URI SAN: the identity the
    /// API and agents authorize. A certificate with a principal may name no host (a user's).
    pub fn issue_for(
        &self,
        name: &str,
        hosts: &[String],
        principal: Option<&str>,
        days: i64,
    ) -> Result<Issued, PkiError> {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(PkiError::BadName(name.to_string()));
        }
        if hosts.is_empty() && principal.is_none() {
            return Err(PkiError::NoHosts);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        if let Some(p) = principal {
            let uri = rcgen::string::Ia5String::try_from(p)
                .map_err(|_| PkiError::BadName(p.to_string()))?;
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        write(&issued.key, &key.serialize_pem(), true)?;
        write(&issued.cert, &cert.pem(), false)?;
        Ok(issued)
    }
}

/// The hosts a PEM certificate names (its subject alternative names: DNS names, addresses).
pub fn names(pem: &[u8], path: &str) -> Result<Vec<String>, PkiError> {
    let bad = |reason: String| PkiError::BadCertificate {
        path: path.to_string(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Who a DER certificate says its holder is: its subject CN and its URI SANs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The subject's common name.
    pub common_name: Option<String>,
    /// URI subject alternative names (`capstan://…` principals among them).
    pub uris: Vec<String>,
}

/// The [`Identity`] of a DER certificate, as TLS peers present them.
pub fn identity(der: &[u8]) -> Result<Identity, PkiError> {
    let bad = |reason: String| PkiError::BadCertificate {
        path: "peer certificate".into(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?;
    let uris = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity { common_name, uris })
}

/// Whether `names` (from [`names`]) cover `host`: an address matches an address entry, a name
/// matches the same name (case aside) or a `*.` wildcard one label deep.
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return names.iter().any(|n| n.parse::<IpAddr>() == Ok(ip));
    }
    let host = host.to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => n == host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_hosts_as_tls_checks_them() {
        let names: Vec<String> = ["agent-1.lan", "*.agents.lan", "10.0.0.7", "fd00::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (host, want) in [
            ("agent-1.lan", true),
            ("AGENT-1.lan", true),
            ("b.agents.lan", true),
            ("a.b.agents.lan", false),
            ("agents.lan", false),
            ("10.0.0.7", true),
            ("10.0.0.8", false),
            ("[fd00::1]", true),
            ("fd00:0::1", true),
            ("agent-2.lan", false),
        ] {
            assert_eq!(covers(&names, host), want, "{host}");
        }
    }
}

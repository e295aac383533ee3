//! A throwaway PKI for mutual-TLS tests, made with `capstan-pki` (what `capstan certs` uses): a
//! CA, a server certificate for `localhost`/`127.0.0.1`, a client certificate, and a client
//! certificate from another CA (which must be refused).

use capstan_pki::{Ca, PkiError};

/// Certificates and keys as PEM files in a temporary directory: `ca.pem`, `server.pem`/`.key`,
/// `client.pem`/`.key`, `rogue.pem`/`.key`.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes a fresh CA and its certificates.
    pub fn new() -> Result<Self, PkiError> {
        let dir = tempfile::tempdir().map_err(|source| PkiError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let ca = Ca::create(dir.path(), "capstan test CA")?;
        ca.issue("server", &["localhost".into(), "127.0.0.1".into()], 1)?;
        ca.issue("client", &["client".into()], 1)?;
        // The same names from a CA nobody trusts.
        let rogue_dir = dir.path().join("rogue-ca");
        let rogue = Ca::create(&rogue_dir, "rogue CA")?.issue("rogue", &["intruder".into()], 1)?;
        for (from, to) in [(&rogue.cert, "rogue.pem"), (&rogue.key, "rogue.key")] {
            let to = dir.path().join(to);
            std::fs::copy(from, &to).map_err(|source| PkiError::Io { path: to, source })?;
        }
        Ok(Self { dir })
    }

    /// Issues `<name>.pem`/`<name>.key` from the same CA for `hosts`.
    pub fn issue(&self, name: &str, hosts: &[&str]) -> Result<(), PkiError> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Ca::load(self.dir.path())?.issue(name, &hosts, 1)?;
        Ok(())
    }

    /// Issues `<name>.pem`/`<name>.key` authenticating as `principal` (a URI SAN).
    pub fn issue_for(&self, name: &str, hosts: &[&str], principal: &str) -> Result<(), PkiError> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Ca::load(self.dir.path())?.issue_for(name, &hosts, Some(principal), 1)?;
        Ok(())
    }

    /// The TLS identity `<who>.pem`/`<who>.key` with the CA.
    pub fn files(&self, who: &str) -> capstan_proto::tls::TlsFiles {
        capstan_proto::tls::TlsFiles {
            cert: self.file(&format!("{who}.pem")),
            key: self.file(&format!("{who}.key")),
            ca: self.file("ca.pem"),
        }
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

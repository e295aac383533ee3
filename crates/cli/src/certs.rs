//! `capstan certs`: the cluster's PKI on disk (see `capstan-pki`). `init` makes the cluster CA
//! once; `issue` gives a component a certificate naming every host it is reached by, and
//! re-issuing replaces it (rotation: restart the component to load it); `encryption-key` makes
//! the key secrets and access keys are sealed with, once (replacing it would lose them all).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use capstan_pki::{Ca, DEFAULT_DAYS};
use clap::Subcommand;

/// `capstan certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// Create the cluster CA (`ca.pem`, `ca.key`) in DIR; never replaces one.
    Init {
        /// The PKI directory.
        #[arg(long, env = "CAPSTAN_PKI_DIR", default_value = "/etc/capstan/pki")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Capstan cluster CA")]
        name: String,
    },
    /// Issue NAME.pem and NAME.key, signed by the CA in DIR, for a component reached as each
    /// --host (DNS name or address). Good for both server and client authentication.
    Issue {
        /// The PKI directory.
        #[arg(long, env = "CAPSTAN_PKI_DIR", default_value = "/etc/capstan/pki")]
        dir: PathBuf,
        /// Component name: the files' name and the certificate's common name.
        name: String,
        /// A host the component is reached by (repeatable; at least one unless --principal).
        #[arg(long = "host", required_unless_present = "principal")]
        hosts: Vec<String>,
        /// The principal the certificate authenticates as, e.g. capstan://user/alice or
        /// capstan://component/scheduler (a URI SAN); without it, a user named by NAME.
        #[arg(long)]
        principal: Option<String>,
        /// Days of validity.
        #[arg(long, default_value_t = DEFAULT_DAYS)]
        days: i64,
    },
    /// Create DIR/encryption.key (mode 0600), the key the API and agents are given with
    /// --encryption-key-file; never replaces one.
    EncryptionKey {
        /// The PKI directory.
        #[arg(long, env = "CAPSTAN_PKI_DIR", default_value = "/etc/capstan/pki")]
        dir: PathBuf,
    },
}

/// The encryption key's file name in a PKI directory.
pub const ENCRYPTION_KEY_FILE: &str = "encryption.key";

/// Writes `text` to `file`, readable by its owner only.
pub fn write_private(file: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("writing {}", file.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(())
}

/// `dir`'s encryption key file, created when there is none: (its path, whether it is new).
pub fn encryption_key(dir: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let file = dir.join(ENCRYPTION_KEY_FILE);
    if file.exists() {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        capstan_iam::SealingKey::from_file_bytes(&bytes)
            .with_context(|| format!("{} is not an encryption key", file.display()))?;
        return Ok((file, false));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = capstan_iam::SealingKey::generate(&ring::rand::SystemRandom::new())?;
    write_private(&file, &text)?;
    Ok((file, true))
}

/// Runs a `certs` command.
pub fn run(cmd: CertsCmd) -> anyhow::Result<i32> {
    match cmd {
        CertsCmd::Init { dir, name } => {
            Ca::create(&dir, &name).context("capstan certs init")?;
            println!(
                "created the cluster CA: {}",
                dir.join(capstan_pki::CA_CERT).display()
            );
        }
        CertsCmd::Issue {
            dir,
            name,
            hosts,
            principal,
            days,
        } => {
            if let Some(p) = &principal {
                capstan_iam::Principal::parse(p).context("capstan certs issue --principal")?;
            }
            let ca = Ca::load(&dir).with_context(|| {
                format!(
                    "loading the CA in {} (run `capstan certs init`)",
                    dir.display()
                )
            })?;
            let issued = ca
                .issue_for(&name, &hosts, principal.as_deref(), days)
                .context("capstan certs issue")?;
            let who = principal.unwrap_or_else(|| format!("capstan://user/{name}"));
            println!(
                "issued {} and {} for {} as {who}",
                issued.cert.display(),
                issued.key.display(),
                if hosts.is_empty() {
                    "no host".to_string()
                } else {
                    hosts.join(", ")
                }
            );
        }
        CertsCmd::EncryptionKey { dir } => {
            let (file, new) = encryption_key(&dir).context("capstan certs encryption-key")?;
            if new {
                println!("created the encryption key: {}", file.display());
            } else {
                println!("kept the encryption key there is: {}", file.display());
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_encryption_key_is_made_once_private_and_never_replaced() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (file, new) = encryption_key(dir.path()).expect("a new key");
        assert!(new);
        let first = std::fs::read(&file).expect("the key file");
        capstan_iam::SealingKey::from_file_bytes(&first).expect("a key the API can load");
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let (again, new) = encryption_key(dir.path()).expect("the same key");
        assert!(!new);
        assert_eq!(again, file);
        assert_eq!(std::fs::read(&file).expect("the key file"), first);

        std::fs::write(&file, "not a key\n").expect("overwrite");
        let err = encryption_key(dir.path()).expect_err("a file that is no key is refused");
        assert!(
            format!("{err:#}").contains("is not an encryption key"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&file).expect("the file"), b"not a key\n");
    }
}

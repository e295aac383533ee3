//! `capstan certs`: the cluster's PKI on disk (see `capstan-pki`). `init` makes the cluster CA
//! once; `issue` gives a component a certificate naming every host it is reached by, and
//! re-issuing replaces it (rotation: restart the component to load it).

use std::path::PathBuf;

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
    }
    Ok(0)
}

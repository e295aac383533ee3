//! `capstan etcd setup-auth`: etcd auth with one role and user per component, each limited to
//! the key prefixes it owns (`capstan_core::Keys::roles`, the table in docs/security.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use ring::rand::{SecureRandom, SystemRandom};

/// `capstan etcd …`.
#[derive(Debug, Subcommand)]
pub enum EtcdCmd {
    /// Turn etcd auth on: a role and a user per component (capstan-api, capstan-scheduler, …),
    /// each granted only its prefixes, and root. Passwords go to OUT/<user>.password (0600).
    SetupAuth {
        /// etcd (reached without auth: this runs once, before auth is on).
        #[command(flatten)]
        store: capstan_runtime::StoreArgs,
        /// Where the password files are written.
        #[arg(long, default_value = "/etc/capstan/etcd")]
        out: PathBuf,
    },
}

fn password(rng: &SystemRandom) -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    rng.fill(&mut b)
        .map_err(|_| anyhow::anyhow!("no randomness for a password"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Runs a `capstan etcd` command.
pub async fn run(cmd: EtcdCmd) -> anyhow::Result<i32> {
    match cmd {
        EtcdCmd::SetupAuth { store, out } => {
            let cfg = store.store_config();
            let s = capstan_store::Store::connect(&cfg)
                .await
                .context("connecting to etcd")?;
            let roles = s.keys().roles();
            let rng = SystemRandom::new();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let root = password(&rng)?;
            let mut users = BTreeMap::new();
            for r in &roles {
                users.insert(r.name.clone(), password(&rng)?);
            }
            // Auth is turned on last, so a run that fails before leaves etcd open and a later run
            // sets every password again; the files are written once it worked.
            s.setup_auth(&roles, &users, &root)
                .await
                .context("capstan etcd setup-auth")?;
            crate::certs::write_private(&out.join("root.password"), &root)?;
            for (user, pw) in &users {
                crate::certs::write_private(&out.join(format!("{user}.password")), pw)?;
            }
            println!("etcd auth is on; passwords in {}:", out.display());
            for r in &roles {
                println!(
                    "  {:<20} writes {}",
                    r.name,
                    r.write
                        .iter()
                        .map(|w| w.trim_start_matches(cfg.prefix.as_str()))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            println!(
                "  {:<20} etcd's administrator (keep it off the cluster)",
                "root"
            );
        }
    }
    Ok(0)
}

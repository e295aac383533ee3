//! Injecting and healing one fault on the compose deployment (docker commands only).

use std::time::Duration;

use capstan_store::Store;

use crate::compose::{AGENT_HOSTS, Compose, ETCD_HOSTS, Error, LB_HOSTS};
use crate::faults::{Fault, Kind, Role};

/// The hosts a fault hits: the leader of its role now (or a replica by pick when none leads),
/// or a host of its kind by pick.
pub async fn targets(store: &Store, f: &Fault) -> Vec<String> {
    let replica = |r: Role| format!("{}-{}", r.name(), 1 + f.pick % 2);
    match f.kind {
        Kind::KillLeader(r) | Kind::StopLeader(r) | Kind::DisconnectController(r) => {
            vec![
                store
                    .leader(r.name())
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| replica(r)),
            ]
        }
        Kind::KillAgent | Kind::DisconnectAgent => {
            vec![AGENT_HOSTS[f.pick % AGENT_HOSTS.len()].to_string()]
        }
        Kind::StopEtcdMember => vec![ETCD_HOSTS[f.pick % ETCD_HOSTS.len()].to_string()],
        Kind::PauseEtcdMajority => (0..2)
            .map(|i| ETCD_HOSTS[(f.pick + i) % ETCD_HOSTS.len()].to_string())
            .collect(),
        Kind::KillLb => vec![LB_HOSTS[f.pick % LB_HOSTS.len()].to_string()],
    }
}

/// Injects `kind` on `hosts`.
pub async fn inject(c: &Compose, kind: Kind, hosts: &[String]) -> Result<(), Error> {
    let containers: Vec<String> = hosts.iter().map(|h| c.container(h)).collect();
    let refs: Vec<&str> = containers.iter().map(String::as_str).collect();
    let net = c.network();
    match kind {
        Kind::KillLeader(_) | Kind::KillAgent | Kind::KillLb => {
            c.docker(&[&["kill", "--signal", "KILL"], refs.as_slice()].concat())
                .await?;
        }
        Kind::StopLeader(_) => {
            c.docker(&[&["kill", "--signal", "STOP"], refs.as_slice()].concat())
                .await?;
        }
        Kind::DisconnectAgent | Kind::DisconnectController(_) => {
            for ct in &refs {
                c.docker(&["network", "disconnect", &net, ct]).await?;
            }
        }
        Kind::StopEtcdMember => {
            c.docker(&[&["stop", "--time", "1"], refs.as_slice()].concat())
                .await?;
        }
        Kind::PauseEtcdMajority => {
            c.docker(&[&["pause"], refs.as_slice()].concat()).await?;
        }
    }
    Ok(())
}

/// Heals `kind` on `hosts`, trying a few times: a fault left in place would fail the rest of
/// the soak for the wrong reason.
pub async fn heal(c: &Compose, kind: Kind, hosts: &[String]) -> Result<(), Error> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = heal_once(c, kind, hosts).await;
        if last.is_ok() {
            return last;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    last
}

async fn heal_once(c: &Compose, kind: Kind, hosts: &[String]) -> Result<(), Error> {
    let net = c.network();
    for h in hosts {
        let ct = c.container(h);
        match kind {
            Kind::KillLeader(_) | Kind::KillAgent | Kind::KillLb | Kind::StopEtcdMember => {
                c.docker(&["start", &ct]).await?;
            }
            Kind::StopLeader(_) => {
                c.docker(&["kill", "--signal", "CONT", &ct]).await?;
            }
            Kind::DisconnectAgent | Kind::DisconnectController(_) => {
                let ip = c.address(h).unwrap_or_default();
                // Already connected (a retry after a partial success) is healed.
                let on = c
                    .docker(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", &ct])
                    .await?;
                if !on.contains(&net) {
                    c.docker(&["network", "connect", "--ip", &ip, &net, &ct])
                        .await?;
                }
            }
            Kind::PauseEtcdMajority => {
                let state = c
                    .docker(&["inspect", "-f", "{{.State.Paused}}", &ct])
                    .await?;
                if state.trim() == "true" {
                    c.docker(&["unpause", &ct]).await?;
                }
            }
        }
    }
    Ok(())
}

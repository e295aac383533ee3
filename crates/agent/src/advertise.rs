//! The address an agent registers for controllers to dial. An agent listening on every address
//! (`0.0.0.0`, `::`) with no `--advertise` advertises the address it reaches etcd from (the
//! controllers reach etcd too, so they share a network with that address); when that is
//! loopback, it refuses to start rather than register `127.0.0.1`, which controllers on other
//! hosts would dial as their own loopback. With TLS, the agent's certificate must name the host
//! it advertises, since controllers check it against that name: one that does not is refused at
//! start, with what to issue instead.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

/// Why the agent cannot say where it is reached.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvertiseError {
    /// Listening everywhere and the only address found is loopback.
    #[error(
        "listening on {listen} (every address) with no --advertise, and the way to etcd leaves \
         by {found}: pass --advertise HOST:PORT with an address the controllers can reach"
    )]
    Loopback {
        /// The bound address.
        listen: SocketAddr,
        /// What the route to etcd gave (loopback or none).
        found: String,
    },
    /// `--advertise` is not `HOST:PORT`.
    #[error("--advertise {0:?}: expected HOST:PORT (a host name or address and a port)")]
    Malformed(String),
    /// The TLS certificate does not name the advertised host.
    #[error(
        "{cert} names {names:?}, not {host}, the host this agent advertises: controllers would \
         refuse it; issue one with `capstan certs issue <name> --host {host}`"
    )]
    NotInCertificate {
        /// The certificate file.
        cert: String,
        /// The advertised host.
        host: String,
        /// What the certificate names.
        names: Vec<String>,
    },
    /// The TLS certificate cannot be read.
    #[error("{0}")]
    Certificate(String),
    /// No address to bind task ports to could be told.
    #[error(
        "cannot tell which address to bind task ports to from {0:?}: pass --task-bind-address (0.0.0.0 only if you mean every interface)"
    )]
    NoBindAddress(String),
}

/// The `host:port` to register. `outward` is the local address of the route toward etcd
/// ([`outward_ip`]); it is only consulted when `bound` is a wildcard and `advertise` is unset.
pub fn advertised(
    bound: SocketAddr,
    advertise: Option<&str>,
    outward: Option<IpAddr>,
) -> Result<String, AdvertiseError> {
    if let Some(a) = advertise {
        let port_ok = a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        return if port_ok {
            Ok(a.to_string())
        } else {
            Err(AdvertiseError::Malformed(a.to_string()))
        };
    }
    if !bound.ip().is_unspecified() {
        // A specific address: loopback here means only this host can call it anyway.
        return Ok(bound.to_string());
    }
    match outward {
        Some(ip) if !ip.is_loopback() && !ip.is_unspecified() => {
            Ok(SocketAddr::new(ip, bound.port()).to_string())
        }
        found => Err(AdvertiseError::Loopback {
            listen: bound,
            found: found.map_or_else(|| "no route".to_string(), |ip| ip.to_string()),
        }),
    }
}

/// The address task ports are bound to when `--task-bind-address` is not given: the advertised
/// host's address (peers reach tasks where they reach the agent), else the specific address the
/// agent listens on, else what the name resolves to, else `outward` (the address of the route
/// toward etcd). Never all interfaces: the operator must ask for that.
pub fn bind_address(
    advertised: &str,
    bound: SocketAddr,
    outward: Option<IpAddr>,
) -> Result<IpAddr, AdvertiseError> {
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised, |(h, _)| h)
        .trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.ip());
    }
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| !a.ip().is_unspecified()).map(|a| a.ip()))
        .or(outward.filter(|ip| !ip.is_unspecified()))
        .ok_or_else(|| AdvertiseError::NoBindAddress(advertised.to_string()))
}

/// Checks that the certificate at `cert` names the host of `advertised` (`HOST:PORT`).
pub fn check_certificate(cert: &Path, advertised: &str) -> Result<(), AdvertiseError> {
    let host = advertised.rsplit_once(':').map_or(advertised, |(h, _)| h);
    let path = cert.display().to_string();
    let pem =
        std::fs::read(cert).map_err(|e| AdvertiseError::Certificate(format!("{path}: {e}")))?;
    let names =
        capstan_pki::names(&pem, &path).map_err(|e| AdvertiseError::Certificate(e.to_string()))?;
    if capstan_pki::covers(&names, host) {
        Ok(())
    } else {
        Err(AdvertiseError::NotInCertificate {
            cert: path,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            names,
        })
    }
}

/// The local address this host uses toward the first etcd endpoint that resolves (a UDP
/// `connect` only picks a route; nothing is sent).
pub async fn outward_ip(etcd_endpoints: &[String]) -> Option<IpAddr> {
    for ep in etcd_endpoints {
        let hostport = ep.split_once("://").map_or(ep.as_str(), |(_, rest)| rest);
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        let Ok(addrs) = tokio::net::lookup_host(hostport).await else {
            continue;
        };
        for addr in addrs {
            let any: SocketAddr = if addr.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let Ok(sock) = UdpSocket::bind(any) else {
                continue;
            };
            if sock.connect(addr).is_ok()
                && let Ok(local) = sock.local_addr()
            {
                return Some(local.ip());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ports_bind_where_the_agent_is_reached_never_everywhere_by_default() {
        let any: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let out: IpAddr = "10.0.0.9".parse().expect("ip");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            bind_address("10.0.0.5:7000", any, None).ok(),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(
            bind_address("[fd00::5]:7000", any, None).ok(),
            Some(ip("fd00::5"))
        );
        assert_eq!(
            bind_address("127.0.0.1:7000", lo, None).ok(),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            bind_address("agent.invalid:7000", lo, None).ok(),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            bind_address("agent.invalid:7000", any, Some(out)).ok(),
            Some(out)
        );
        assert!(bind_address("agent.invalid:7000", any, None).is_err());
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn the_advertised_address_is_reachable_or_the_agent_refuses() {
        let lan: IpAddr = "10.0.0.7".parse().expect("ip");
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        // (bound, --advertise, route toward etcd, what is registered or None for a refusal)
        type Case<'a> = (&'a str, Option<&'a str>, Option<IpAddr>, Option<&'a str>);
        let cases: &[Case] = &[
            // --advertise wins, whatever is bound.
            (
                "0.0.0.0:7000",
                Some("agent-1.lan:7000"),
                Some(lo),
                Some("agent-1.lan:7000"),
            ),
            (
                "0.0.0.0:7000",
                Some("[fd00::1]:7000"),
                None,
                Some("[fd00::1]:7000"),
            ),
            ("0.0.0.0:7000", Some("agent-1.lan"), None, None),
            ("0.0.0.0:7000", Some(":7000"), None, None),
            ("0.0.0.0:7000", Some("h:0"), None, None),
            // A specific bound address is what it says.
            ("127.0.0.1:7000", None, None, Some("127.0.0.1:7000")),
            ("10.0.0.7:7000", None, Some(lo), Some("10.0.0.7:7000")),
            // Every address: the route toward etcd, never loopback.
            ("0.0.0.0:7000", None, Some(lan), Some("10.0.0.7:7000")),
            ("0.0.0.0:7000", None, Some(lo), None),
            ("0.0.0.0:7000", None, None, None),
            ("[::]:7000", None, Some("::1".parse().expect("ip")), None),
        ];
        for (bound, adv, out, want) in cases {
            let got = advertised(addr(bound), *adv, *out);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{bound} {adv:?} {out:?}"),
                None => assert!(got.is_err(), "{bound} {adv:?} {out:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_refusal_says_what_to_do() {
        let e = advertised(
            addr("0.0.0.0:7000"),
            None,
            Some("127.0.0.1".parse().expect("ip")),
        )
        .expect_err("loopback");
        assert!(e.to_string().contains("--advertise HOST:PORT"), "{e}");
    }

    #[tokio::test]
    async fn the_route_toward_a_loopback_etcd_is_loopback() {
        let ip = outward_ip(&["http://127.0.0.1:2379".into()]).await;
        assert_eq!(ip, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(
            outward_ip(&["http://no-such-host.invalid:2379".into()]).await,
            None
        );
    }
}

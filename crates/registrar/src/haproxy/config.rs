//! HAProxy's configuration and runtime answers, pure: backend names, the layout of listeners
//! and groups, the rendered configuration, the parsers of `show servers state` and `show stat`,
//! and the servers each backend should hold.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use capstan_core::lb::{Listener, TargetState};
use capstan_plan::targets::Tracked;

/// Whether `s` is safe inside HAProxy's configuration and runtime commands (a server name or
/// address): letters, digits and `-_.:`, at most 253. Everything the data plane is given passes
/// this, whatever the caller checked before.
pub fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Backend name of a target group.
pub fn backend(tg: &str) -> String {
    format!("be_{tg}")
}

/// Backend of a listener that forwards to several weighted target groups.
pub fn listener_backend(listener: &str) -> String {
    format!("bel_{listener}")
}

/// What HAProxy should serve: listeners by name, the target groups, and the listeners that
/// split traffic over several groups by weight (each gets a backend of its own).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Listener name → (bind address, port).
    pub listeners: BTreeMap<String, (String, u32)>,
    /// Target group names.
    pub groups: Vec<String>,
    /// Listeners with weighted target groups.
    pub weighted: Vec<String>,
}

impl Layout {
    /// The layout for these listeners and groups; a listener that names no `bindAddress`
    /// binds `host_address` (this load-balancer host's).
    pub fn new(listeners: &[(String, Listener)], groups: &[String], host_address: &str) -> Self {
        Self {
            listeners: listeners
                .iter()
                .filter(|(n, _)| safe(n))
                .map(|(n, l)| {
                    let addr = l.bind_address.as_deref().unwrap_or(host_address);
                    (n.clone(), (addr.to_string(), l.port))
                })
                .collect(),
            groups: groups.iter().filter(|g| safe(g)).cloned().collect(),
            weighted: Vec::new(),
        }
    }

    /// Every backend it has besides `be_none`.
    pub fn backends(&self) -> Vec<String> {
        self.groups
            .iter()
            .map(|g| backend(g))
            .chain(self.weighted.iter().map(|l| listener_backend(l)))
            .collect()
    }
}

/// A server to write into the configuration at a reload: (name, address, port, admin state,
/// weight).
pub type ServerLine = (String, String, u16, u32, u32);

/// The configuration for `layout`, with its socket and map under `dir`.
pub fn render(layout: &Layout, dir: &Path) -> String {
    render_with(layout, dir, &BTreeMap::new())
}

/// The configuration for `layout` with `servers` (by backend) already in it, so a reloaded
/// worker starts with the servers the runtime API had added: ready ones enabled, draining ones
/// at weight 0, the rest disabled.
pub fn render_with(
    layout: &Layout,
    dir: &Path,
    servers: &BTreeMap<String, Vec<ServerLine>>,
) -> String {
    let sock = dir.join("admin.sock");
    let map = dir.join("routes.map");
    let mut c = format!(
        "global\n    stats socket {} mode 600 level admin expose-fd listeners\n    stats timeout 30s\n\
         \x20   hard-stop-after 5m\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   option http-server-close\n    retries 3\n    option redispatch\n\
         \x20   retry-on conn-failure empty-response response-timeout\n\
         backend be_none\n    http-request return status 503 content-type text/plain string \"no route\"\n",
        sock.display()
    );
    for (name, (addr, port)) in &layout.listeners {
        c.push_str(&format!(
            "frontend fe_{name}\n    bind {addr}:{port}\n    use_backend %[str({name}),map({},be_none)]\n",
            map.display()
        ));
    }
    for be in layout.backends() {
        // A request a dying target dropped is sent again to another, but only when repeating
        // it is safe (ECS users expect a deploy or a host loss to fail no idempotent request).
        c.push_str(&format!(
            "backend {be}\n    balance roundrobin\n    http-request disable-l7-retry unless {{ method GET HEAD OPTIONS }}\n"
        ));
        for (name, addr, port, admin, weight) in servers.get(&be).into_iter().flatten() {
            let state = match admin {
                0 => format!(" weight {weight}"),
                a if a & 8 != 0 => " weight 0".to_string(),
                _ => format!(" weight {weight} disabled"),
            };
            c.push_str(&format!("    server {name} {addr}:{port}{state}\n"));
        }
    }
    c
}

/// A server as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Address.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// srv_admin_state: 0 ready, 1 maint (forced), 8 drain…
    pub admin_state: u32,
    /// User weight.
    pub weight: u32,
}

/// Parses `show servers state <backend>`.
pub fn parse_servers(out: &str) -> BTreeMap<String, Server> {
    out.lines()
        .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 18)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f[3].to_string(),
                Server {
                    addr: f[4].to_string(),
                    admin_state: f[6].parse().ok()?,
                    weight: f[7].parse().ok()?,
                    port: f[18].parse().ok()?,
                },
            ))
        })
        .collect()
}

/// Parses `show stat` CSV into current sessions per (backend, server).
pub fn parse_sessions(out: &str) -> HashMap<(String, String), u32> {
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                (f.first()?.to_string(), f.get(1)?.to_string()),
                f.get(4)?.parse().ok()?,
            ))
        })
        .collect()
}

/// One server a backend should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Server name (the task id).
    pub id: String,
    /// Address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The target's state.
    pub state: TargetState,
    /// HAProxy weight, 1–256.
    pub weight: u32,
}

/// Members of one group's own backend: every tracked target, at the weight `weight` gives it
/// (100, or less while slow start ramps it up).
pub fn group_members(
    tracked: &BTreeMap<String, Tracked>,
    weight: impl Fn(&Tracked) -> u32,
) -> Vec<Member> {
    tracked
        .iter()
        .filter(|(id, t)| safe(id) && safe(&t.status.host))
        .map(|(id, t)| Member {
            id: id.clone(),
            host: t.status.host.clone(),
            port: t.status.port,
            state: t.status.state,
            weight: weight(t).clamp(1, 256),
        })
        .collect()
}

/// Members of a weighted listener's backend: each group's targets, weighted so that the group's
/// healthy targets together take its share (`weight / total`) of the traffic.
/// `ramp(i, target)` is a target's own weight out of 100 in group `i` (slow start).
pub fn weighted_members(
    groups: &[(u32, &BTreeMap<String, Tracked>)],
    ramp: impl Fn(usize, &Tracked) -> u32 + Copy,
) -> Vec<Member> {
    let total: f64 = groups.iter().map(|(w, _)| f64::from(*w)).sum();
    let per_server: Vec<f64> = groups
        .iter()
        .map(|(w, tracked)| {
            let healthy = tracked
                .values()
                .filter(|t| t.status.state == TargetState::Healthy)
                .count()
                .max(1);
            f64::from(*w) / total.max(1.0) / healthy as f64
        })
        .collect();
    let top = per_server.iter().copied().fold(0.0, f64::max);
    groups
        .iter()
        .zip(per_server)
        .enumerate()
        .flat_map(|(i, ((_, tracked), share))| {
            let weight = if top > 0.0 {
                ((256.0 * share / top).round() as u32).clamp(1, 256)
            } else {
                1
            };
            // The group's share, scaled by each target's own (slow start) weight.
            group_members(tracked, move |t| (weight * ramp(i, t)).div_ceil(100).max(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_unsafe_reaches_the_configuration() {
        let listener: Listener = serde_json::from_value(serde_json::json!({
            "port": 80, "defaultActions": [{"type": "forward", "targetGroupArn": "ok"}]}))
        .expect("listener");
        let layout = Layout::new(
            &[
                ("ok".into(), listener.clone()),
                ("evil\nbackend x".into(), listener.clone()),
                ("a;b".into(), listener),
            ],
            &["ok".into(), "bad group".into(), "x\ny".into()],
            "127.0.0.1",
        );
        assert_eq!(layout.listeners.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(layout.groups, ["ok"]);
        let c = render(&layout, Path::new("/run/capstan"));
        assert!(!c.contains("evil") && !c.contains("bad group") && !c.contains("a;b"));
        for (s, ok) in [
            ("10.0.0.1", true),
            ("fd00::1", true),
            ("node-1.lan", true),
            ("a b", false),
            ("a\nb", false),
            ("a;b", false),
            ("", false),
        ] {
            assert_eq!(safe(s), ok, "{s:?}");
        }
    }

    #[test]
    fn config_has_a_frontend_per_listener_and_a_backend_per_group() {
        let layout = Layout {
            listeners: BTreeMap::from([("web".to_string(), ("127.0.0.1".to_string(), 8080))]),
            groups: vec!["web-blue".into(), "web-green".into()],
            weighted: vec!["canary".into()],
        };
        let c = render(&layout, Path::new("/run/capstan"));
        assert!(c.contains(
            "backend bel_canary\n    balance roundrobin\n    http-request disable-l7-retry"
        ));
        assert!(c.contains("stats socket /run/capstan/admin.sock mode 600 level admin"));
        assert!(c.contains("frontend fe_web\n    bind 127.0.0.1:8080\n"));
        assert!(c.contains("use_backend %[str(web),map(/run/capstan/routes.map,be_none)]"));
        assert!(c.contains(
            "backend be_web-blue\n    balance roundrobin\n    http-request disable-l7-retry"
        ));
        assert!(c.contains("backend be_web-green\n"));
    }

    #[test]
    fn runtime_answers_parse() {
        let state = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
             4 be_app 1 a1 127.0.0.1 2 8 1 1 0 1 0 0 0 0 0 0 - 18081 - 0 0 - - 0\n";
        let s = parse_servers(state);
        assert_eq!(
            s.get("a1"),
            Some(&Server {
                addr: "127.0.0.1".into(),
                port: 18081,
                admin_state: 8,
                weight: 1,
            })
        );
        let stat =
            "# pxname,svname,qcur,qmax,scur,smax\nbe_app,a1,0,0,3,5\nbe_app,BACKEND,0,0,3,5\n";
        assert_eq!(
            parse_sessions(stat).get(&("be_app".into(), "a1".into())),
            Some(&3)
        );
    }

    #[test]
    fn weighted_members_split_traffic_by_group_weight_not_group_size() {
        use capstan_core::lb::TargetStatus;
        let group = |ids: &[&str]| -> BTreeMap<String, Tracked> {
            ids.iter()
                .map(|id| {
                    (
                        id.to_string(),
                        Tracked {
                            status: TargetStatus {
                                task_id: id.to_string(),
                                host: "127.0.0.1".into(),
                                port: 8080,
                                state: TargetState::Healthy,
                                ..Default::default()
                            },
                            passes: 1,
                            fails: 0,
                            draining_since: None,
                        },
                    )
                })
                .collect()
        };
        // 3:1 with two servers on one side and one on the other.
        let (blue, green) = (group(&["b1", "b2"]), group(&["g1"]));
        let m = weighted_members(&[(3, &blue), (1, &green)], |_, _| 100);
        let sum = |prefix: &str| -> u32 {
            m.iter()
                .filter(|x| x.id.starts_with(prefix))
                .map(|x| x.weight)
                .sum()
        };
        let share = f64::from(sum("b")) / f64::from(sum("b") + sum("g"));
        assert!((share - 0.75).abs() < 0.01, "{share} {m:?}");
        assert!(m.iter().all(|x| (1..=256).contains(&x.weight)));
        // A group without healthy targets does not divide by zero.
        let none = group(&[]);
        assert_eq!(
            weighted_members(&[(1, &none), (1, &green)], |_, _| 100).len(),
            1
        );
    }
}

//! The HAProxy data plane: a generated configuration (one frontend per listener, one backend per
//! target group, listener → backend through a map file) and the runtime API over the admin
//! socket for everything that changes with tasks — servers added, enabled, drained and deleted,
//! and listener switches with `set map` — so target changes never reload HAProxy. HAProxy runs in
//! master-worker mode: a change of listeners or groups rewrites the configuration (with the
//! current servers in it) and reloads seamlessly (SIGUSR2 to the master; the listening sockets
//! pass to the new worker, the old one finishes its connections).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use capstan_core::lb::{Listener, TargetState};
use capstan_plan::targets::Tracked;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Why the data plane could not do something.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// Talking to HAProxy or writing its files failed.
    #[error("haproxy: {0}")]
    Io(#[from] std::io::Error),
    /// HAProxy refused a command.
    #[error("haproxy refused `{command}`: {answer}")]
    Refused {
        /// The command.
        command: String,
        /// Its answer.
        answer: String,
    },
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
    /// The layout for these listeners and groups.
    pub fn new(listeners: &[(String, Listener)], groups: &[String]) -> Self {
        Self {
            listeners: listeners
                .iter()
                .map(|(n, l)| (n.clone(), (l.bind_address().to_string(), l.port)))
                .collect(),
            groups: groups.to_vec(),
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
        c.push_str(&format!("backend {be}\n    balance roundrobin\n"));
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

/// The HAProxy process being driven.
enum Process {
    /// Started by this registrar.
    Child(tokio::process::Child),
    /// Left running by an earlier registrar with the same configuration, and taken over.
    Adopted(nix::unistd::Pid),
}

impl Process {
    fn pid(&self) -> nix::unistd::Pid {
        match self {
            Process::Child(c) => {
                nix::unistd::Pid::from_raw(c.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0))
            }
            Process::Adopted(pid) => *pid,
        }
    }

    fn alive(&mut self) -> bool {
        match self {
            Process::Child(c) => matches!(c.try_wait(), Ok(None)),
            Process::Adopted(pid) => nix::sys::signal::kill(*pid, None).is_ok(),
        }
    }

    async fn kill(self) {
        match self {
            Process::Child(mut c) => {
                let _ = c.kill().await;
            }
            Process::Adopted(pid) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// An existing HAProxy the registrar drives through its admin socket only.
#[derive(Debug, Clone)]
pub struct External {
    /// Its admin-level stats socket.
    pub socket: PathBuf,
    /// The map file its frontends route by (`use_backend %[str(<listener>),map(<file>,be_none)]`).
    pub map: PathBuf,
}

/// A supervised HAProxy, or an existing one driven through its runtime API.
pub struct Haproxy {
    dir: PathBuf,
    bin: PathBuf,
    external: Option<External>,
    state: Mutex<Option<(Layout, Process)>>,
}

impl Haproxy {
    /// HAProxy `bin`, its files under `dir`.
    pub fn new(bin: PathBuf, dir: PathBuf) -> Self {
        Self {
            dir,
            bin,
            external: None,
            state: Mutex::new(None),
        }
    }

    /// An HAProxy someone else runs: servers and routes go through `ext`'s socket and map; its
    /// configuration (frontends `fe_<listener>`, backends `be_<group>`, see [`render`]) is theirs.
    pub fn external(ext: External) -> Self {
        Self {
            dir: ext
                .socket
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            bin: PathBuf::new(),
            external: Some(ext),
            state: Mutex::new(None),
        }
    }

    fn socket(&self) -> PathBuf {
        match &self.external {
            Some(e) => e.socket.clone(),
            None => self.dir.join("admin.sock"),
        }
    }

    fn map(&self) -> PathBuf {
        match &self.external {
            Some(e) => e.map.clone(),
            None => self.dir.join("routes.map"),
        }
    }

    /// An external HAProxy: checks it answers (the first time, so servers and routes get set)
    /// and warns about backends it lacks; it is never restarted or reloaded from here.
    async fn ensure_external(&self, layout: &Layout) -> Result<bool, DataPlaneError> {
        let mut st = self.state.lock().await;
        let first = st.as_ref().is_none_or(|(l, _)| l != layout);
        if first {
            self.command("show info").await?;
            let backends = self.command("show backend").await.unwrap_or_default();
            for be in layout.backends() {
                if !backends.lines().any(|l| l.trim() == be) {
                    tracing::warn!(backend = %be, "the external haproxy has no such backend; add it to its configuration");
                }
            }
            *st = Some((
                layout.clone(),
                Process::Adopted(nix::unistd::Pid::from_raw(0)),
            ));
        }
        Ok(first)
    }

    /// Where the pid of the HAProxy this registrar started is kept.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }

    /// The live HAProxy recorded in the pid file, if any.
    async fn left_over(&self) -> Option<nix::unistd::Pid> {
        let text = tokio::fs::read_to_string(self.pid_file()).await.ok()?;
        let pid = nix::unistd::Pid::from_raw(text.trim().parse().ok()?);
        nix::sys::signal::kill(pid, None).ok().map(|()| pid)
    }

    /// Sends one runtime API command; returns the answer.
    pub async fn command(&self, cmd: &str) -> Result<String, DataPlaneError> {
        let mut s = tokio::net::UnixStream::connect(self.socket()).await?;
        s.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    async fn expect_ok(&self, cmd: &str, bad: &[&str]) -> Result<(), DataPlaneError> {
        let answer = self.command(cmd).await?;
        if bad.iter().any(|b| answer.contains(b)) {
            return Err(DataPlaneError::Refused {
                command: cmd.into(),
                answer: answer.trim().into(),
            });
        }
        Ok(())
    }

    /// Starts HAProxy for `layout` (or adopts the one an earlier registrar left with the same
    /// configuration), or restarts it when the layout changed (listeners or groups came or
    /// went). Returns whether it (re)started or was adopted: servers and routes must be set.
    pub async fn ensure(
        &self,
        layout: &Layout,
        routes: &BTreeMap<String, String>,
    ) -> Result<bool, DataPlaneError> {
        if self.external.is_some() {
            return self.ensure_external(layout).await;
        }
        let mut st = self.state.lock().await;
        if let Some((current, process)) = st.as_mut()
            && process.alive()
        {
            if current == layout {
                return Ok(false);
            }
            let pid = process.pid();
            match self.reload(pid, layout, routes).await {
                Ok(()) => {
                    *current = layout.clone();
                    return Ok(true);
                }
                Err(e) => {
                    // The master keeps the old worker serving when a reload fails; start over.
                    tracing::warn!(error = %e, "haproxy reload failed; restarting it");
                }
            }
        }
        if let Some((_, process)) = st.take() {
            process.kill().await;
        }
        tokio::fs::create_dir_all(&self.dir).await?;
        let cfg = self.dir.join("haproxy.cfg");
        // An HAProxy an earlier registrar left running with this very configuration keeps
        // serving: adopt it (its servers and routes are then converged through the runtime API).
        // One with another configuration holds the ports: stop it.
        if let Some(pid) = self.left_over().await {
            let same = tokio::fs::read_to_string(self.layout_file()).await.ok()
                == Some(render(layout, &self.dir));
            if same && self.command("show info").await.is_ok() {
                tracing::info!(pid = %pid, "adopted the running haproxy");
                *st = Some((layout.clone(), Process::Adopted(pid)));
                return Ok(true);
            }
            Process::Adopted(pid).kill().await;
            let _ = tokio::fs::remove_file(self.pid_file()).await;
        }
        tokio::fs::write(&cfg, render(layout, &self.dir)).await?;
        tokio::fs::write(self.layout_file(), render(layout, &self.dir)).await?;
        self.write_map(routes).await?;
        let _ = tokio::fs::remove_file(self.dir.join("admin.sock")).await;
        let child = tokio::process::Command::new(&self.bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-W")
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        // `-p` is not written in foreground mode: record the pid ourselves.
        if let Some(pid) = child.id() {
            tokio::fs::write(self.pid_file(), pid.to_string()).await?;
        }
        // Ready once the admin socket answers.
        for _ in 0..100 {
            if self.command("show info").await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        *st = Some((layout.clone(), Process::Child(child)));
        Ok(true)
    }

    fn layout_file(&self) -> PathBuf {
        self.dir.join("haproxy.layout")
    }

    async fn write_map(&self, routes: &BTreeMap<String, String>) -> Result<(), DataPlaneError> {
        let map: String = routes.iter().map(|(l, be)| format!("{l} {be}\n")).collect();
        tokio::fs::write(self.map(), map).await?;
        Ok(())
    }

    /// The worker's pid, from `show info`.
    async fn worker_pid(&self) -> Option<String> {
        let info = self.command("show info").await.ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .map(|p| p.trim().to_string())
    }

    /// Seamless reload for a new layout: the configuration is rewritten with the servers the
    /// running worker has, the map with the routes, then the master gets SIGUSR2 and a new
    /// worker takes over the listening sockets.
    async fn reload(
        &self,
        master: nix::unistd::Pid,
        layout: &Layout,
        routes: &BTreeMap<String, String>,
    ) -> Result<(), DataPlaneError> {
        let mut servers = BTreeMap::new();
        for be in layout.backends() {
            let Ok(out) = self.command(&format!("show servers state {be}")).await else {
                continue;
            };
            let lines: Vec<ServerLine> = parse_servers(&out)
                .into_iter()
                .map(|(name, s)| (name, s.addr, s.port, s.admin_state, s.weight))
                .collect();
            servers.insert(be, lines);
        }
        let before = self.worker_pid().await;
        tokio::fs::write(
            self.dir.join("haproxy.cfg"),
            render_with(layout, &self.dir, &servers),
        )
        .await?;
        tokio::fs::write(self.layout_file(), render(layout, &self.dir)).await?;
        self.write_map(routes).await?;
        nix::sys::signal::kill(master, nix::sys::signal::Signal::SIGUSR2)
            .map_err(|e| DataPlaneError::Io(std::io::Error::other(e)))?;
        for _ in 0..200 {
            let now = self.worker_pid().await;
            if now.is_some() && now != before {
                tracing::info!(worker = ?now, "haproxy reloaded");
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Err(DataPlaneError::Refused {
            command: "reload".into(),
            answer: "no new worker within 5 s (configuration refused?)".into(),
        })
    }

    /// Stops HAProxy (leadership lost, or shutdown); an external one is left alone.
    pub async fn stop(&self) {
        if self.external.is_some() {
            self.state.lock().await.take();
            return;
        }
        if let Some((_, process)) = self.state.lock().await.take() {
            process.kill().await;
        }
    }

    /// Points listener `name` at `backend`.
    pub async fn route(&self, name: &str, backend: &str) -> Result<(), DataPlaneError> {
        let map = self.map();
        let current = self.command(&format!("show map {}", map.display())).await?;
        let has = current
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(name));
        let verb = if has { "set" } else { "add" };
        self.expect_ok(
            &format!("{verb} map {} {name} {backend}", map.display()),
            &["Unknown", "not found", "failed"],
        )
        .await
    }

    /// Makes backend `be`'s servers match `members`: healthy ones ready at their weight,
    /// draining ones draining, others out of traffic, unknown ones deleted; returns current
    /// sessions per member id.
    pub async fn sync_backend(
        &self,
        be: &str,
        members: &[Member],
    ) -> Result<HashMap<String, u32>, DataPlaneError> {
        let servers = parse_servers(&self.command(&format!("show servers state {be}")).await?);
        for m in members {
            let srv = format!("{be}/{}", m.id);
            let present = servers.get(&m.id);
            if present.is_some_and(|p| p.addr != m.host || p.port != m.port) {
                self.command(&format!("set server {srv} state maint"))
                    .await?;
                self.command(&format!("del server {srv}")).await?;
            }
            let present = present.filter(|p| p.addr == m.host && p.port == m.port);
            match m.state {
                TargetState::Healthy => {
                    if present.is_none() {
                        self.expect_ok(
                            &format!("add server {srv} {}:{} weight {}", m.host, m.port, m.weight),
                            &["No such", "Invalid", "failed", "already exists"],
                        )
                        .await?;
                    } else if present.is_some_and(|p| p.weight != m.weight) {
                        self.command(&format!("set server {srv} weight {}", m.weight))
                            .await?;
                    }
                    if present.is_none_or(|p| p.admin_state != 0) {
                        self.command(&format!("set server {srv} state ready"))
                            .await?;
                    }
                }
                TargetState::Draining => {
                    if present.is_some_and(|p| p.admin_state & 8 == 0) {
                        self.command(&format!("set server {srv} state drain"))
                            .await?;
                    }
                }
                _ => {
                    if present.is_some_and(|p| p.admin_state & 1 == 0) {
                        self.command(&format!("set server {srv} state maint"))
                            .await?;
                    }
                }
            }
        }
        for id in servers
            .keys()
            .filter(|id| !members.iter().any(|m| &m.id == *id))
        {
            let srv = format!("{be}/{id}");
            self.command(&format!("set server {srv} state maint"))
                .await?;
            self.command(&format!("del server {srv}")).await?;
        }
        let stats = parse_sessions(&self.command("show stat").await?);
        Ok(members
            .iter()
            .map(|m| {
                let n = stats
                    .get(&(be.to_string(), m.id.clone()))
                    .copied()
                    .unwrap_or(0);
                (m.id.clone(), n)
            })
            .collect())
    }
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
pub fn weighted_members(
    groups: &[(u32, &BTreeMap<String, Tracked>)],
    ramp: impl Fn(&Tracked) -> u32 + Copy,
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
        .flat_map(|((_, tracked), share)| {
            let weight = if top > 0.0 {
                ((256.0 * share / top).round() as u32).clamp(1, 256)
            } else {
                1
            };
            // The group's share, scaled by each target's own (slow start) weight.
            group_members(tracked, move |t| (weight * ramp(t)).div_ceil(100).max(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_a_frontend_per_listener_and_a_backend_per_group() {
        let layout = Layout {
            listeners: BTreeMap::from([("web".to_string(), ("127.0.0.1".to_string(), 8080))]),
            groups: vec!["web-blue".into(), "web-green".into()],
            weighted: vec!["canary".into()],
        };
        let c = render(&layout, Path::new("/run/capstan"));
        assert!(c.contains("backend bel_canary\n    balance roundrobin\n"));
        assert!(c.contains("stats socket /run/capstan/admin.sock mode 600 level admin"));
        assert!(c.contains("frontend fe_web\n    bind 127.0.0.1:8080\n"));
        assert!(c.contains("use_backend %[str(web),map(/run/capstan/routes.map,be_none)]"));
        assert!(c.contains("backend be_web-blue\n    balance roundrobin\n"));
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
                            healthy_since: None,
                        },
                    )
                })
                .collect()
        };
        // 3:1 with two servers on one side and one on the other.
        let (blue, green) = (group(&["b1", "b2"]), group(&["g1"]));
        let m = weighted_members(&[(3, &blue), (1, &green)], |_| 100);
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
            weighted_members(&[(1, &none), (1, &green)], |_| 100).len(),
            1
        );
    }
}

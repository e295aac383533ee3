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

pub mod config;
mod process;

use process::Process;

use capstan_core::lb::TargetState;
pub use config::{
    Layout, Member, Server, ServerLine, backend, group_members, listener_backend, parse_servers,
    parse_sessions, render, render_with, weighted_members,
};
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
    /// Stops the HAProxy this registrar started or adopted (never an external one).
    pub async fn stop(&self) {
        if self.external.is_some() {
            return;
        }
        let taken = self.state.lock().await.take();
        match taken {
            Some((_, process)) => process.terminate().await,
            None => {
                if let Some(pid) = self.left_over().await {
                    Process::Adopted(pid).terminate().await;
                }
            }
        }
        let _ = tokio::fs::remove_file(self.pid_file()).await;
        tracing::info!("haproxy stopped with the registrar");
    }

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
        let mut ready = false;
        for _ in 0..100 {
            if self.command("show info").await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if ready {
            tracing::info!(pid = ?child.id(), listeners = layout.listeners.len(), "haproxy started");
        } else {
            tracing::warn!(pid = ?child.id(), "haproxy started but its admin socket does not answer");
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
    /// draining ones draining, others out of traffic, unknown ones deleted.
    pub async fn sync_backend(&self, be: &str, members: &[Member]) -> Result<(), DataPlaneError> {
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
        Ok(())
    }

    /// Sessions in flight per (backend, server), every backend at once.
    pub async fn sessions(&self) -> Result<HashMap<(String, String), u32>, DataPlaneError> {
        Ok(parse_sessions(&self.command("show stat").await?))
    }
}

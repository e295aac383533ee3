//! The `process` runtime: each container's `entryPoint` + `command` runs as a child process in its
//! own process group, with its environment; host ports are chosen by the agent and handed over as
//! `PORT` (first mapping) and `CAPSTAN_PORT_<containerPort>` (each mapping), as Nomad's raw_exec
//! does. stdout and stderr go to a log file per container.
//!
//! Least privilege: an agent running as root runs each task as its container's `user`, or else
//! as the agent's `--task-user` (`nobody` by default), never as root unless asked; an agent that
//! is not root runs tasks as itself and refuses a `user` it cannot become. Tasks learn the
//! address to bind (`--task-bind-address`) from `CAPSTAN_BIND_ADDRESS`, and each mounted
//! volume's directory from `CAPSTAN_VOLUME_<NAME>`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use capstan_core::task::NetworkBinding;
use capstan_core::taskdef::HealthCheck;
use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::exec;
use super::{
    ContainerRuntime, ContainerSpec, ExecEvent, ExecRequest, ExecSession, Exit, MountSource,
    RuntimeError, Started, TaskPolicy,
};
use crate::logs::{self, Stream};
use crate::model::Handle;

/// How often an adopted process (one this agent did not spawn) is checked for exit.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

/// A process this agent spawned.
struct Spawned {
    /// Its exit status, once it has exited.
    exit: watch::Receiver<Option<Exit>>,
    /// Port variables it was given, so its health checks see them too.
    port_env: Vec<(String, String)>,
}

/// Runs containers as processes.
#[derive(Default)]
pub struct ProcessRuntime {
    /// Processes this agent spawned, by pid.
    spawned: Mutex<HashMap<i32, Spawned>>,
    /// What tasks are allowed.
    policy: TaskPolicy,
}

/// The uid and gid a `user` (`name`, `uid`, `uid:gid`, `name:group`) names on this host.
pub fn resolve_user(user: &str) -> Result<(u32, u32), String> {
    use nix::unistd::{Group, User};
    let (who, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let by_name = |n: &str| User::from_name(n).ok().flatten();
    let (uid, primary) = match who.parse::<u32>() {
        Ok(uid) => {
            let entry = User::from_uid(uid.into()).ok().flatten();
            // A uid without a passwd entry gets a group of the same number, never root's.
            (uid, entry.map_or(uid, |u| u.gid.as_raw()))
        }
        Err(_) => {
            let u =
                by_name(who).ok_or_else(|| format!("user {who:?} does not exist on this host"))?;
            (u.uid.as_raw(), u.gid.as_raw())
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .ok_or_else(|| format!("group {g:?} does not exist on this host"))?,
        },
    };
    Ok((uid, gid))
}

/// Who a container's processes run as: `Some((uid, gid))` to switch to, `None` to stay the
/// agent's own user.
fn run_as(spec: &ContainerSpec, policy: &TaskPolicy) -> Result<Option<(u32, u32)>, RuntimeError> {
    let me = nix::unistd::geteuid().as_raw();
    let wanted = spec.user.as_deref().or(if me == 0 {
        Some(policy.default_user.as_str())
    } else {
        None
    });
    let Some(user) = wanted else {
        return Ok(None);
    };
    let (uid, gid) = resolve_user(user)
        .map_err(|e| RuntimeError::Invalid(format!("container {}: {e}", spec.name)))?;
    if me != 0 && uid != me {
        return Err(RuntimeError::Invalid(format!(
            "container {} asks for user {user:?} (uid {uid}), but the agent runs as uid {me} and cannot switch; run the agent as root or drop `user`",
            spec.name
        )));
    }
    Ok((me == 0).then_some((uid, gid)))
}

/// `state` and `starttime` of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn running(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((state, start)) if start == start_time && state != 'Z' && state != 'X')
}

fn signal_group(pid: i32, sig: Signal) {
    // ESRCH: already gone, which is what we want.
    let _ = killpg(Pid::from_raw(pid), sig);
}

/// Kills an exec session's process group (it leads one: its own group, or its own session).
fn kill_session(pid: Option<i32>) {
    if let Some(pid) = pid {
        signal_group(pid, Signal::SIGKILL);
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Code(128 + s),
        (None, None) => Exit::Unknown("no exit status".into()),
    }
}

/// The environment of every process of a container (its command, health checks, exec
/// sessions): a PATH, its own variables, then the agent's (ports, bind address, identity).
fn container_env(spec: &ContainerSpec, agent_vars: &[(String, String)]) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let mut env = vec![("PATH".to_string(), path)];
    env.extend(spec.env.iter().cloned());
    env.extend(agent_vars.iter().cloned());
    env.push(("CAPSTAN_TASK_ID".into(), spec.task_id.clone()));
    env.push(("CAPSTAN_CONTAINER_NAME".into(), spec.name.clone()));
    // A process cannot have a volume mounted at its containerPath: it is told the directory.
    for m in &spec.mounts {
        if let MountSource::HostPath(p) | MountSource::Dir(p) = &m.source {
            env.push((volume_var(&m.volume), p.display().to_string()));
        }
    }
    env
}

/// `CAPSTAN_VOLUME_<NAME>`: the variable that holds volume `name`'s directory (upper case,
/// `-` as `_`).
pub fn volume_var(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("CAPSTAN_VOLUME_{upper}")
}

/// A free TCP port on this host, for a dynamic mapping.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

impl ProcessRuntime {
    /// A process runtime whose tasks get what `policy` allows.
    pub fn new(policy: TaskPolicy) -> Self {
        Self {
            spawned: Mutex::default(),
            policy,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Spawned>> {
        self.spawned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where one of a container's streams goes: a pipe to a log shim of its own (see
    /// [`crate::logs`]), or straight into its log file when no shim can be started.
    fn log_pipe(&self, spec: &ContainerSpec, stream: Stream) -> Result<Stdio, RuntimeError> {
        let path = logs::log_file(&spec.task_dir, &spec.name, stream);
        let io = |context: String| move |source| RuntimeError::Io { context, source };
        let shim = std::env::current_exe().ok().and_then(|exe| {
            let (reader, writer) = std::io::pipe().ok()?;
            let mut child = tokio::process::Command::new(exe)
                .arg(logs::SHIM_ARG)
                .arg(&path)
                .args(logs::shim_args(logs::DEFAULT_MAX_BYTES, spec.log_mode))
                .stdin(reader)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| tracing::warn!(error = %e, "cannot start a log shim; logging without timestamps"))
                .ok()?;
            // Reaped whenever it ends (after the container closed its end).
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Some(writer)
        });
        match shim {
            Some(w) => Ok(Stdio::from(w)),
            None => std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map(Stdio::from)
                .map_err(io(format!("cannot open log {}", path.display()))),
        }
    }

    /// The environment of a process of the running container `handle`.
    fn env_of(&self, handle: &Handle, spec: &ContainerSpec) -> Vec<(String, String)> {
        let mut agent_vars = vec![(
            "CAPSTAN_BIND_ADDRESS".to_string(),
            self.policy.bind_address.to_string(),
        )];
        if let Handle::Process { pid, .. } = handle
            && let Some(s) = self.lock().get(pid)
        {
            agent_vars.extend(s.port_env.iter().cloned());
        }
        container_env(spec, &agent_vars)
    }

    /// An exec session in the container's environment, working directory and user: a process
    /// group of its own on pipes, or a session of its own on a new terminal.
    fn exec_session(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        req: ExecRequest,
    ) -> Result<ExecSession, RuntimeError> {
        let Some((program, args)) = req.command.split_first() else {
            return Err(RuntimeError::Invalid("the command is empty".into()));
        };
        let identity = run_as(spec, &self.policy)?;
        let env = self.env_of(handle, spec);
        let dir = spec
            .working_directory
            .as_ref()
            .map_or_else(|| spec.task_dir.clone(), std::path::PathBuf::from);
        let (session, input, out) = exec::channels();
        let stop = session.stop.clone();
        if req.tty {
            let (pty, pts) = pty_process::open().map_err(|e| RuntimeError::Io {
                context: "cannot open a terminal".into(),
                source: std::io::Error::other(e),
            })?;
            if let Some(s) = req.size {
                let _ = pty.resize(pty_process::Size::new(s.rows, s.cols));
            }
            let mut cmd = pty_process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(env)
                .current_dir(dir)
                .kill_on_drop(true);
            if let Some((uid, gid)) = identity {
                cmd = cmd.uid(uid).gid(gid);
            }
            let mut child = match cmd.spawn(pts) {
                Ok(c) => c,
                Err(e) => {
                    let e = std::io::Error::other(e);
                    let code = exec::spawn_failure_code(&e);
                    return Ok(exec::not_started(
                        format!("cannot run {program:?}: {e}"),
                        code,
                    ));
                }
            };
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            let (reader, writer) = pty.into_split();
            let interactive = req.interactive;
            tokio::spawn(exec::feed(
                interactive.then_some(writer),
                input,
                true,
                |w: &mut Option<pty_process::OwnedWritePty>, s| {
                    if let Some(w) = w {
                        let _ = w.resize(pty_process::Size::new(s.rows, s.cols));
                    }
                    async {}.boxed()
                },
            ));
            let drained = tokio::spawn(exec::pump(Some(reader), out.clone(), ExecEvent::Stdout));
            tokio::spawn(exec::finish(
                async move { child.wait().await.ok().and_then(|s| exit_of(s).code()) },
                async move {
                    let _ = drained.await;
                },
                stop,
                move || kill_session(pid),
                out,
            ));
        } else {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .env_clear()
                .envs(env)
                .current_dir(dir)
                .stdin(if req.interactive {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            if let Some((uid, gid)) = identity {
                cmd.uid(uid).gid(gid);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let code = exec::spawn_failure_code(&e);
                    return Ok(exec::not_started(
                        format!("cannot run {program:?}: {e}"),
                        code,
                    ));
                }
            };
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            tokio::spawn(exec::feed(child.stdin.take(), input, false, |_, _| {
                async {}.boxed()
            }));
            let stdout = tokio::spawn(exec::pump(
                child.stdout.take(),
                out.clone(),
                ExecEvent::Stdout,
            ));
            let stderr = tokio::spawn(exec::pump(
                child.stderr.take(),
                out.clone(),
                ExecEvent::Stderr,
            ));
            tokio::spawn(exec::finish(
                async move { child.wait().await.ok().and_then(|s| exit_of(s).code()) },
                async move {
                    let _ = stdout.await;
                    let _ = stderr.await;
                },
                stop,
                move || kill_session(pid),
                out,
            ));
        }
        Ok(session)
    }

    fn spawn(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        let argv: Vec<&String> = spec.entry_point.iter().chain(spec.command.iter()).collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::Invalid(format!(
                "container {} has neither entryPoint nor command; the process runtime needs one",
                spec.name
            )));
        };
        let identity = run_as(spec, &self.policy)?;
        let bind = self.policy.bind_address.to_string();
        let mut bindings = Vec::new();
        let mut env: Vec<(String, String)> = vec![("CAPSTAN_BIND_ADDRESS".into(), bind.clone())];
        // awsvpc's hostPort names a port of the task's own namespace, which a host process
        // does not have: it gets a free host port, as a bridge task does (placement counts no
        // host ports for awsvpc).
        let awsvpc = spec.options.network_mode == Some(capstan_core::taskdef::NetworkMode::Awsvpc);
        for pm in &spec.ports {
            let Some(cp) = pm.container_port else {
                continue;
            };
            let hp = match pm.static_host_port().filter(|_| !awsvpc) {
                Some(p) => p,
                None => u32::from(free_port().map_err(|source| RuntimeError::Io {
                    context: "no free host port".into(),
                    source,
                })?),
            };
            if bindings.is_empty() {
                env.push(("PORT".into(), hp.to_string()));
            }
            env.push((format!("CAPSTAN_PORT_{cp}"), hp.to_string()));
            bindings.push(NetworkBinding {
                bind_ip: bind.clone(),
                container_port: cp,
                host_port: hp,
                protocol: pm.protocol(),
            });
        }
        std::fs::create_dir_all(&spec.task_dir).map_err(|source| RuntimeError::Io {
            context: format!("cannot create {}", spec.task_dir.display()),
            source,
        })?;
        let stdout = self.log_pipe(spec, Stream::Stdout)?;
        let stderr = self.log_pipe(spec, Stream::Stderr)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(container_env(spec, &env))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        if let Some((uid, gid)) = identity {
            // std drops root's supplementary groups when it switches uid.
            cmd.uid(uid).gid(gid);
        }
        match &spec.working_directory {
            Some(dir) => {
                cmd.current_dir(dir);
            }
            None => {
                cmd.current_dir(&spec.task_dir);
            }
        }
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Io {
            context: format!("cannot start {program:?} for container {}", spec.name),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| RuntimeError::Invalid("process exited before it got a pid".into()))?;
        let start_time = proc_stat(pid).map_or(0, |(_, s)| s);
        let (tx, rx) = watch::channel(None);
        self.lock().insert(
            pid,
            Spawned {
                exit: rx,
                port_env: env,
            },
        );
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => exit_of(status),
                Err(e) => Exit::Unknown(format!("wait failed: {e}")),
            };
            let _ = tx.send(Some(exit));
        });
        Ok(Started {
            handle: Handle::Process { pid, start_time },
            bindings,
            // A process shares the host's network, whatever the networkMode.
            ip: None,
        })
    }
}

impl ContainerRuntime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn version(&self) -> String {
        "process".into()
    }

    fn start<'a>(
        &'a self,
        spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>> {
        async move { self.spawn(spec) }.boxed()
    }

    fn wait(&self, handle: &Handle) -> BoxFuture<'static, Exit> {
        let Handle::Process { pid, start_time } = *handle else {
            return async { Exit::Unknown("not a process".into()) }.boxed();
        };
        let rx = self.lock().get(&pid).map(|s| s.exit.clone());
        async move {
            match rx {
                Some(mut rx) => match rx.wait_for(Option::is_some).await {
                    Ok(exit) => exit
                        .clone()
                        .unwrap_or(Exit::Unknown("no exit status".into())),
                    Err(_) => Exit::Unknown("exit watcher ended".into()),
                },
                // Adopted after an agent restart: we are not its parent, so only its disappearance
                // can be seen.
                None => {
                    while running(pid, start_time) {
                        tokio::time::sleep(ADOPTED_POLL).await;
                    }
                    Exit::Unknown(
                        "exited while not a child of this agent; exit code unknown".into(),
                    )
                }
            }
        }
        .boxed()
    }

    fn stop<'a>(&'a self, handle: &'a Handle, timeout: Duration) -> BoxFuture<'a, ()> {
        async move {
            let Handle::Process { pid, start_time } = *handle else {
                return;
            };
            if !running(pid, start_time) {
                return;
            }
            signal_group(pid, Signal::SIGTERM);
            if tokio::time::timeout(timeout, self.wait(handle))
                .await
                .is_err()
            {
                tracing::info!(pid, ?timeout, "process ignored SIGTERM; sending SIGKILL");
                signal_group(pid, Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(handle)).await;
            }
            // Children that outlived the leader are part of the container: end them too.
            signal_group(pid, Signal::SIGKILL);
        }
        .boxed()
    }

    fn check<'a>(
        &'a self,
        handle: &'a Handle,
        spec: &'a ContainerSpec,
        check: &'a HealthCheck,
    ) -> BoxFuture<'a, bool> {
        async move {
            let argv: Vec<String> = match check.command.split_first() {
                Some((kind, rest)) if kind == "CMD-SHELL" => {
                    vec!["sh".into(), "-c".into(), rest.join(" ")]
                }
                Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
                _ => return false,
            };
            let Some((program, args)) = argv.split_first() else {
                return false;
            };
            // The check runs as the container does.
            let Ok(identity) = run_as(spec, &self.policy) else {
                return false;
            };
            let mut cmd = tokio::process::Command::new(program);
            if let Some((uid, gid)) = identity {
                cmd.uid(uid).gid(gid);
            }
            cmd.args(args)
                .env_clear()
                .envs(self.env_of(handle, spec))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(true);
            let Ok(mut child) = cmd.spawn() else {
                return false;
            };
            let pid = child.id().and_then(|p| i32::try_from(p).ok());
            let timeout = Duration::from_secs(u64::from(check.timeout_secs()));
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) => status.success(),
                _ => {
                    if let Some(pid) = pid {
                        signal_group(pid, Signal::SIGKILL);
                    }
                    false
                }
            }
        }
        .boxed()
    }

    fn alive<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, bool> {
        async move {
            match *handle {
                Handle::Process { pid, start_time } => running(pid, start_time),
                Handle::Docker { .. } => false,
            }
        }
        .boxed()
    }

    fn find<'a>(&'a self, _task_id: &'a str, _container: &'a str) -> BoxFuture<'a, Option<Handle>> {
        async { None }.boxed()
    }

    fn remove<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, ()> {
        async move {
            if let Handle::Process { pid, .. } = handle {
                self.lock().remove(pid);
            }
        }
        .boxed()
    }

    fn exec<'a>(
        &'a self,
        handle: &'a Handle,
        spec: &'a ContainerSpec,
        request: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession, RuntimeError>> {
        async move { self.exec_session(handle, spec, request) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_like_dockers() {
        assert_eq!(resolve_user("root"), Ok((0, 0)));
        assert_eq!(resolve_user("0:0"), Ok((0, 0)));
        let nobody = resolve_user("nobody").expect("nobody exists");
        assert_ne!(nobody.0, 0);
        assert_eq!(
            resolve_user("4242"),
            Ok((4242, 4242)),
            "no passwd entry: its own group"
        );
        assert_eq!(resolve_user("4242:100"), Ok((4242, 100)));
        assert!(resolve_user("no-such-user-here").is_err());
        assert!(resolve_user("root:no-such-group").is_err());
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let pid = i32::try_from(std::process::id()).expect("pid fits");
        let (state, start) = proc_stat(pid).expect("own stat");
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(start > 0);
        assert!(running(pid, start));
        assert!(!running(pid, start + 1), "a reused pid is told apart");
    }
}

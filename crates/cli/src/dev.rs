//! `capstan dev`: a whole local control plane in one command, like `nomad agent -dev` — one etcd
//! member, the API, the controllers, agents in different zones and (when installed) HAProxy.
//! Ctrl-C stops everything, the agents' task processes and HAProxy included.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Environment variable set on every process `capstan dev` starts (its data directory), so they
/// can be found.
pub const DEV_ENV: &str = "CAPSTAN_DEV_DIR";

/// Which runtime the dev agents use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// Plain child processes (no Docker needed).
    Process,
    /// Docker containers through the local engine.
    Docker,
}

/// `capstan dev` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Keep state here between runs; a temporary directory, removed on exit, when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Agent runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Process)]
    pub runtime: Runtime,
    /// Number of agents (zones dev-a, dev-b, …).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub agents: u8,
    /// API listen address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub api_listen: SocketAddr,
    /// ECS endpoint (aws CLI and SDKs) listen address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub ecs_listen: SocketAddr,
    /// etcd client port; 0 picks a free one.
    #[arg(long, default_value_t = 2379)]
    pub etcd_port: u16,
    /// Directory holding the capstan-* binaries; the directory of this `capstan` by default.
    #[arg(long, env = "CAPSTAN_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Start without HAProxy even when it is installed.
    #[arg(long)]
    pub no_haproxy: bool,
}

/// Writes a line to stderr, or nowhere when stderr is gone: a closed pipe (`| tee` killed by
/// the same Ctrl-C) must not stop `capstan dev` before it has stopped what it started.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Writes a line to stdout, or nowhere when stdout is gone (see [`say`]).
fn tell(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// A started process and its log.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

struct Plane {
    dir: PathBuf,
    /// util-linux's `setpriv`, which sets the parent-death signal before running a child.
    setpriv: Option<PathBuf>,
    procs: Vec<Proc>,
    agent_dirs: Vec<PathBuf>,
    haproxy_dir: Option<PathBuf>,
}

impl Plane {
    fn start(&mut self, name: &str, bin: &Path, args: &[String]) -> anyhow::Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        // Each child gets the parent-death signal (so a SIGKILLed `capstan dev` takes them with
        // it) and a process group of its own (so a terminal's Ctrl-C reaches `capstan dev`
        // alone, which then stops them in order).
        let mut cmd = match &self.setpriv {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "TERM", "--"]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(args)
            .env(DEV_ENV, &self.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        Ok(())
    }

    /// Fails when a process has exited, naming its log.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited ({status}); see {}", p.name, p.log.display());
            }
        }
        Ok(())
    }

    /// Stops everything: the API and controllers first (so no agent waits on their streams),
    /// then the agents, then the tasks and HAProxy they leave running, then etcd. Each group
    /// gets SIGTERM together, then SIGKILL after a grace period.
    async fn stop(&mut self) {
        let procs = std::mem::take(&mut self.procs);
        let (etcd, rest): (Vec<Proc>, Vec<Proc>) =
            procs.into_iter().partition(|p| p.name == "etcd");
        let (agents, others): (Vec<Proc>, Vec<Proc>) =
            rest.into_iter().partition(|p| p.name.starts_with("agent-"));
        stop_group(others).await;
        stop_group(agents).await;
        self.stop_tasks().await;
        stop_group(etcd).await;
    }

    /// Stops the task processes the agents leave running (agents keep tasks across restarts)
    /// and the HAProxy the registrar leaves serving.
    async fn stop_tasks(&self) {
        let groups: Vec<Pid> = self
            .agent_dirs
            .iter()
            .flat_map(|d| capstan_agent_client::state::task_process_groups(d))
            .map(Pid::from_raw)
            .collect();
        for g in &groups {
            let _ = killpg(*g, Signal::SIGTERM);
        }
        if let Some(dir) = &self.haproxy_dir
            && let Ok(pid) = std::fs::read_to_string(dir.join("haproxy.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
            && pid > 1
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for g in &groups {
            let _ = killpg(*g, Signal::SIGKILL);
        }
    }
}

/// SIGTERM to every process of the group, then SIGKILL to those still running after 10 s.
async fn stop_group(mut group: Vec<Proc>) {
    for p in &group {
        if let Some(pid) = p.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for p in &mut group {
        if tokio::time::timeout_at(deadline, p.child.wait())
            .await
            .is_err()
        {
            let _ = p.child.kill().await;
        }
    }
}

async fn etcd_healthy(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).contains("\"health\":\"true\"")
}

/// Waits for `what` (checked every 100 ms), failing early when a process dies.
async fn wait_for<F, Fut>(
    plane: &mut Plane,
    what: &str,
    within: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return Ok(());
        }
        plane.check_alive()?;
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} not ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_line(path: &Path, prefix: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_string)
}

/// Runs `capstan dev` until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<i32> {
    let etcd = which("etcd").context(
        "etcd is not installed: run `sudo apt-get install -y etcd-server etcd-client` (or `bash scripts/install-deps.sh`)",
    )?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("cannot tell where capstan is installed; pass --bin-dir")?,
    };
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            bail!(
                "{} not found; build the binaries with `cargo build --release --bins` or pass --bin-dir",
                p.display()
            )
        }
    };
    let bins = Bins {
        api: bin("capstan-api")?,
        scheduler: bin("capstan-scheduler")?,
        deployer: bin("capstan-deployer")?,
        registrar: bin("capstan-registrar")?,
        scaler: bin("capstan-scaler")?,
        nodegroups: bin("capstan-nodegroup-local")?,
        agent: bin("capstan-agent")?,
    };
    let temp = args.data_dir.is_none();
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("capstan-dev-{}", std::process::id())),
    };
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let setpriv = which("setpriv");
    if setpriv.is_none() {
        say(
            "capstan dev: setpriv (util-linux) is not installed: if capstan dev is killed with SIGKILL, what it started keeps running",
        );
    }
    let mut plane = Plane {
        dir: dir.clone(),
        setpriv,
        procs: Vec::new(),
        agent_dirs: Vec::new(),
        haproxy_dir: None,
    };
    let result = start_and_serve(&mut plane, &args, &etcd, &bins).await;
    plane.stop().await;
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    say("capstan dev: stopped");
    result
}

/// The binaries `capstan dev` runs.
struct Bins {
    api: PathBuf,
    scheduler: PathBuf,
    deployer: PathBuf,
    registrar: PathBuf,
    scaler: PathBuf,
    nodegroups: PathBuf,
    agent: PathBuf,
}

/// The capacity provider `capstan dev` creates over its local node group.
pub const DEV_PROVIDER: &str = "dev-pool";

/// The file `capstan dev` keeps its administrator's token in (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Bootstraps the dev plane's IAM once, keeping the administrator's token in `dir`; a later run
/// on the same data reads it back.
async fn admin_token(api: &str, dir: &Path) -> anyhow::Result<String> {
    let file = dir.join(ADMIN_TOKEN_FILE);
    let channel = capstan_proto::tls::connect(api, None).await?;
    let (_, mut iam) =
        capstan_proto::auth::clients(channel, capstan_proto::auth::Credentials::default());
    match iam
        .bootstrap(capstan_proto::api::v1::BootstrapRequest {
            principal: String::new(),
        })
        .await
    {
        Ok(t) => {
            let token = t.into_inner().token;
            crate::certs::write_private(&file, &token)?;
            Ok(token)
        }
        Err(s) if s.code() == tonic::Code::PermissionDenied => std::fs::read_to_string(&file)
            .map(|t| t.trim().to_string())
            .with_context(|| {
                format!(
                    "this data dir's IAM is bootstrapped but its admin token {} cannot be read",
                    file.display()
                )
            }),
        Err(s) => bail!("bootstrapping IAM: {}", s.message()),
    }
}

/// The file `capstan dev` keeps its administrator's access key in, as shell exports (0600).
pub const ADMIN_ACCESS_KEY_FILE: &str = "admin.aws";

/// The dev plane's encryption key file, made once.
fn encryption_key(dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(crate::certs::encryption_key(dir)?.0)
}

/// The administrator's access key for the ECS endpoint, made once and kept in `dir`:
/// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
async fn admin_access_key(api: &str, token: &str, dir: &Path) -> anyhow::Result<(String, String)> {
    let file = dir.join(ADMIN_ACCESS_KEY_FILE);
    let value = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(str::to_string)
    };
    if let Ok(text) = std::fs::read_to_string(&file)
        && let (Some(id), Some(secret)) = (
            value(&text, "AWS_ACCESS_KEY_ID"),
            value(&text, "AWS_SECRET_ACCESS_KEY"),
        )
    {
        return Ok((id, secret));
    }
    let channel = capstan_proto::tls::connect(api, None).await?;
    let creds = capstan_proto::auth::Credentials::bearer(Some(token))?;
    let (_, mut iam) = capstan_proto::auth::clients(channel, creds);
    let k = iam
        .create_access_key(capstan_proto::api::v1::CreateAccessKeyRequest {
            principal: "capstan://user/admin".into(),
            description: "capstan dev's administrator".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("creating an access key: {}", s.message()))?
        .into_inner();
    crate::certs::write_private(
        &file,
        &format!(
            "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\n",
            k.access_key_id, k.secret_access_key
        ),
    )?;
    Ok((k.access_key_id, k.secret_access_key))
}

async fn create_dev_provider(api: &str, token: &str, nodegroups: &str) -> anyhow::Result<()> {
    let channel = capstan_proto::tls::connect(api, None).await?;
    let creds = capstan_proto::auth::Credentials::bearer(Some(token))?;
    let (mut c, _) = capstan_proto::auth::clients(channel, creds);
    let doc = serde_json::json!({
        "name": DEV_PROVIDER,
        "nodeGroupProvider": {
            "endpoint": nodegroups,
            "groupId": DEV_PROVIDER,
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100,
                "instanceWarmupPeriod": 10, "scaleInEvaluationPeriodMinutes": 1},
            "managedTerminationProtection": "ENABLED",
            "managedDraining": "ENABLED"
        }
    });
    match c
        .create_capacity_provider(capstan_proto::api::v1::CreateCapacityProviderRequest {
            capacity_provider_json: doc.to_string(),
        })
        .await
    {
        // Kept from an earlier run with --data-dir: point it at this run's provider.
        Err(s) if s.message().contains("already exists") => Ok(()),
        Err(s) => bail!("creating capacity provider {DEV_PROVIDER}: {}", s.message()),
        Ok(_) => Ok(()),
    }
}

async fn start_and_serve(
    plane: &mut Plane,
    args: &DevArgs,
    etcd: &Path,
    bins: &Bins,
) -> anyhow::Result<i32> {
    let dir = plane.dir.clone();
    let client_port = if args.etcd_port == 0 {
        free_port()?
    } else {
        args.etcd_port
    };
    let peer_port = free_port()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let s = |v: &str| v.to_string();
    plane.start(
        "etcd",
        etcd,
        &[
            s("--name"),
            s("capstan-dev"),
            s("--data-dir"),
            dir.join("etcd").display().to_string(),
            s("--listen-client-urls"),
            client_url.clone(),
            s("--advertise-client-urls"),
            client_url.clone(),
            s("--listen-peer-urls"),
            peer_url.clone(),
            s("--initial-advertise-peer-urls"),
            peer_url.clone(),
            s("--initial-cluster"),
            format!("capstan-dev={peer_url}"),
        ],
    )?;
    wait_for(plane, "etcd", Duration::from_secs(30), || {
        etcd_healthy(client_port)
    })
    .await?;

    let common = vec![s("--etcd-endpoints"), client_url.clone()];
    let with = |extra: &[String]| -> Vec<String> {
        let mut v = common.clone();
        v.extend_from_slice(extra);
        v
    };
    plane.start(
        "api",
        &bins.api,
        &with(&[
            s("--listen"),
            args.api_listen.to_string(),
            s("--audit-log"),
            dir.join("logs").join("audit.log").display().to_string(),
            s("--encryption-key-file"),
            encryption_key(&dir)?.display().to_string(),
            s("--ecs-listen"),
            args.ecs_listen.to_string(),
        ]),
    )?;
    let api_log = dir.join("logs").join("api.log");
    wait_for(plane, "the API", Duration::from_secs(30), || {
        let found = log_line(&api_log, "capstan-api grpc=").is_some();
        async move { found }
    })
    .await?;
    let api_endpoint = log_line(&api_log, "capstan-api grpc=")
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("grpc=").map(str::to_string))
        })
        .context("the API did not say where it listens")?;
    let ecs_endpoint = log_line(&api_log, "capstan-api grpc=")
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("ecs=").map(str::to_string))
        })
        .context("the API did not say where its ECS endpoint listens")?;

    plane.start("scheduler", &bins.scheduler, &with(&[]))?;
    plane.start("deployer", &bins.deployer, &with(&[]))?;
    plane.start("scaler", &bins.scaler, &with(&[]))?;
    // A local node group for capacity-provider services: up to 5 agents, started on demand.
    plane.start(
        "nodegroup-local",
        &bins.nodegroups,
        &[
            s("--listen"),
            s("127.0.0.1:0"),
            s("--etcd-endpoints"),
            client_url.clone(),
            s("--data-dir"),
            dir.join("nodegroups").display().to_string(),
            s("--agent-bin"),
            bins.agent.display().to_string(),
            s("--encryption-key-file"),
            encryption_key(&dir)?.display().to_string(),
            s("--stop-on-exit"),
            s("--group"),
            format!("{DEV_PROVIDER}:min=0,max=5,cpu=2048,memory=4096,provider={DEV_PROVIDER},zones=dev-a|dev-b|dev-c"),
        ],
    )?;
    let ng_log = dir.join("logs").join("nodegroup-local.log");
    wait_for(
        plane,
        "the node-group provider",
        Duration::from_secs(30),
        || {
            let found = log_line(&ng_log, "capstan-nodegroup-local grpc=").is_some();
            async move { found }
        },
    )
    .await?;
    let ng_endpoint = log_line(&ng_log, "capstan-nodegroup-local grpc=")
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("grpc=").map(str::to_string))
        })
        .context("the node-group provider did not say where it listens")?;
    let token = admin_token(&api_endpoint, &dir).await?;
    create_dev_provider(&api_endpoint, &token, &ng_endpoint).await?;
    let (access_key_id, secret_key) = admin_access_key(&api_endpoint, &token, &dir).await?;
    let haproxy = if args.no_haproxy {
        None
    } else {
        which("haproxy")
    };
    match &haproxy {
        Some(h) => {
            let hdir = dir.join("haproxy");
            std::fs::create_dir_all(&hdir)?;
            plane.haproxy_dir = Some(hdir.clone());
            plane.start(
                "registrar",
                &bins.registrar,
                &with(&[
                    s("--haproxy-bin"),
                    h.display().to_string(),
                    s("--haproxy-dir"),
                    hdir.display().to_string(),
                    s("--stop-haproxy-on-exit"),
                ]),
            )?;
        }
        None => plane.start("registrar", &bins.registrar, &with(&[s("--no-data-plane")]))?,
    }
    let runtime = match args.runtime {
        Runtime::Process => "process",
        Runtime::Docker => "docker",
    };
    let mut zones = Vec::new();
    for i in 0..args.agents {
        let zone = format!("dev-{}", (b'a' + i) as char);
        let state = dir.join(format!("agent-{zone}"));
        plane.agent_dirs.push(state.clone());
        plane.start(
            &format!("agent-{zone}"),
            &bins.agent,
            &with(&[
                s("--runtime"),
                s(runtime),
                s("--state-dir"),
                state.display().to_string(),
                s("--attribute"),
                format!("ecs.availability-zone={zone}"),
                s("--cpu"),
                s("4096"),
                s("--memory"),
                s("4096"),
                s("--lease-ttl"),
                s("5"),
                s("--stop-tasks-on-exit"),
                s("--encryption-key-file"),
                encryption_key(&dir)?.display().to_string(),
            ]),
        )?;
        zones.push(zone);
    }
    for zone in &zones {
        let log = dir.join("logs").join(format!("agent-{zone}.log"));
        wait_for(
            plane,
            &format!("agent {zone}"),
            Duration::from_secs(30),
            || {
                let found = log_line(&log, "capstan-agent ").is_some();
                async move { found }
            },
        )
        .await?;
    }

    tell(&format!(
        "capstan dev: ready\n\
         \x20 API:        {api_endpoint}   (export CAPSTAN_ENDPOINT={api_endpoint})\n\
         \x20 admin:      capstan://user/admin   (export CAPSTAN_TOKEN={token})\n\
         \x20 ECS API:    {ecs_endpoint}   (aws ecs … --endpoint-url {ecs_endpoint})\n\
         \x20 aws keys:   export AWS_ACCESS_KEY_ID={access_key_id} AWS_SECRET_ACCESS_KEY={secret_key} AWS_DEFAULT_REGION=us-east-1\n\
         \x20 etcd:       {client_url}\n\
         \x20 agents:     {} ({runtime} runtime, zones {})\n\
         \x20 HAProxy:    {}\n\
         \x20 capacity:   provider {DEV_PROVIDER} (0-5 agents of 2048 CPU, started on demand by the scaler)\n\
         \x20 data, logs: {}{}\n\
         \n\
         Try:\n\
         \x20 capstan taskdef register -f examples/web-taskdef.json\n\
         \x20 capstan service create -f examples/web-service.json\n\
         \x20 capstan deploy web --task-definition web --wait\n\
         \x20 etcdctl --endpoints {client_url} watch --prefix /capstan/tasks/default/\n\
         \x20 aws ecs list-services --endpoint-url {ecs_endpoint}\n\
         \n\
         Ctrl-C stops everything.",
        zones.len(),
        zones.join(", "),
        haproxy.as_ref().map_or(
            "not installed (apt-get install haproxy); listeners are not served".to_string(),
            |h| h.display().to_string()
        ),
        dir.display(),
        if args.data_dir.is_none() {
            " (removed on exit; --data-dir keeps state)"
        } else {
            ""
        },
    ));

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hangup.recv() => break,
            _ = tick.tick() => plane.check_alive()?,
        }
    }
    say("capstan dev: stopping");
    Ok(0)
}

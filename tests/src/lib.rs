//! Helpers for end-to-end tests: locate (or build) the workspace's binaries, run them as real
//! processes, and read the cluster's state back from etcd.

pub mod web;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_core::task::{Task, TaskStatus};
use capstan_store::{Store, StoreConfig};

/// A directory for one test's processes and logs: removed afterwards, unless
/// `CAPSTAN_E2E_KEEP` is set (its path then goes to stderr, to read the logs of a failure).
pub fn test_dir() -> tempfile::TempDir {
    let keep = std::env::var_os("CAPSTAN_E2E_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("capstan-e2e-")
        .disable_cleanup(keep)
        .tempdir()
        .expect("test dir");
    if keep {
        eprintln!("test dir kept: {}", dir.path().display());
    }
    dir
}

/// The path of a workspace binary. `cargo test` does not build other packages' binaries, so
/// the test command builds them first (`cargo build --workspace --bins`, as `scripts/test.sh`
/// does); a nested cargo build here would wait forever on the lock the outer `cargo test` holds.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before these tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A process of one of our binaries, killed (SIGKILL) on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Fields of the line it printed on start (`key=value`), if asked to wait for one.
    pub fields: Vec<(String, String)>,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The log, opened for reading at start: still readable on drop after the test's directory
    /// is gone (a struct drops its directory before its processes).
    log_reader: Option<std::fs::File>,
}

impl Proc {
    /// Starts `bin` with `args`, logging to `log`; if `ready_prefix` is given, waits for a stdout
    /// line starting with it and keeps its `key=value` fields.
    pub fn start(bin: &str, args: &[String], log: &Path, ready_prefix: Option<&str>) -> Self {
        let logf = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut child = Command::new(binary(bin))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CAPSTAN_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let mut fields = Vec::new();
        if let Some(prefix) = ready_prefix {
            let stdout = child.stdout.take().expect("stdout");
            let line = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| {
                    panic!(
                        "{bin} did not start; log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    )
                });
            fields = line
                .split_whitespace()
                .filter_map(|f| {
                    f.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
        }
        Self {
            child,
            fields,
            log: log.to_path_buf(),
            log_reader: std::fs::File::open(log).ok(),
        }
    }

    /// A field of the start line.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what its processes logged last: CI keeps nothing else.
        if std::thread::panicking() {
            let mut text = String::new();
            if let Some(f) = self.log_reader.as_mut() {
                let _ = std::io::Read::read_to_string(f, &mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "---- last {} lines of {}\n{}",
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// How many lines of each process's log a failing test prints.
const LOG_TAIL: usize = 80;

/// A process-runtime agent in zone `zone`, state under `dir`.
pub fn agent(etcd: &[String], dir: &Path, zone: &str) -> Proc {
    agent_with(etcd, dir, zone, &[])
}

/// [`agent`] with `extra` flags.
pub fn agent_with(etcd: &[String], dir: &Path, zone: &str, extra: &[&str]) -> Proc {
    let state = dir.join(format!("agent-{zone}"));
    let mut args: Vec<String> = [
        "--etcd-endpoints",
        &etcd.join(","),
        "--runtime",
        "process",
        "--state-dir",
        &state.display().to_string(),
        "--lease-ttl",
        "2",
        "--attribute",
        &format!("ecs.availability-zone={zone}"),
        "--cpu",
        "4096",
        "--memory",
        "4096",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::start(
        "capstan-agent",
        &args,
        &dir.join(format!("agent-{zone}.log")),
        Some("capstan-agent "),
    )
}

/// Agents in zones a, b and c (registered), scheduler `s1` and deployer `d1` (tasks healthy
/// after 1 s), and a store client.
pub async fn workers(etcd: &[String], dir: &Path) -> (Vec<Proc>, Store) {
    let mut procs: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|z| agent(etcd, dir, z))
        .collect();
    let store = store(etcd).await;
    registered(&store, "default", 3).await;
    procs.push(scheduler(etcd, dir, "s1"));
    procs.push(deployer(etcd, dir, "d1", "1s"));
    (procs, store)
}

/// A replica of controller `name` (`scheduler`, `deployer`) named `id`, with `extra` flags.
pub fn controller(name: &str, etcd: &[String], dir: &Path, id: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = [
        "--etcd-endpoints",
        &etcd.join(","),
        "--election-ttl",
        "2",
        "--id",
        id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::start(
        &format!("capstan-{name}"),
        &args,
        &dir.join(format!("{name}-{id}.log")),
        None,
    )
}

/// A scheduler replica named `id`.
pub fn scheduler(etcd: &[String], dir: &Path, id: &str) -> Proc {
    controller("scheduler", etcd, dir, id, &["--node-loss-grace", "2s"])
}

/// A deployer replica named `id`; tasks count healthy after `grace` (e.g. `3s`).
pub fn deployer(etcd: &[String], dir: &Path, id: &str, grace: &str) -> Proc {
    controller("deployer", etcd, dir, id, &["--health-grace", grace])
}

/// A store client.
pub async fn store(etcd: &[String]) -> Store {
    Store::connect(&StoreConfig::new(etcd.to_vec(), "/capstan"))
        .await
        .expect("store")
}

/// Waits until `n` container instances are registered in `cluster` (agents print their ready
/// line before their registration lands).
pub async fn registered(store: &Store, cluster: &str, n: usize) {
    let prefix = store
        .keys()
        .list(capstan_core::keys::Family::ContainerInstances, &[cluster]);
    eventually(Duration::from_secs(20), "agents registered", || async {
        let l = store.list(&prefix).await.ok()?;
        (l.kvs.len() >= n).then_some(())
    })
    .await;
}

/// Writes `doc` at `key` as JSON text, as a user would with etcdctl.
pub async fn put_doc(store: &Store, key: &str, doc: &serde_json::Value) {
    store
        .put(key, doc.to_string().into_bytes())
        .await
        .expect("put");
}

/// Now, epoch seconds.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every deployment of `default/<service>`.
pub async fn deployments_of(store: &Store, service: &str) -> Vec<capstan_core::Deployment> {
    store
        .list(&store.keys().list(
            capstan_core::keys::Family::Deployments,
            &["default", service],
        ))
        .await
        .expect("list deployments")
        .kvs
        .iter()
        .filter_map(|kv| kv.json().ok())
        .collect()
}

/// Every task of the cluster.
pub async fn tasks(store: &Store, cluster: &str) -> Vec<Task> {
    store
        .list(
            &store
                .keys()
                .list(capstan_core::keys::Family::Tasks, &[cluster]),
        )
        .await
        .expect("list tasks")
        .kvs
        .iter()
        .filter_map(|kv| kv.json::<Task>().ok())
        .collect()
}

/// Tasks RUNNING (and desired RUNNING).
pub fn running(tasks: &[Task]) -> Vec<&Task> {
    tasks
        .iter()
        .filter(|t| {
            t.last_status == TaskStatus::Running
                && t.desired_status == capstan_core::task::DesiredStatus::Running
        })
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every tool in `tools` (each `[program, arg…]`) runs and succeeds; when one does not,
/// the test says so and is not run, except with `CI=true`, where a missing tool fails it.
pub fn tools_or_not_in_ci(tools: &[&[&str]]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| {
            !Command::new(t[0])
                .args(&t[1..])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|t| t[0])
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing:?} needed (CI=true: scripts/install-deps.sh installs them)"
    );
    eprintln!("{missing:?} not found: this test did not run");
    false
}

/// Kills every task process recorded in the agent state dirs under `dir` (tests leave nothing).
pub fn kill_task_processes(dir: &Path) {
    let Ok(agents) = std::fs::read_dir(dir) else {
        return;
    };
    for a in agents.flatten() {
        capstan_testing::kill_task_processes(&a.path());
    }
}

/// A `capstan-api` server on a free port with authorization off (`--authorization none`), for
/// tests about everything but security; its endpoint is `field("grpc")`.
pub fn api(etcd: &[String], dir: &Path) -> Proc {
    api_with(etcd, dir, None, &["--authorization", "none"])
}

/// The file a test API writes its audit log to.
pub fn audit_log(dir: &Path) -> std::path::PathBuf {
    dir.join("api-audit.log")
}

/// A `capstan-api` server on a free port, serving mutual TLS with `tls` when given, with
/// `auth` flags (authorization is IAM's unless they say otherwise); its audit log is
/// [`audit_log`].
pub fn api_with(
    etcd: &[String],
    dir: &Path,
    tls: Option<&capstan_proto::tls::TlsFiles>,
    auth: &[&str],
) -> Proc {
    let mut args: Vec<String> = [
        "--etcd-endpoints",
        &etcd.join(","),
        "--listen",
        "127.0.0.1:0",
        "--run-task-timeout",
        "20s",
        "--audit-log",
        &audit_log(dir).display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(auth.iter().map(|s| s.to_string()));
    args.extend(tls.map(tls_args).unwrap_or_default());
    Proc::start(
        "capstan-api",
        &args,
        &dir.join("api.log"),
        Some("capstan-api "),
    )
}

/// A client of the API at `endpoint`.
pub async fn api_client(
    endpoint: &str,
) -> capstan_proto::api::v1::capstan_client::CapstanClient<tonic::transport::Channel> {
    let channel = capstan_proto::tls::connect(endpoint, None)
        .await
        .expect("connect to the API");
    capstan_proto::api::v1::capstan_client::CapstanClient::new(channel)
}

/// The ECS exception an API error carries (`capstan-exception` metadata).
pub fn exception(s: &tonic::Status) -> String {
    s.metadata()
        .get("capstan-exception")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `--tls-cert`, `--tls-key`, `--tls-ca` for `files`.
pub fn tls_args(files: &capstan_proto::tls::TlsFiles) -> Vec<String> {
    [
        ("--tls-cert", &files.cert),
        ("--tls-key", &files.key),
        ("--tls-ca", &files.ca),
    ]
    .iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect()
}

/// A `capstan-nodegroup-local` with `groups` (`id:min=..,max=..`), its agents joining `etcd`.
/// Dropping it stops the provider, its agents and their tasks.
pub struct NodeGroups {
    /// The provider process; its endpoint is `field("grpc")`.
    pub proc: Proc,
    data: PathBuf,
    /// Its TLS identity, which [`NodeGroups::describe`] calls with too.
    tls: Option<capstan_proto::tls::TlsFiles>,
}

impl NodeGroups {
    /// Starts the provider.
    pub fn start(etcd: &[String], dir: &Path, groups: &[&str]) -> Self {
        Self::start_with_tls(etcd, dir, groups, None)
    }

    /// Starts the provider serving mutual TLS with `tls` (its agents get it too).
    pub fn start_with_tls(
        etcd: &[String],
        dir: &Path,
        groups: &[&str],
        tls: Option<capstan_proto::tls::TlsFiles>,
    ) -> Self {
        Self::start_with(etcd, dir, groups, tls, &[])
    }

    /// [`NodeGroups::start_with_tls`] with `extra` flags.
    pub fn start_with(
        etcd: &[String],
        dir: &Path,
        groups: &[&str],
        tls: Option<capstan_proto::tls::TlsFiles>,
        extra: &[&str],
    ) -> Self {
        let data = dir.join("nodegroups");
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--etcd-endpoints",
            &etcd.join(","),
            "--agent-lease-ttl",
            "2",
            "--stop-on-exit",
            "--data-dir",
            &data.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for g in groups {
            args.push("--group".into());
            args.push((*g).to_string());
        }
        if let Some(t) = &tls {
            args.extend(tls_args(t));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(
            "capstan-nodegroup-local",
            &args,
            &dir.join("nodegroup-local.log"),
            Some("capstan-nodegroup-local "),
        );
        Self { proc, data, tls }
    }

    /// The provider's gRPC endpoint.
    pub fn endpoint(&self) -> String {
        self.proc.field("grpc").to_string()
    }

    /// DescribeGroup.
    pub async fn describe(
        &self,
        group: &str,
    ) -> capstan_proto::nodegroup::v1::DescribeGroupResponse {
        let channel = capstan_proto::tls::connect(&self.endpoint(), self.tls.as_ref())
            .await
            .expect("connect to the provider");
        capstan_proto::nodegroup::v1::node_group_provider_client::NodeGroupProviderClient::new(
            channel,
        )
        .describe_group(capstan_proto::nodegroup::v1::DescribeGroupRequest {
            group_id: group.into(),
        })
        .await
        .expect("describe group")
        .into_inner()
    }
}

impl Drop for NodeGroups {
    fn drop(&mut self) {
        // SIGTERM: with --stop-on-exit the provider stops its agents and their tasks.
        if let Ok(pid) = i32::try_from(self.proc.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline && matches!(self.proc.child.try_wait(), Ok(None))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever is left (a provider that was killed): agents from the records, then tasks.
        for e in std::fs::read_dir(&self.data)
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            for m in rec["members"].as_array().into_iter().flatten() {
                if let Some(pid) = m["pid"].as_i64().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if let Some(d) = m["state_dir"].as_str() {
                    capstan_testing::kill_task_processes(Path::new(d));
                }
            }
        }
    }
}

/// A scaler replica named `id`, evaluating every second.
pub fn scaler(etcd: &[String], dir: &Path, id: &str) -> Proc {
    controller("scaler", etcd, dir, id, &["--interval", "1s"])
}

/// `capstan dev`, stopped with SIGINT (as Ctrl-C) if a failed assertion leaves it running.
pub struct Dev(pub std::process::Child);

impl Dev {
    /// `capstan dev` with two agents and no HAProxy, every port picked free, state in `data`,
    /// its stdout piped for the test to read.
    pub fn spawn(data: &Path) -> Self {
        Dev(Command::new(binary("capstan"))
            .args(["dev", "--api-listen", "127.0.0.1:0", "--etcd-port", "0"])
            .args([
                "--ecs-listen",
                "127.0.0.1:0",
                "--agents",
                "2",
                "--no-haproxy",
            ])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("capstan dev starts"))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.0.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
        }
    }
}

/// The task id in `capstan -o json task run`'s output (the last part of its taskArn).
pub fn run_task_id(out: &str) -> String {
    let task: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    task["taskArn"]
        .as_str()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_else(|| panic!("no taskArn in {out}"))
        .to_string()
}

/// Runs the `capstan` CLI against `endpoint`: (succeeded, stdout, stderr).
pub fn cli(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("capstan"))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .output()
        .expect("capstan runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

//! `capstan-nodegroup-local`: a node-group provider (`capstan.nodegroup.v1.NodeGroupProvider`)
//! whose instances are `capstan-agent` processes on this machine, each with the group's CPU,
//! memory and zone and the attribute `capstan.capacity-provider=<provider>`. It keeps each
//! group at its desired capacity like an auto scaling group: it starts agents, replaces ones
//! that die, and terminates the ones asked for (their task processes with them, as a machine
//! that powers off). Members are recorded under `--data-dir`, so a restarted provider adopts
//! the agents it started instead of starting more.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_proto::nodegroup::v1 as pb;
use capstan_proto::nodegroup::v1::node_group_provider_server::{
    NodeGroupProvider, NodeGroupProviderServer,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Default listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7600";

/// One group, from `--group id:min=0,max=10,desired=1,cpu=1024,memory=2048,provider=cp,zones=a|b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Group id.
    pub id: String,
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// Desired capacity at first start.
    pub desired: u32,
    /// CPU units of one instance.
    pub cpu: i64,
    /// MiB of one instance.
    pub memory: i64,
    /// Capacity provider name its instances carry.
    pub provider: String,
    /// Zones instances are spread over, round robin.
    pub zones: Vec<String>,
}

/// Parses a `--group` value.
pub fn parse_group(s: &str) -> Result<GroupSpec, String> {
    let (id, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected id:key=value,..."))?;
    let mut g = GroupSpec {
        id: id.to_string(),
        min: 0,
        max: 10,
        desired: 0,
        cpu: 1024,
        memory: 2048,
        provider: id.to_string(),
        zones: vec!["local-a".into()],
    };
    for kv in rest.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?}: expected key=value"))?;
        let num = |v: &str| v.parse::<u32>().map_err(|e| format!("{k}={v}: {e}"));
        match k {
            "min" => g.min = num(v)?,
            "max" => g.max = num(v)?,
            "desired" => g.desired = num(v)?,
            "cpu" => g.cpu = i64::from(num(v)?),
            "memory" => g.memory = i64::from(num(v)?),
            "provider" => g.provider = v.to_string(),
            "zones" => g.zones = v.split('|').map(str::to_string).collect(),
            other => return Err(format!("unknown group setting {other:?}")),
        }
    }
    if id.is_empty() || g.min > g.max || g.desired > g.max {
        return Err(format!("{s:?}: need an id and min <= desired <= max"));
    }
    g.desired = g.desired.max(g.min);
    Ok(g)
}

/// `capstan-nodegroup-local` arguments.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "capstan-nodegroup-local",
    version,
    about = "Node groups of local capstan-agent processes"
)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, default_value = LISTEN_DEFAULT)]
    pub listen: SocketAddr,
    /// A group: `id:min=0,max=10,desired=1,cpu=1024,memory=2048,provider=<name>,zones=a|b`.
    #[arg(long = "group", value_parser = parse_group, required = true)]
    pub groups: Vec<GroupSpec>,
    /// Where members' state directories and the member records live.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The capstan-agent binary; next to this binary by default.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// etcd endpoints the agents register with.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Cluster the agents join.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Agents' registration lease TTL, seconds.
    #[arg(long, default_value_t = 3)]
    pub agent_lease_ttl: u32,
    /// Stop every member (and its tasks) when the provider stops; by default they keep running
    /// and are adopted on restart, as a cloud's instances outlive its API clients.
    #[arg(long)]
    pub stop_on_exit: bool,
    /// The key that opens secrets, given to every agent it starts (the agents'
    /// --encryption-key-file); without it their tasks cannot have secrets.
    #[arg(long, env = "CAPSTAN_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Mutual TLS: the provider serves with it, and the agents it starts get the same identity
    /// (its certificate must name 127.0.0.1, where they listen).
    #[command(flatten)]
    pub tls: capstan_proto::tls::TlsArgs,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One instance: an agent process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    id: String,
    pid: i32,
    state_dir: PathBuf,
    launched_at_ms: i64,
    terminating: bool,
}

impl Member {
    fn alive(&self) -> bool {
        // A zombie still answers kill(0); its /proc status says so.
        kill(Pid::from_raw(self.pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
    }

    fn container_instance(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join("instance-id"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Kills the member's task processes (what powering off the machine does to them).
    fn kill_tasks(&self) {
        for pid in capstan_agent_client::state::task_process_groups(&self.state_dir) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

struct Group {
    spec: GroupSpec,
    desired: u32,
    members: Vec<Member>,
    launched: u64,
}

/// The provider: groups and their members.
pub struct Provider {
    args: Args,
    agent_bin: PathBuf,
    groups: Mutex<BTreeMap<String, Group>>,
    wake: Notify,
}

#[derive(Serialize, Deserialize)]
struct Record {
    desired: u32,
    members: Vec<Member>,
}

impl Provider {
    /// A provider for `args`, adopting members recorded by an earlier run that still live.
    pub fn new(args: Args) -> std::io::Result<Arc<Self>> {
        let agent_bin = match &args.agent_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(|d| d.join("capstan-agent"))
                .unwrap_or_else(|| PathBuf::from("capstan-agent")),
        };
        std::fs::create_dir_all(&args.data_dir)?;
        let mut groups = BTreeMap::new();
        for spec in &args.groups {
            let record: Option<Record> =
                std::fs::read(args.data_dir.join(format!("{}.json", spec.id)))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
            let (desired, members) = match record {
                Some(r) => (
                    r.desired.clamp(spec.min, spec.max),
                    r.members.into_iter().filter(Member::alive).collect(),
                ),
                None => (spec.desired, Vec::new()),
            };
            groups.insert(
                spec.id.clone(),
                Group {
                    spec: spec.clone(),
                    desired,
                    members,
                    launched: 0,
                },
            );
        }
        Ok(Arc::new(Self {
            args,
            agent_bin,
            groups: Mutex::new(groups),
            wake: Notify::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, g: &Group) {
        let r = Record {
            desired: g.desired,
            members: g.members.clone(),
        };
        let path = self.args.data_dir.join(format!("{}.json", g.spec.id));
        let tmp = path.with_extension("json.tmp");
        if let Ok(bytes) = serde_json::to_vec(&r)
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    fn spawn_member(&self, g: &mut Group) -> std::io::Result<Member> {
        let id = format!(
            "{}-{}",
            g.spec.id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let state_dir = self.args.data_dir.join(&g.spec.id).join(&id);
        std::fs::create_dir_all(&state_dir)?;
        let zone = g.spec.zones[(g.launched as usize) % g.spec.zones.len().max(1)].clone();
        g.launched += 1;
        let log = std::fs::File::create(state_dir.join("agent.log"))?;
        let mut cmd = tokio::process::Command::new(&self.agent_bin);
        cmd.arg("--etcd-endpoints")
            .arg(self.args.etcd_endpoints.join(","))
            .args(["--runtime", "process", "--cluster", &self.args.cluster])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--cpu", &g.spec.cpu.to_string()])
            .args(["--memory", &g.spec.memory.to_string()])
            .args(["--lease-ttl", &self.args.agent_lease_ttl.to_string()])
            .arg("--attribute")
            .arg(format!("capstan.capacity-provider={}", g.spec.provider))
            .arg("--attribute")
            .arg(format!("ecs.availability-zone={zone}"))
            .arg("--attribute")
            .arg(format!("capstan.node-group={}", g.spec.id));
        if let Some(key) = &self.args.encryption_key_file {
            cmd.arg("--encryption-key-file").arg(key);
        }
        if let Some(tls) = self.args.tls.files() {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--tls-ca")
                .arg(&tls.ca);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| std::io::Error::other("agent exited at once"))?;
        // Reap it whenever it exits.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        tracing::info!(group = %g.spec.id, member = %id, pid, %zone, "instance launched");
        Ok(Member {
            id,
            pid,
            state_dir,
            launched_at_ms: now_ms(),
            terminating: false,
        })
    }

    fn terminate(m: &mut Member) {
        if !m.terminating {
            tracing::info!(member = %m.id, pid = m.pid, "instance terminating");
        }
        m.terminating = true;
        m.kill_tasks();
        let _ = kill(Pid::from_raw(m.pid), Signal::SIGTERM);
    }

    /// One pass: forget dead members, replace crashed ones, meet the desired capacity.
    fn converge(&self) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            g.members.retain(|m| {
                let alive = m.alive();
                if !alive && !m.terminating {
                    tracing::warn!(member = %m.id, "instance died; replacing it");
                }
                alive
            });
            // Members asked to stop that hang on get SIGKILL after 10 s.
            for m in g.members.iter().filter(|m| m.terminating) {
                let _ = kill(Pid::from_raw(m.pid), Signal::SIGTERM);
            }
            let live = g.members.iter().filter(|m| !m.terminating).count() as u32;
            if live < g.desired {
                for _ in live..g.desired {
                    match self.spawn_member(g) {
                        Ok(m) => g.members.push(m),
                        Err(e) => {
                            tracing::error!(group = %g.spec.id, error = %e, "cannot launch an instance");
                            break;
                        }
                    }
                }
            } else if live > g.desired {
                // Newest first, as an auto scaling group without a termination policy would.
                let mut extra = (live - g.desired) as usize;
                for m in g.members.iter_mut().rev().filter(|m| !m.terminating) {
                    if extra == 0 {
                        break;
                    }
                    Self::terminate(m);
                    extra -= 1;
                }
            }
            self.save(g);
        }
    }

    /// Keeps the groups converged until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            self.converge();
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        if self.args.stop_on_exit {
            for g in self.lock().values_mut() {
                for m in &mut g.members {
                    Self::terminate(m);
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < deadline && self.any_alive() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for g in self.lock().values_mut() {
                for m in &g.members {
                    let _ = kill(Pid::from_raw(m.pid), Signal::SIGKILL);
                }
                g.members.clear();
                g.desired = g.spec.min;
                self.save(g);
            }
        }
    }

    fn any_alive(&self) -> bool {
        self.lock()
            .values()
            .any(|g| g.members.iter().any(Member::alive))
    }

    fn describe(&self, id: &str) -> Result<pb::DescribeGroupResponse, Status> {
        let groups = self.lock();
        let g = groups
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no group {id}")))?;
        Ok(pb::DescribeGroupResponse {
            group_id: id.to_string(),
            min_size: g.spec.min,
            max_size: g.spec.max,
            desired_capacity: g.desired,
            instances: g
                .members
                .iter()
                .map(|m| {
                    let ci = m.container_instance();
                    let state = match (m.terminating, &ci) {
                        (true, _) => pb::InstanceState::Terminating,
                        (false, Some(_)) => pb::InstanceState::Running,
                        (false, None) => pb::InstanceState::Starting,
                    };
                    pb::Instance {
                        instance_id: m.id.clone(),
                        container_instance_id: ci.unwrap_or_default(),
                        state: state as i32,
                        launched_at_ms: m.launched_at_ms,
                    }
                })
                .collect(),
            instance_cpu: g.spec.cpu,
            instance_memory: g.spec.memory,
            capacity_provider: g.spec.provider.clone(),
        })
    }
}

fn group_mut<'a>(
    groups: &'a mut BTreeMap<String, Group>,
    id: &str,
) -> Result<&'a mut Group, Status> {
    groups
        .get_mut(id)
        .ok_or_else(|| Status::not_found(format!("no group {id}")))
}

/// The gRPC face of a [`Provider`].
pub struct Service(pub Arc<Provider>);

#[tonic::async_trait]
impl NodeGroupProvider for Service {
    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Ok(Response::new(
            self.0.describe(&request.into_inner().group_id)?,
        ))
    }

    async fn set_desired_capacity(
        &self,
        request: Request<pb::SetDesiredCapacityRequest>,
    ) -> Result<Response<pb::SetDesiredCapacityResponse>, Status> {
        let req = request.into_inner();
        let desired = {
            let mut groups = self.0.lock();
            let g = group_mut(&mut groups, &req.group_id)?;
            if req.desired_capacity < g.spec.min || req.desired_capacity > g.spec.max {
                return Err(Status::invalid_argument(format!(
                    "desired capacity {} is outside [{}, {}]",
                    req.desired_capacity, g.spec.min, g.spec.max
                )));
            }
            if g.desired != req.desired_capacity {
                tracing::info!(group = %req.group_id, from = g.desired, to = req.desired_capacity, "desired capacity set");
            }
            g.desired = req.desired_capacity;
            self.0.save(g);
            g.desired
        };
        self.0.wake.notify_one();
        Ok(Response::new(pb::SetDesiredCapacityResponse {
            desired_capacity: desired,
        }))
    }

    async fn terminate_instances(
        &self,
        request: Request<pb::TerminateInstancesRequest>,
    ) -> Result<Response<pb::TerminateInstancesResponse>, Status> {
        let req = request.into_inner();
        let desired = {
            let mut groups = self.0.lock();
            let g = group_mut(&mut groups, &req.group_id)?;
            for id in &req.instance_ids {
                let Some(m) = g.members.iter_mut().find(|m| &m.id == id) else {
                    return Err(Status::not_found(format!(
                        "no instance {id} in {}",
                        req.group_id
                    )));
                };
                if !m.terminating {
                    Provider::terminate(m);
                    g.desired = g.desired.saturating_sub(1).max(g.spec.min);
                }
            }
            self.0.save(g);
            g.desired
        };
        self.0.wake.notify_one();
        Ok(Response::new(pb::TerminateInstancesResponse {
            desired_capacity: desired,
        }))
    }
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or socket.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] capstan_proto::tls::TlsError),
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(args: Args) -> Result<(), StartError> {
    let cancel = CancellationToken::new();
    capstan_runtime::spawn_signal_handler(cancel.clone());
    let listen = args.listen;
    let tls = args.tls.files();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        server = server.tls_config(tls.server()?)?;
    }
    let provider = Provider::new(args)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("capstan-nodegroup-local grpc={scheme}://{bound}");
    tracing::info!(%bound, tls = tls.is_some(), "node-group provider started");
    let keeper = tokio::spawn(provider.clone().run(cancel.clone()));
    let c = cancel.clone();
    server
        .add_service(NodeGroupProviderServer::new(Service(provider)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move { c.cancelled().await },
        )
        .await?;
    let _ = keeper.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_flags_parse() {
        let g = parse_group("g1:min=1,max=5,cpu=512,memory=1024,provider=cp,zones=a|b")
            .expect("parses");
        assert_eq!(
            (g.min, g.max, g.desired, g.cpu, g.memory),
            (1, 5, 1, 512, 1024)
        );
        assert_eq!(g.provider, "cp");
        assert_eq!(g.zones, ["a", "b"]);
        assert!(parse_group("g1:min=3,max=2").is_err());
        assert!(parse_group("g1:bogus=1").is_err());
        assert!(parse_group("nocolon").is_err());
    }
}

//! The `docker` runtime: one container per container definition through the Docker Engine API
//! (bollard), labelled with its task so it can be found again after an agent restart.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, HostConfigLogConfig,
    NetworkCreateRequest, PortBinding, ResourcesUlimits, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptionsBuilder, RemoveContainerOptions, RemoveVolumeOptions,
    ResizeExecOptions, StopContainerOptions,
};
use capstan_core::container::{DockerVolumeConfiguration, NamespaceMode, VolumeScope};
use capstan_core::task::NetworkBinding;
use capstan_core::taskdef::{HealthCheck, NetworkMode, Protocol};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::exec;
use super::{
    ContainerRuntime, ContainerSpec, ExecEvent, ExecRequest, ExecSession, Exit, LogQuery,
    MountSource, RuntimeError, Started, TaskPolicy,
};
use crate::logs::{LogLine, Stream};
use crate::model::Handle;

/// Label holding the task id.
pub const LABEL_TASK: &str = "capstan.task-id";
/// Label holding the container name.
pub const LABEL_CONTAINER: &str = "capstan.container-name";
/// Label holding the cluster.
pub const LABEL_CLUSTER: &str = "capstan.cluster";

/// Runs containers through a Docker engine.
pub struct DockerRuntime {
    docker: Docker,
    version: String,
    pull: bool,
    policy: TaskPolicy,
    /// Held while finding or creating an awsvpc network, so this agent creates it once.
    networks: tokio::sync::Mutex<()>,
}

impl DockerRuntime {
    /// Connects to the engine at `host` (`unix:///…`), or the local default, and negotiates the
    /// API version (Debian's Docker 20.10 rejects bollard's default).
    /// Containers get what `policy` allows: ports bound to its address, `privileged` only when
    /// it allows it.
    pub async fn connect(
        host: Option<&str>,
        pull: bool,
        policy: TaskPolicy,
    ) -> Result<Self, RuntimeError> {
        let docker = match host {
            Some(h) if h.starts_with("unix://") || h.starts_with('/') => {
                Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION)?
            }
            Some(h) => Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION)?,
            None => Docker::connect_with_local_defaults()?,
        };
        let docker = docker.negotiate_version().await?;
        let version = docker
            .version()
            .await?
            .version
            .unwrap_or_else(|| "unknown".into());
        Ok(Self {
            docker,
            version,
            pull,
            policy,
            networks: tokio::sync::Mutex::new(()),
        })
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        if !self.pull {
            return Err(RuntimeError::Invalid(format!(
                "CannotPullContainerError: image {image} is not present on this instance and pulling is off (--docker-pull=false)"
            )));
        }
        let opts = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                return Err(RuntimeError::Invalid(format!(
                    "CannotPullContainerError: image {image} is not present on this instance and pulling it failed: {e}"
                )));
            }
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        if spec.privileged && !self.policy.allow_privileged {
            return Err(RuntimeError::Invalid(format!(
                "container {} asks to be privileged, which this agent refuses (start it with --allow-privileged to allow)",
                spec.name
            )));
        }
        self.ensure_image(&spec.image).await?;
        let bind = self.policy.bind_address.to_string();
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.insert(LABEL_TASK.into(), spec.task_id.clone());
        labels.insert(LABEL_CONTAINER.into(), spec.name.clone());
        labels.insert(LABEL_CLUSTER.into(), spec.cluster.clone());
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let host_network = spec.options.network_mode == Some(NetworkMode::Host);
        let awsvpc = spec.options.network_mode == Some(NetworkMode::Awsvpc);
        // awsvpc: the task's first container joins the cluster's network; the others share its
        // namespace (one address per task, as an ENI).
        let awsvpc_mode = if awsvpc {
            let net = self.ensure_network(&spec.cluster).await?;
            Some(match self.running_peer(&spec.task_id).await {
                Some(peer) => format!("container:{peer}"),
                None => net,
            })
        } else {
            None
        };
        for pm in spec.ports.iter().filter(|_| !host_network && !awsvpc) {
            let Some(cp) = pm.container_port else {
                continue;
            };
            let key = format!("{cp}/{}", proto_name(pm.protocol()));
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(bind.clone()),
                    // Empty: Docker picks a free host port (ECS's hostPort 0).
                    host_port: Some(
                        pm.static_host_port()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                    ),
                }]),
            );
        }
        let mib = |m: u32| i64::from(m) * 1024 * 1024;
        let binds = self.binds(spec).await?;
        let volumes_from = self.volumes_from(spec).await?;
        let o = &spec.options;
        let lp = o.linux.clone().unwrap_or_default();
        let caps = lp.capabilities.clone().unwrap_or_default();
        let (pid_mode, ipc_mode) = self.namespace_modes(spec).await;
        let nonempty = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.entry_point.is_empty()).then(|| spec.entry_point.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_directory.clone(),
            user: spec.user.clone(),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            hostname: o.hostname.clone(),
            open_stdin: Some(o.interactive),
            tty: Some(o.pseudo_terminal),
            network_disabled: o.disable_networking.then_some(true),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                memory: spec.memory.map(mib),
                memory_reservation: spec.memory_reservation.map(mib),
                // ECS's maxSwap is swap on top of memory; Docker's MemorySwap is their sum.
                memory_swap: lp
                    .max_swap
                    .zip(spec.memory)
                    .map(|(swap, mem)| mib(mem) + mib(swap)),
                memory_swappiness: lp.swappiness.map(i64::from),
                // ECS passes cpu units as CPU shares, with 2 as the floor.
                cpu_shares: Some(i64::from(spec.cpu.unwrap_or(0).max(2))),
                privileged: Some(spec.privileged),
                readonly_rootfs: Some(spec.readonly_root_filesystem),
                binds: nonempty(binds),
                volumes_from: nonempty(volumes_from),
                cap_add: nonempty(caps.add),
                cap_drop: nonempty(caps.drop),
                devices: (!lp.devices.is_empty()).then(|| {
                    lp.devices
                        .iter()
                        .map(|d| DeviceMapping {
                            path_on_host: Some(d.host_path.clone()),
                            path_in_container: Some(
                                d.container_path
                                    .clone()
                                    .unwrap_or_else(|| d.host_path.clone()),
                            ),
                            cgroup_permissions: Some(cgroup_permissions(&d.permissions)),
                        })
                        .collect()
                }),
                init: lp.init_process_enabled,
                shm_size: lp.shared_memory_size.map(mib),
                tmpfs: (!lp.tmpfs.is_empty()).then(|| {
                    lp.tmpfs
                        .iter()
                        .map(|t| {
                            let mut opts = vec![format!("size={}m", t.size)];
                            opts.extend(t.mount_options.iter().cloned());
                            (t.container_path.clone(), opts.join(","))
                        })
                        .collect()
                }),
                ulimits: (!o.ulimits.is_empty()).then(|| {
                    o.ulimits
                        .iter()
                        .map(|u| ResourcesUlimits {
                            name: Some(u.name.clone()),
                            soft: Some(u.soft_limit),
                            hard: Some(u.hard_limit),
                        })
                        .collect()
                }),
                dns: nonempty(o.dns_servers.clone()),
                dns_search: nonempty(o.dns_search_domains.clone()),
                extra_hosts: nonempty(
                    o.extra_hosts
                        .iter()
                        .map(|h| format!("{}:{}", h.hostname, h.ip_address))
                        .collect(),
                ),
                security_opt: nonempty(o.security_options.clone()),
                sysctls: (!o.system_controls.is_empty()).then(|| {
                    o.system_controls
                        .iter()
                        .map(|s| (s.namespace.clone(), s.value.clone()))
                        .collect()
                }),
                network_mode: match o.network_mode {
                    Some(NetworkMode::Host) => Some("host".into()),
                    Some(NetworkMode::None) => Some("none".into()),
                    Some(NetworkMode::Awsvpc) => awsvpc_mode,
                    _ => None,
                },
                pid_mode,
                ipc_mode,
                device_requests: (o.gpus > 0).then(|| {
                    vec![DeviceRequest {
                        count: Some(i64::from(o.gpus)),
                        capabilities: Some(vec![vec!["gpu".into()]]),
                        ..Default::default()
                    }]
                }),
                log_config: o
                    .log_driver
                    .as_ref()
                    .map(|(driver, opts)| HostConfigLogConfig {
                        typ: Some(driver.clone()),
                        config: Some(opts.clone()),
                    }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Unique even if a container of an older task with the same id is still around.
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("capstan-{}-{}-{}", spec.task_id, spec.name, &suffix[..8]);
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await?;
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove_container(&id).await;
            return Err(e.into());
        }
        self.started(id, spec).await
    }

    /// A started container's handle and the host ports it got.
    async fn started(&self, id: String, spec: &ContainerSpec) -> Result<Started, RuntimeError> {
        let bind = self.policy.bind_address.to_string();
        let host_network = spec.options.network_mode == Some(NetworkMode::Host);
        let info = self.docker.inspect_container(&id, None).await?;
        if spec.options.network_mode == Some(NetworkMode::Awsvpc) {
            // Reached at its own address and container ports: nothing is published.
            let ip = self.task_address(&info, &spec.cluster).await;
            if ip.is_none() {
                let _ = self.remove_container(&id).await;
                return Err(RuntimeError::Invalid(format!(
                    "container {} got no address on network {}",
                    spec.name,
                    task_network(&spec.cluster)
                )));
            }
            return Ok(Started {
                handle: Handle::Docker { id },
                bindings: Vec::new(),
                ip,
            });
        }
        let ports = info
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default();
        let mut out = Vec::new();
        for pm in &spec.ports {
            let Some(cp) = pm.container_port else {
                continue;
            };
            // On the host's network the container's port is the host's.
            if host_network {
                out.push(NetworkBinding {
                    bind_ip: bind.clone(),
                    container_port: cp,
                    host_port: cp,
                    protocol: pm.protocol(),
                });
                continue;
            }
            let key = format!("{cp}/{}", proto_name(pm.protocol()));
            let host_port = ports.get(&key).and_then(|b| b.as_ref()).and_then(|b| {
                b.iter()
                    .find_map(|b| b.host_port.as_ref()?.parse::<u32>().ok())
            });
            if let Some(hp) = host_port {
                out.push(NetworkBinding {
                    bind_ip: bind.clone(),
                    container_port: cp,
                    host_port: hp,
                    protocol: pm.protocol(),
                });
            }
        }
        Ok(Started {
            handle: Handle::Docker { id },
            bindings: out,
            ip: None,
        })
    }

    /// An awsvpc container's address on its cluster's network: its own, or that of the task's
    /// container whose network namespace it joined.
    async fn task_address(
        &self,
        info: &bollard::models::ContainerInspectResponse,
        cluster: &str,
    ) -> Option<String> {
        let net = task_network(cluster);
        let own = |i: &bollard::models::ContainerInspectResponse| {
            i.network_settings
                .as_ref()?
                .networks
                .as_ref()?
                .get(&net)?
                .ip_address
                .clone()
                .filter(|ip| !ip.is_empty())
        };
        if let Some(ip) = own(info) {
            return Some(ip);
        }
        let peer = info
            .host_config
            .as_ref()?
            .network_mode
            .as_deref()?
            .strip_prefix("container:")?
            .to_string();
        own(&self.docker.inspect_container(&peer, None).await.ok()?)
    }

    /// The id of the cluster's awsvpc network, created on first use (a user-defined bridge the
    /// host routes to, so load balancers on this host reach tasks at their addresses). Docker
    /// allows two networks of one name, and agents sharing an engine may race to create it: all
    /// use the oldest, and a loser removes its own. An operator may create it beforehand with
    /// another driver (macvlan, an attachable overlay) to make task addresses routable further.
    async fn ensure_network(&self, cluster: &str) -> Result<String, RuntimeError> {
        let _one = self.networks.lock().await;
        let name = task_network(cluster);
        if let Some(id) = self.networks_named(&name).await?.first() {
            return Ok(id.clone());
        }
        let created = self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(HashMap::from([(
                    LABEL_CLUSTER.to_string(),
                    cluster.to_string(),
                )])),
                ..Default::default()
            })
            .await?
            .id;
        let all = self.networks_named(&name).await?;
        let Some(oldest) = all.first() else {
            return Err(RuntimeError::Invalid(format!(
                "network {name} vanished after it was created"
            )));
        };
        if *oldest != created {
            let _ = self.docker.remove_network(&created).await;
        }
        Ok(oldest.clone())
    }

    /// Ids of the networks called exactly `name`, oldest first.
    async fn networks_named(&self, name: &str) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let mut found: Vec<(String, String)> = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await?
            .into_iter()
            // Docker's name filter matches substrings.
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some((n.created.unwrap_or_default(), n.id?)))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    /// `Binds` for the container's mounts, creating its Docker volumes first: task-scoped ones
    /// always, shared ones when `autoprovision` says so (else they must exist).
    async fn binds(&self, spec: &ContainerSpec) -> Result<Vec<String>, RuntimeError> {
        let mut out = Vec::new();
        for m in &spec.mounts {
            let source = match &m.source {
                MountSource::HostPath(p) | MountSource::Dir(p) => p.display().to_string(),
                MountSource::DockerVolume { name, config } => {
                    self.ensure_volume(&spec.task_id, name, config).await?;
                    name.clone()
                }
            };
            let ro = if m.read_only { ":ro" } else { "" };
            out.push(format!("{source}:{}{ro}", m.target));
        }
        Ok(out)
    }

    async fn ensure_volume(
        &self,
        task_id: &str,
        name: &str,
        config: &DockerVolumeConfiguration,
    ) -> Result<(), RuntimeError> {
        let shared = config.scope() == VolumeScope::Shared;
        if shared && self.docker.inspect_volume(name).await.is_ok() {
            return Ok(());
        }
        if shared && config.autoprovision != Some(true) {
            return Err(RuntimeError::Invalid(format!(
                "shared volume {name} does not exist on this instance and autoprovision is off"
            )));
        }
        let mut labels: HashMap<String, String> = config.labels.clone().into_iter().collect();
        if !shared {
            // Found again, and removed, with its task.
            labels.insert(LABEL_TASK.into(), task_id.to_string());
        }
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: config.driver.clone(),
                driver_opts: Some(config.driver_opts.clone().into_iter().collect()),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// `VolumesFrom` for the container: its task's containers, found by label.
    async fn volumes_from(&self, spec: &ContainerSpec) -> Result<Vec<String>, RuntimeError> {
        let mut out = Vec::new();
        for (source, ro) in &spec.volumes_from {
            let Some(Handle::Docker { id }) = self.find(&spec.task_id, source).await else {
                return Err(RuntimeError::Invalid(format!(
                    "volumesFrom: container {source} of the task has no Docker container yet"
                )));
            };
            out.push(if *ro { format!("{id}:ro") } else { id });
        }
        Ok(out)
    }

    /// Docker's `PidMode` and `IpcMode` for the task's modes: `host`; `task`, as the namespace
    /// of the task's first container already running (the first one is made shareable).
    async fn namespace_modes(&self, spec: &ContainerSpec) -> (Option<String>, Option<String>) {
        let o = &spec.options;
        let needs_peer =
            o.pid_mode == Some(NamespaceMode::Task) || o.ipc_mode == Some(NamespaceMode::Task);
        let peer = if needs_peer {
            self.running_peer(&spec.task_id).await
        } else {
            None
        };
        let pid = match (o.pid_mode, &peer) {
            (Some(NamespaceMode::Host), _) => Some("host".to_string()),
            (Some(NamespaceMode::Task), Some(id)) => Some(format!("container:{id}")),
            _ => None,
        };
        let ipc = match (o.ipc_mode, &peer) {
            (Some(NamespaceMode::Host), _) => Some("host".to_string()),
            (Some(NamespaceMode::None), _) => Some("none".to_string()),
            (Some(NamespaceMode::Task), Some(id)) => Some(format!("container:{id}")),
            (Some(NamespaceMode::Task), None) => Some("shareable".to_string()),
            _ => None,
        };
        (pid, ipc)
    }

    /// A running container of the task, if any.
    async fn running_peer(&self, task_id: &str) -> Option<String> {
        self.labelled(vec![format!("{LABEL_TASK}={task_id}")], false)
            .await
    }

    /// The id of a container with every one of `labels`; stopped ones too with `all`.
    async fn labelled(&self, labels: Vec<String>, all: bool) -> Option<String> {
        let filters = HashMap::from([("label".to_string(), labels)]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .ok()?;
        found.into_iter().find_map(|c| c.id)
    }

    async fn remove_container(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
    }

    async fn exit_code(docker: &Docker, id: &str) -> Exit {
        match docker.inspect_container(id, None).await {
            Ok(info) => match info.state.and_then(|s| s.exit_code) {
                Some(c) => Exit::Code(i32::try_from(c).unwrap_or(-1)),
                None => Exit::Unknown("docker reported no exit code".into()),
            },
            Err(e) => Exit::Unknown(format!("container is gone: {e}")),
        }
    }

    async fn exec_check(&self, id: &str, spec: &ContainerSpec, check: &HealthCheck) -> bool {
        let cmd: Vec<String> = match check.command.split_first() {
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                vec!["sh".into(), "-c".into(), rest.join(" ")]
            }
            Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
            _ => return false,
        };
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(cmd),
                        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .ok()?;
            if let Ok(StartExecResults::Attached { mut output, .. }) = self
                .docker
                .start_exec(&exec.id, Some(StartExecOptions::default()))
                .await
            {
                while output.next().await.is_some() {}
            }
            self.docker.inspect_exec(&exec.id).await.ok()?.exit_code
        };
        let timeout = Duration::from_secs(u64::from(check.timeout_secs()));
        matches!(tokio::time::timeout(timeout, run).await, Ok(Some(0)))
    }
}

impl DockerRuntime {
    /// `docker exec` attached to the session's channels. Docker cannot kill an exec'd process,
    /// so a stopped session signals its host pid (the agent shares the host's pid namespace;
    /// elsewhere the command lives on until it ends or the container stops).
    async fn exec_session(&self, id: &str, req: ExecRequest) -> Result<ExecSession, RuntimeError> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(req.command.clone()),
                    attach_stdin: Some(req.interactive),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(req.tty),
                    ..Default::default()
                },
            )
            .await?;
        let exec_id = created.id;
        let started = self
            .docker
            .start_exec(
                &exec_id,
                Some(StartExecOptions {
                    detach: false,
                    tty: req.tty,
                    output_capacity: None,
                }),
            )
            .await?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(RuntimeError::Invalid(
                "docker started the command detached".into(),
            ));
        };
        let resize = |docker: Docker, exec_id: String, s: super::TermSize| async move {
            let opts = ResizeExecOptions {
                h: i32::from(s.rows),
                w: i32::from(s.cols),
            };
            if let Err(e) = docker.resize_exec(&exec_id, opts).await {
                tracing::debug!(exec = %exec_id, error = %e, "docker exec resize");
            }
        };
        if req.tty
            && let Some(s) = req.size
        {
            resize(self.docker.clone(), exec_id.clone(), s).await;
        }
        let (session, from_caller, out) = exec::channels();
        let (docker, eid) = (self.docker.clone(), exec_id.clone());
        tokio::spawn(exec::feed(
            req.interactive.then_some(input),
            from_caller,
            req.tty,
            move |_, s| resize(docker.clone(), eid.clone(), s).boxed(),
        ));
        let sink = out.clone();
        let drained = tokio::spawn(async move {
            while let Some(Ok(chunk)) = output.next().await {
                let event = match chunk {
                    LogOutput::StdErr { message } => ExecEvent::Stderr(message.to_vec()),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        ExecEvent::Stdout(message.to_vec())
                    }
                    LogOutput::StdIn { .. } => continue,
                };
                if sink.send(event).await.is_err() {
                    return;
                }
            }
        });
        let (docker, eid) = (self.docker.clone(), exec_id.clone());
        let (killer, kid) = (self.docker.clone(), exec_id);
        let stop = session.stop.clone();
        tokio::spawn(async move {
            let kill = move || {
                tokio::spawn(async move {
                    if let Ok(info) = killer.inspect_exec(&kid).await
                        && let Some(pid) = info.pid.and_then(|p| i32::try_from(p).ok())
                        && pid > 0
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                });
            };
            let exited = async move {
                // The output ends when the command does; its code is then in the exec's state.
                let _ = drained.await;
                exec_exit_code(&docker, &eid).await
            };
            exec::finish(exited, async {}, stop, kill, out).await;
        });
        Ok(session)
    }
}

/// An ended exec's exit code; Docker may take a moment to mark it ended after its output.
async fn exec_exit_code(docker: &Docker, exec_id: &str) -> Option<i32> {
    for _ in 0..40 {
        let info = docker.inspect_exec(exec_id).await.ok()?;
        if info.running != Some(true) {
            return info.exit_code.and_then(|c| i32::try_from(c).ok());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Docker's cgroup permissions (`rwm`) for ECS's device permissions (all when none are named).
fn cgroup_permissions(perms: &[String]) -> String {
    if perms.is_empty() {
        return "rwm".into();
    }
    let mut out = String::new();
    for (name, c) in [("read", 'r'), ("write", 'w'), ("mknod", 'm')] {
        if perms.iter().any(|p| p == name) {
            out.push(c);
        }
    }
    out
}

/// The docker network of a cluster's awsvpc tasks.
pub fn task_network(cluster: &str) -> String {
    format!("capstan-{cluster}")
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

impl ContainerRuntime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn version(&self) -> String {
        format!("docker {}", self.version)
    }

    fn start<'a>(
        &'a self,
        spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>> {
        self.create(spec).boxed()
    }

    fn restart<'a>(
        &'a self,
        handle: &'a Handle,
        spec: &'a ContainerSpec,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>> {
        async move {
            let Handle::Docker { id } = handle else {
                return Err(RuntimeError::Invalid("not a container".into()));
            };
            self.docker.start_container(id, None).await?;
            self.started(id.clone(), spec).await
        }
        .boxed()
    }

    fn wait(&self, handle: &Handle) -> BoxFuture<'static, Exit> {
        let docker = self.docker.clone();
        let id = match handle {
            Handle::Docker { id } => id.clone(),
            Handle::Process { .. } => {
                return async { Exit::Unknown("not a container".into()) }.boxed();
            }
        };
        async move {
            loop {
                let mut stream = docker.wait_container(&id, None);
                match stream.next().await {
                    Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {
                        return Self::exit_code(&docker, &id).await;
                    }
                    Some(Err(e)) => {
                        // The engine may be restarting: if the container still runs, wait again.
                        match docker.inspect_container(&id, None).await {
                            Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => {
                                tracing::debug!(%id, error = %e, "docker wait broke; waiting again");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            _ => return Self::exit_code(&docker, &id).await,
                        }
                    }
                    None => return Self::exit_code(&docker, &id).await,
                }
            }
        }
        .boxed()
    }

    fn stop<'a>(&'a self, handle: &'a Handle, timeout: Duration) -> BoxFuture<'a, ()> {
        async move {
            let Handle::Docker { id } = handle else {
                return;
            };
            let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
            if let Err(e) = self
                .docker
                .stop_container(
                    id,
                    Some(StopContainerOptions {
                        t: Some(t),
                        signal: None,
                    }),
                )
                .await
            {
                tracing::debug!(%id, error = %e, "docker stop");
            }
            let _ =
                tokio::time::timeout(timeout + Duration::from_secs(10), self.wait(handle)).await;
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
            match handle {
                Handle::Docker { id } => self.exec_check(id, spec, check).await,
                Handle::Process { .. } => false,
            }
        }
        .boxed()
    }

    fn alive<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, bool> {
        async move {
            let Handle::Docker { id } = handle else {
                return false;
            };
            matches!(
                self.docker.inspect_container(id, None).await,
                Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true)
            )
        }
        .boxed()
    }

    fn find<'a>(&'a self, task_id: &'a str, container: &'a str) -> BoxFuture<'a, Option<Handle>> {
        async move {
            let labels = vec![
                format!("{LABEL_TASK}={task_id}"),
                format!("{LABEL_CONTAINER}={container}"),
            ];
            let id = self.labelled(labels, true).await?;
            Some(Handle::Docker { id })
        }
        .boxed()
    }

    fn remove<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, ()> {
        async move {
            if let Handle::Docker { id } = handle
                && let Err(e) = self.remove_container(id).await
            {
                tracing::debug!(%id, error = %e, "docker remove");
            }
        }
        .boxed()
    }

    fn exec<'a>(
        &'a self,
        handle: &'a Handle,
        _spec: &'a ContainerSpec,
        request: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecSession, RuntimeError>> {
        async move {
            let Handle::Docker { id } = handle else {
                return Err(RuntimeError::Invalid("not a container".into()));
            };
            self.exec_session(id, request).await
        }
        .boxed()
    }

    fn remove_task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let filters =
                HashMap::from([("label".to_string(), vec![format!("{LABEL_TASK}={task_id}")])]);
            let Ok(list) = self
                .docker
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(filters),
                }))
                .await
            else {
                return;
            };
            for v in list.volumes.unwrap_or_default() {
                if let Err(e) = self
                    .docker
                    .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                    .await
                {
                    tracing::warn!(volume = %v.name, error = %e, "cannot remove a task volume");
                }
            }
        }
        .boxed()
    }

    fn logs(&self, handle: &Handle, query: &LogQuery) -> Option<BoxStream<'static, LogLine>> {
        let Handle::Docker { id } = handle else {
            return None;
        };
        let mut opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .follow(query.follow);
        if let Some(since) = query.since {
            opts = opts.since(since.floor().clamp(0.0, f64::from(i32::MAX)) as i32);
        }
        if let Some(n) = query.tail {
            opts = opts.tail(&n.to_string());
        }
        let (container, since) = (query.container.clone(), query.since);
        let lines = self
            .docker
            .logs(id, Some(opts.build()))
            .filter_map(move |out| {
                let container = container.clone();
                async move {
                    let (stream, bytes) = match out.ok()? {
                        LogOutput::StdOut { message } => (Stream::Stdout, message),
                        LogOutput::StdErr { message } => (Stream::Stderr, message),
                        LogOutput::Console { message } => (Stream::Stdout, message),
                        LogOutput::StdIn { .. } => return None,
                    };
                    let text = String::from_utf8_lossy(&bytes);
                    let (ts, message) = text.split_once(' ')?;
                    let timestamp = humantime::parse_rfc3339_weak(ts.trim_end_matches('Z'))
                        .ok()?
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()?
                        .as_secs_f64();
                    // Docker's `since` is whole seconds.
                    if since.is_some_and(|s| timestamp < s) {
                        return None;
                    }
                    Some(LogLine {
                        timestamp,
                        container,
                        stream,
                        message: message.trim_end_matches(['\n', '\r']).to_string(),
                    })
                }
            });
        Some(lines.boxed())
    }
}

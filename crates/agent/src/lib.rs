//! The Capstan node agent: runs tasks through a runtime (`docker` or `process`), serves
//! `capstan.agent.v1.Agent` over gRPC (mutual TLS when given certificates), and registers its
//! container instance in etcd under a lease.

pub mod advertise;
pub mod agent;
pub mod args;
pub mod exec;
pub mod fence;
pub mod logs;
pub mod model;
pub mod registration;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_proto::tls::TlsError;
use capstan_runtime::{Readiness, spawn_signal_handler};
use capstan_store::Store;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

pub use agent::{Agent, AgentError};
pub use args::{AgentArgs, RuntimeKind};

use crate::registration::{Registration, Resources};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::{ContainerRuntime, TaskPolicy};
use crate::service::AgentService;
use crate::state::StateDir;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// State dir or sockets.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Docker engine could not be reached.
    #[error("docker runtime: {0}")]
    Docker(#[from] runtime::RuntimeError),
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// gRPC server.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// No address controllers can reach.
    #[error(transparent)]
    Advertise(#[from] advertise::AdvertiseError),
    /// A flag's value cannot be used.
    #[error("{0}")]
    Invalid(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// How long an exiting agent with `--stop-tasks-on-exit` waits for its tasks to stop.
const STOP_ALL_WITHIN: Duration = Duration::from_secs(40);

fn machine_memory_mib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map_or(1024, |kib| kib / 1024)
}

fn attributes(args: &AgentArgs, runtime: &str) -> BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    let mut a = BTreeMap::from([
        ("ecs.os-type".to_string(), "linux".to_string()),
        ("ecs.cpu-architecture".to_string(), arch.to_string()),
        ("capstan.runtime".to_string(), runtime.to_string()),
    ]);
    a.extend(args.attributes.iter().cloned());
    a
}

/// Runs the agent until SIGTERM/SIGINT. Tasks keep running when the agent stops; a restarted
/// agent re-adopts them.
pub async fn run(args: AgentArgs) -> Result<(), StartError> {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let state = StateDir::open(&args.state_dir)
        .map_err(io(format!("state dir {}", args.state_dir.display())))?;
    let instance_id = state.instance_id().map_err(io("instance id"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(io(format!("cannot listen on {}", args.listen)))?;
    let bound = listener.local_addr().map_err(io("listener address"))?;
    let tls = args.tls.files();
    // Listening everywhere, the route toward etcd says which address is this host's own: what
    // to advertise without --advertise, and where task ports go when a name does not resolve.
    let outward = if bound.ip().is_unspecified() {
        advertise::outward_ip(&args.store.etcd_endpoints).await
    } else {
        None
    };
    let advertise = advertise::advertised(bound, args.advertise.as_deref(), outward)?;
    if let Some(tls) = &tls {
        advertise::check_certificate(&tls.cert, &advertise)?;
    }
    let endpoint = format!(
        "{}://{advertise}",
        if tls.is_some() { "https" } else { "http" }
    );

    let policy = TaskPolicy {
        default_user: args.task_user.clone(),
        bind_address: match args.task_bind_address {
            Some(a) => a,
            None => advertise::bind_address(&advertise, bound, outward)?,
        },
        allow_privileged: args.allow_privileged,
    };
    let runtime: Arc<dyn ContainerRuntime> = match args.runtime {
        RuntimeKind::Process => Arc::new(ProcessRuntime::new(policy.clone())),
        RuntimeKind::Docker => Arc::new(
            DockerRuntime::connect(
                args.docker_host.as_deref(),
                args.docker_pull,
                policy.clone(),
            )
            .await?,
        ),
    };
    let runtime_version = runtime.version();
    let resources = Arc::new(Resources {
        cpu: args.cpu.unwrap_or_else(|| {
            1024 * std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
        }),
        memory: args.memory.unwrap_or_else(machine_memory_mib),
        attributes: attributes(&args, runtime.kind()),
    });
    let key = match &args.encryption_key_file {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(io(format!("--encryption-key-file {}", path.display())))?;
            let key = capstan_iam::SealingKey::from_file_bytes(&bytes).map_err(|e| {
                StartError::Invalid(format!("--encryption-key-file {}: {e}", path.display()))
            })?;
            Some(Arc::new(key))
        }
    };
    let (store_tx, store_rx) = tokio::sync::watch::channel(None);
    let secrets = secrets::Secrets {
        store: Some(store_rx.clone()),
        key,
        env_files_dir: args.environment_files_dir.clone(),
    };
    let agent = Agent::new(
        runtime,
        state,
        args.cluster.clone(),
        secrets,
        args.allow_host_paths.clone(),
    );
    let adopted = agent.adopt();

    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        server = server.tls_config(tls.server()?)?;
    }
    let election = format!(
        "{}/",
        capstan_core::Keys::new(&args.store.store_config().prefix).election("scheduler")
    );
    let fence = fence::Fence::new(args.fencing_check, store_rx, election);
    let svc = AgentService::server(agent.clone(), fence, instance_id.clone(), resources.clone());
    let grpc = {
        let cancel = cancel.clone();
        tokio::spawn(
            server
                .add_service(svc)
                // Without TCP_NODELAY, streamed task updates wait out delayed ACKs (~40 ms).
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move { cancel.cancelled().await },
                ),
        )
    };

    let readiness = Readiness::default();
    let (registered_tx, registered_rx) = tokio::sync::watch::channel(false);
    readiness.add("registered", move || *registered_rx.borrow());
    let (admin_addr, admin) =
        capstan_runtime::admin::serve(args.admin.admin_addr, readiness, cancel.clone())
            .await
            .map_err(io(format!("admin server on {}", args.admin.admin_addr)))?;
    // A machine-readable line, so scripts and tests can find a port-0 agent.
    println!(
        "capstan-agent grpc={endpoint} admin={admin_addr} instance={instance_id} adopted={adopted}"
    );
    tracing::info!(%endpoint, admin = %admin_addr, instance = %instance_id, adopted, runtime = %runtime_version, "agent started");

    let registration = {
        let cancel = cancel.clone();
        let agent = agent.clone();
        let store_cfg = args.store.store_config();
        let ttl = args.lease_ttl;
        tokio::spawn(async move {
            // etcd may be down when the agent starts: tasks are served meanwhile.
            let store = loop {
                match Store::connect(&store_cfg).await {
                    Ok(s) => {
                        let _ = store_tx.send(Some(s.clone()));
                        break s;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach etcd; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            Registration {
                store,
                agent,
                instance_id,
                endpoint,
                ttl,
                resources,
                runtime_version,
                registered: registered_tx,
            }
            .run(cancel)
            .await;
        })
    };
    let janitor = {
        let cancel = cancel.clone();
        let agent = agent.clone();
        let retention: Duration = args.task_retention.into();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => agent.clean_up(retention).await,
                }
            }
        })
    };

    cancel.cancelled().await;
    if args.stop_tasks_on_exit {
        tracing::info!("stopping, and the tasks with it (--stop-tasks-on-exit)");
        agent
            .stop_all("Agent stopped with --stop-tasks-on-exit", STOP_ALL_WITHIN)
            .await;
    } else {
        tracing::info!("stopping; tasks keep running and are re-adopted on restart");
    }
    let _ = grpc.await;
    let _ = registration.await;
    let _ = janitor.await;
    let _ = admin.await;
    Ok(())
}

//! `capstan-api`: a stateless gRPC server with ECS's actions over the desired state in etcd.
//! Run as many replicas as you like; every write is a compare-and-swap transaction, so they
//! never lose each other's writes. Validation is `capstan-core`'s, the same the controllers
//! apply to etcdctl edits.

pub mod actions;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod ecs;
pub mod error;
pub mod server;
pub mod shape;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use capstan_proto::api::v1::capstan_server::CapstanServer;
use capstan_proto::api::v1::iam_server::IamServer;
use capstan_proto::tls::TlsError;
use capstan_runtime::admin::Readiness;
use capstan_runtime::{AdminArgs, LogArgs, StoreArgs};
use capstan_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

pub use actions::Api;
pub use error::{ApiError, Exception};

/// Default gRPC listen address: loopback only unless asked.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7400";

/// `capstan-api` arguments.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "capstan-api",
    version,
    about = "Capstan's gRPC API (ECS's actions)"
)]
pub struct ApiArgs {
    /// etcd.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The admin server.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Logs.
    #[command(flatten)]
    pub log: LogArgs,
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, env = "CAPSTAN_API_LISTEN", default_value = LISTEN_DEFAULT)]
    pub listen: SocketAddr,
    /// How long RunTask and StartTask wait for the scheduler's answer.
    #[arg(long, env = "CAPSTAN_RUN_TASK_TIMEOUT", default_value = "30s")]
    pub run_task_timeout: humantime::Duration,
    /// Mutual TLS: clients need a certificate from the cluster CA.
    #[command(flatten)]
    pub tls: capstan_proto::tls::TlsArgs,
    /// Authentication, authorization and the audit log.
    #[command(flatten)]
    pub auth: auth::AuthArgs,
    /// ECS's JSON protocol for the aws CLI and SDKs.
    #[command(flatten)]
    pub ecs: ecs::EcsArgs,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// etcd could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be bound.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An `--admin` principal is malformed.
    #[error("--admin: {0}")]
    Admin(#[from] capstan_iam::IamError),
    /// The encryption key file cannot be used.
    #[error("--encryption-key-file {path}: {problem}")]
    EncryptionKey {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Reflection could not load the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves the API until SIGTERM/SIGINT.
pub async fn run(args: ApiArgs) -> Result<(), StartError> {
    let cancel = CancellationToken::new();
    capstan_runtime::spawn_signal_handler(cancel.clone());
    let store = Store::connect(&args.store.store_config()).await?;
    let sealing = match &args.auth.encryption_key_file {
        None => None,
        Some(path) => {
            let problem = |problem: String| StartError::EncryptionKey {
                path: path.display().to_string(),
                problem,
            };
            let bytes = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
            let key = capstan_iam::SealingKey::from_file_bytes(&bytes)
                .map_err(|e| problem(e.to_string()))?;
            Some(std::sync::Arc::new(key))
        }
    };
    let api = Api::new(store.clone(), Duration::from(args.run_task_timeout))
        .with_sealing_key(sealing.clone())
        .with_agent_tls(args.tls.files());
    let audit = audit::Audit::start(&args.auth.audit_log, Some(store.clone()), cancel.clone())
        .map_err(|source| StartError::Io {
            context: format!("cannot open the audit log {}", args.auth.audit_log),
            source,
        })?;
    let auth = auth::Auth::start(
        &store,
        args.auth.authorization,
        &args.auth.admins,
        audit,
        sealing,
        cancel.clone(),
    )?;
    if args.auth.authorization == auth::Mode::None {
        tracing::warn!(
            "--authorization none: anyone who can reach this API may do anything; use it only for local experiments"
        );
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Io {
            context: format!("cannot listen on {}", args.listen),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| StartError::Io {
        context: "listener address".into(),
        source,
    })?;
    let tls = args.tls.files();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ecs = match args.ecs.ecs_listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io {
                    context: format!("cannot listen on --ecs-listen {addr}"),
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| StartError::Io {
                context: "ECS listener address".into(),
                source,
            })?;
            if args.ecs.ecs_allow_unsigned {
                tracing::warn!(
                    "--ecs-allow-unsigned: unsigned ECS requests are served as an anonymous caller; use it only for local experiments"
                );
            }
            let endpoint =
                ecs::Endpoint::new(api.clone(), auth.clone(), args.ecs.ecs_allow_unsigned);
            let server = ecs::serve(l, tls.clone(), endpoint, cancel.clone());
            Some((bound, server))
        }
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CapstanServer<server::CapstanService>>()
        .await;
    health.set_serving::<IamServer<server::IamService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(capstan_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.server()?)?;
    }
    let grpc = {
        let cancel = cancel.clone();
        builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(CapstanServer::new(server::CapstanService::new(
                api.clone(),
                auth.clone(),
                cancel.clone(),
            )))
            .add_service(IamServer::new(server::IamService::new(api, auth.clone())))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move { cancel.cancelled().await },
            )
    };
    let readiness = Readiness::default();
    {
        let auth = auth.clone();
        readiness.add("iam documents loaded", move || auth.is_loaded());
    }
    let (admin_addr, admin) =
        capstan_runtime::admin::serve(args.admin.admin_addr, readiness, cancel.clone())
            .await
            .map_err(|source| StartError::Io {
                context: format!("admin server on {}", args.admin.admin_addr),
                source,
            })?;
    let ecs_field = match &ecs {
        Some((addr, _)) => format!(" ecs={scheme}://{addr}"),
        None => String::new(),
    };
    if let Some((addr, server)) = ecs {
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(%addr, error = %e, "ECS endpoint failed");
            }
        });
    }
    // A machine-readable line, so scripts and tests can find a port-0 server.
    println!("capstan-api grpc={scheme}://{bound} admin={admin_addr}{ecs_field}");
    tracing::info!(grpc = %bound, admin = %admin_addr, "api started");
    grpc.await?;
    let _ = admin.await;
    Ok(())
}

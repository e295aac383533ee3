//! `capstan service …`

use super::*;

/// `capstan service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a service from a CreateService JSON file.
    Create {
        /// JSON file (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Change a service: flags, or an UpdateService JSON file with the fields to change.
    Update {
        /// Service name.
        service: String,
        /// UpdateService JSON file.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// `family:revision` or `family`.
        #[arg(long)]
        task_definition: Option<String>,
        /// Tasks to keep.
        #[arg(long)]
        desired_count: Option<u32>,
        /// Start a new deployment even if nothing else changed.
        #[arg(long)]
        force_new_deployment: bool,
    },
    /// Describe services.
    Describe {
        /// Service names.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// List services.
    List,
    /// Delete a service (DRAINING, then INACTIVE once its tasks are gone).
    Delete {
        /// Service name.
        service: String,
        /// Delete even if desiredCount is above 0.
        #[arg(long)]
        force: bool,
    },
    /// A service's events, newest first.
    Events {
        /// Service name.
        service: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A service's deployments, newest first.
    Deployments {
        /// Service name.
        service: String,
    },
    /// Answer a deployment's PAUSE hooks.
    Continue {
        /// Service name.
        service: String,
        /// Deployment id; the in-progress one when absent.
        #[arg(long, default_value = "")]
        deployment_id: String,
        /// Roll back instead of continuing.
        #[arg(long)]
        rollback: bool,
        /// Only this hook (its index in lifecycleHooks).
        #[arg(long, default_value = "")]
        hook_id: String,
    },
}

const SERVICE_COLUMNS: &[Column] = &[
    ("SERVICE", |v| field(v, "serviceName")),
    ("STATUS", |v| field(v, "status")),
    ("TASK DEFINITION", |v| field(v, "taskDefinition")),
    ("DESIRED", |v| field(v, "desiredCount")),
    ("RUNNING", |v| field(v, "runningCount")),
    ("PENDING", |v| field(v, "pendingCount")),
    ("ROLLOUT", |v| field(&v["deployments"][0], "rolloutState")),
];

/// Columns of a deployment.
pub const DEPLOYMENT_COLUMNS: &[Column] = &[
    ("DEPLOYMENT", |v| field(v, "id")),
    ("STATUS", |v| field(v, "status")),
    ("TASK DEFINITION", |v| field(v, "taskDefinition")),
    ("DESIRED", |v| field(v, "desiredCount")),
    ("RUNNING", |v| field(v, "runningCount")),
    ("PENDING", |v| field(v, "pendingCount")),
    ("FAILED", |v| field(v, "failedTasks")),
    ("ROLLOUT", |v| field(v, "rolloutState")),
    ("STAGE", |v| field(v, "lifecycleStage")),
    ("CREATED", |v| time(v, "createdAt")),
];

async fn describe_services(
    conn: &Conn,
    cluster: &str,
    services: Vec<String>,
) -> anyhow::Result<pb::DescribeResponse> {
    Ok(conn
        .client()
        .await?
        .describe_services(pb::DescribeServicesRequest {
            cluster: cluster.to_string(),
            services,
        })
        .await
        .map_err(api_error)?
        .into_inner())
}

/// Runs a service command.
pub async fn service(
    conn: &Conn,
    cluster: &str,
    out: Format,
    cmd: ServiceCmd,
) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let cluster = cluster.to_string();
    match cmd {
        ServiceCmd::Create { file } => {
            let r = c
                .create_service(pb::CreateServiceRequest {
                    cluster,
                    service_json: read_doc(&file)?,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::warnings(&r.warnings);
            output::docs(out, &output::parse_all(&[r.service_json]), SERVICE_COLUMNS);
        }
        ServiceCmd::Update {
            service,
            file,
            task_definition,
            desired_count,
            force_new_deployment,
        } => {
            let mut doc: Value = match &file {
                Some(f) => serde_json::from_str(&read_doc(f)?)?,
                None => json!({}),
            };
            if let Some(td) = task_definition {
                doc["taskDefinition"] = json!(td);
            }
            if let Some(n) = desired_count {
                doc["desiredCount"] = json!(n);
            }
            if force_new_deployment {
                doc["forceNewDeployment"] = json!(true);
            }
            let r = c
                .update_service(pb::UpdateServiceRequest {
                    cluster,
                    service,
                    service_json: doc.to_string(),
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::warnings(&r.warnings);
            output::docs(out, &output::parse_all(&[r.service_json]), SERVICE_COLUMNS);
        }
        ServiceCmd::Describe { services } => {
            let r = describe_services(conn, &cluster, services).await?;
            let docs = output::parse_all(&r.items_json);
            match out {
                Format::Json => output::docs(out, &docs, SERVICE_COLUMNS),
                Format::Table => {
                    output::docs(out, &docs, SERVICE_COLUMNS);
                    for d in &docs {
                        let deps = d["deployments"].as_array().cloned().unwrap_or_default();
                        if !deps.is_empty() {
                            println!("\nDeployments of {}:", field(d, "serviceName"));
                            output::docs(out, &deps, DEPLOYMENT_COLUMNS);
                        }
                    }
                }
            }
            return done(output::failures(&r.failures));
        }
        ServiceCmd::List => {
            let r = c
                .list_services(pb::ListServicesRequest {
                    cluster,
                    ..Default::default()
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::list(out, "SERVICE", &r.arns);
        }
        ServiceCmd::Delete { service, force } => {
            let r = c
                .delete_service(pb::DeleteServiceRequest {
                    cluster,
                    service,
                    force,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&[r.service_json]), SERVICE_COLUMNS);
        }
        ServiceCmd::Events { service, limit } => {
            let r = describe_services(conn, &cluster, vec![service]).await?;
            if output::failures(&r.failures) {
                return Ok(1);
            }
            let docs = output::parse_all(&r.items_json);
            let events: Vec<Value> = docs
                .first()
                .and_then(|d| d["events"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .take(limit)
                .collect();
            output::docs(
                out,
                &events,
                &[
                    ("TIME", |v| time(v, "createdAt")),
                    ("MESSAGE", |v| field(v, "message")),
                ],
            );
        }
        ServiceCmd::Deployments { service } => {
            let r = c
                .list_service_deployments(pb::ListServiceDeploymentsRequest {
                    cluster,
                    service,
                    status: Vec::new(),
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), DEPLOYMENT_COLUMNS);
        }
        ServiceCmd::Continue {
            service,
            deployment_id,
            rollback,
            hook_id,
        } => {
            let r = c
                .continue_service_deployment(pb::ContinueServiceDeploymentRequest {
                    cluster,
                    service,
                    deployment_id,
                    action: if rollback { "ROLLBACK" } else { "CONTINUE" }.into(),
                    hook_id,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            println!("answered deployment {}", r.deployment_id);
        }
    }
    Ok(0)
}

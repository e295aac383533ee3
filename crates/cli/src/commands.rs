//! `capstan <noun> <verb>`: one function per noun, each verb one API call.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use capstan_proto::api::v1 as pb;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::output::{self, Column, Format, field, short, time};
use crate::{Conn, api_error};

/// Reads a JSON document from a file, or stdin for `-`.
pub fn read_doc(path: &Path) -> anyhow::Result<String> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    // Catch a syntax error here, with the file's name, before the API sees it.
    serde_json::from_str::<Value>(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(text)
}

/// Prints a created document and its warnings.
fn document(out: Format, r: &pb::DocumentResponse, columns: &[Column]) {
    output::warnings(&r.warnings);
    output::docs(
        out,
        &output::parse_all(std::slice::from_ref(&r.json)),
        columns,
    );
}

fn done(failed: bool) -> anyhow::Result<i32> {
    Ok(i32::from(failed))
}

// ---- clusters ----

/// `capstan cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create a cluster (returns the existing one if it exists).
    Create {
        /// Cluster name.
        name: String,
    },
    /// Describe clusters (the --cluster one when none are named).
    Describe {
        /// Cluster names.
        names: Vec<String>,
    },
    /// List clusters.
    List,
    /// Delete an empty cluster.
    Delete {
        /// Cluster name.
        name: String,
    },
}

const CLUSTER_COLUMNS: &[Column] = &[
    ("CLUSTER", |v| field(v, "clusterName")),
    ("STATUS", |v| field(v, "status")),
    ("INSTANCES", |v| {
        field(v, "registeredContainerInstancesCount")
    }),
    ("SERVICES", |v| field(v, "activeServicesCount")),
    ("RUNNING", |v| field(v, "runningTasksCount")),
    ("PENDING", |v| field(v, "pendingTasksCount")),
];

/// Runs a cluster command.
pub async fn cluster(conn: &Conn, out: Format, cmd: ClusterCmd) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    match cmd {
        ClusterCmd::Create { name } => {
            let r = c
                .create_cluster(pb::CreateClusterRequest {
                    cluster_json: json!({ "clusterName": name }).to_string(),
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::warnings(&r.warnings);
            output::docs(out, &output::parse_all(&[r.cluster_json]), CLUSTER_COLUMNS);
        }
        ClusterCmd::Describe { names } => {
            let r = c
                .describe_clusters(pb::DescribeClustersRequest { clusters: names })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), CLUSTER_COLUMNS);
            return done(output::failures(&r.failures));
        }
        ClusterCmd::List => {
            let r = c
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .map_err(api_error)?
                .into_inner();
            output::list(out, "CLUSTER", &r.arns);
        }
        ClusterCmd::Delete { name } => {
            let r = c
                .delete_cluster(pb::DeleteClusterRequest { cluster: name })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&[r.cluster_json]), CLUSTER_COLUMNS);
        }
    }
    Ok(0)
}

// ---- task definitions ----

/// `capstan taskdef …`
#[derive(Debug, Subcommand)]
pub enum TaskDefCmd {
    /// Register the next revision of a family from a RegisterTaskDefinition JSON file.
    Register {
        /// JSON file (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Describe `family:revision` or a family's latest ACTIVE revision.
    Describe {
        /// `family:revision` or `family`.
        task_definition: String,
    },
    /// List task definitions.
    List {
        /// Only this family.
        #[arg(long, default_value = "")]
        family: String,
        /// ACTIVE, INACTIVE or ALL.
        #[arg(long, default_value = "ACTIVE")]
        status: String,
    },
    /// List task definition families.
    Families,
    /// Deregister a revision: running tasks keep it, nothing new may use it.
    Deregister {
        /// `family:revision`.
        task_definition: String,
    },
}

const TASKDEF_COLUMNS: &[Column] = &[
    ("TASK DEFINITION", |v| {
        format!("{}:{}", field(v, "family"), field(v, "revision"))
    }),
    ("STATUS", |v| field(v, "status")),
    ("CONTAINERS", |v| {
        v["containerDefinitions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| field(c, "name"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    }),
    ("CPU", |v| field(v, "cpu")),
    ("MEMORY", |v| field(v, "memory")),
    ("REGISTERED", |v| time(v, "registeredAt")),
];

/// Runs a task definition command.
pub async fn taskdef(conn: &Conn, out: Format, cmd: TaskDefCmd) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let r = match cmd {
        TaskDefCmd::Register { file } => c
            .register_task_definition(pb::RegisterTaskDefinitionRequest {
                task_definition_json: read_doc(&file)?,
            })
            .await
            .map_err(api_error)?
            .into_inner(),
        TaskDefCmd::Describe { task_definition } => c
            .describe_task_definition(pb::DescribeTaskDefinitionRequest { task_definition })
            .await
            .map_err(api_error)?
            .into_inner(),
        TaskDefCmd::Deregister { task_definition } => c
            .deregister_task_definition(pb::DeregisterTaskDefinitionRequest { task_definition })
            .await
            .map_err(api_error)?
            .into_inner(),
        TaskDefCmd::List { family, status } => {
            let mut arns = Vec::new();
            let mut next_token = String::new();
            loop {
                let r = c
                    .list_task_definitions(pb::ListTaskDefinitionsRequest {
                        family_prefix: family.clone(),
                        status: status.clone(),
                        next_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(api_error)?
                    .into_inner();
                arns.extend(r.arns);
                if r.next_token.is_empty() {
                    break;
                }
                next_token = r.next_token;
            }
            output::list(out, "TASK DEFINITION", &arns);
            return Ok(0);
        }
        TaskDefCmd::Families => {
            let r = c
                .list_task_definition_families(pb::ListTaskDefinitionFamiliesRequest::default())
                .await
                .map_err(api_error)?
                .into_inner();
            match out {
                Format::Json => output::list(out, "FAMILY", &r.arns),
                Format::Table => {
                    println!("FAMILY");
                    for f in r.arns {
                        println!("{f}");
                    }
                }
            }
            return Ok(0);
        }
    };
    output::warnings(&r.warnings);
    output::docs(
        out,
        &output::parse_all(&[r.task_definition_json]),
        TASKDEF_COLUMNS,
    );
    Ok(0)
}

// ---- services ----

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

// ---- tasks ----

/// `capstan task …`
#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Run one-off tasks (RunTask): from a JSON file, or a task definition and count.
    Run {
        /// RunTask JSON file.
        #[arg(short = 'f', long = "file", conflicts_with = "task_definition")]
        file: Option<PathBuf>,
        /// `family:revision` or `family`.
        #[arg(long, required_unless_present = "file")]
        task_definition: Option<String>,
        /// How many (1-10).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Recorded on the tasks.
        #[arg(long)]
        started_by: Option<String>,
    },
    /// Stop a task.
    Stop {
        /// Task id or ARN.
        task: String,
        /// Recorded as the stopped reason.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List tasks.
    List {
        /// Only this family.
        #[arg(long, default_value = "")]
        family: String,
        /// Only this service's tasks.
        #[arg(long, default_value = "")]
        service: String,
        /// RUNNING (default) or STOPPED.
        #[arg(long, default_value = "RUNNING")]
        desired_status: String,
        /// Only tasks on this container instance.
        #[arg(long, default_value = "")]
        container_instance: String,
        /// Only tasks started by this value (a deployment id for service tasks).
        #[arg(long, default_value = "")]
        started_by: String,
    },
    /// Describe tasks.
    Describe {
        /// Task ids or ARNs.
        #[arg(required = true)]
        tasks: Vec<String>,
    },
}

/// Columns of a task.
pub const TASK_COLUMNS: &[Column] = &[
    ("TASK", |v| short(&field(v, "taskArn"))),
    ("TASK DEFINITION", |v| field(v, "taskDefinitionArn")),
    ("LAST", |v| field(v, "lastStatus")),
    ("DESIRED", |v| field(v, "desiredStatus")),
    ("HEALTH", |v| field(v, "healthStatus")),
    ("INSTANCE", |v| short(&field(v, "containerInstanceArn"))),
    ("GROUP", |v| field(v, "group")),
    ("STARTED", |v| time(v, "startedAt")),
    ("STOPPED REASON", |v| field(v, "stoppedReason")),
];

/// Runs a task command.
pub async fn task(conn: &Conn, cluster: &str, out: Format, cmd: TaskCmd) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let cluster = cluster.to_string();
    match cmd {
        TaskCmd::Run {
            file,
            task_definition,
            count,
            started_by,
        } => {
            let body = match (file, task_definition) {
                (Some(f), _) => read_doc(&f)?,
                (None, Some(td)) => {
                    let mut v = json!({"taskDefinition": td, "count": count});
                    if let Some(s) = started_by {
                        v["startedBy"] = json!(s);
                    }
                    v.to_string()
                }
                (None, None) => anyhow::bail!("give --task-definition or -f"),
            };
            let r = c
                .run_task(pb::RunTaskRequest {
                    cluster,
                    run_task_json: body,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), TASK_COLUMNS);
            return done(output::failures(&r.failures));
        }
        TaskCmd::Stop { task, reason } => {
            let r = c
                .stop_task(pb::StopTaskRequest {
                    cluster,
                    task,
                    reason,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&[r.task_json]), TASK_COLUMNS);
        }
        TaskCmd::List {
            family,
            service,
            desired_status,
            container_instance,
            started_by,
        } => {
            let r = c
                .list_tasks(pb::ListTasksRequest {
                    cluster,
                    family,
                    service_name: service,
                    desired_status,
                    container_instance,
                    started_by,
                    ..Default::default()
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::list(out, "TASK", &r.arns);
        }
        TaskCmd::Describe { tasks } => {
            let r = c
                .describe_tasks(pb::DescribeTasksRequest { cluster, tasks })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), TASK_COLUMNS);
            return done(output::failures(&r.failures));
        }
    }
    Ok(0)
}

// ---- container instances ----

/// `capstan instance …`
#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// List container instances with their state and free resources.
    List {
        /// ACTIVE or DRAINING.
        #[arg(long, default_value = "")]
        status: String,
        /// Cluster query language expression, e.g. `attribute:ecs.availability-zone == dev-a`.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Describe container instances.
    Describe {
        /// Container instance ids or ARNs.
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Drain: no new tasks; service tasks move elsewhere.
    Drain {
        /// Container instance ids or ARNs.
        #[arg(required = true)]
        instances: Vec<String>,
    },
    /// Make DRAINING instances ACTIVE again.
    Activate {
        /// Container instance ids or ARNs.
        #[arg(required = true)]
        instances: Vec<String>,
    },
}

fn resource(v: &Value, list: &str, name: &str) -> String {
    v[list]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .map_or("-".into(), |r| field(r, "integerValue"))
}

const INSTANCE_COLUMNS: &[Column] = &[
    ("INSTANCE", |v| short(&field(v, "containerInstanceArn"))),
    ("STATUS", |v| field(v, "status")),
    ("CONNECTED", |v| field(v, "agentConnected")),
    ("RUNNING", |v| field(v, "runningTasksCount")),
    ("CPU FREE", |v| resource(v, "remainingResources", "CPU")),
    ("MEMORY FREE", |v| {
        resource(v, "remainingResources", "MEMORY")
    }),
    ("ZONE", |v| {
        v["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "ecs.availability-zone"))
            .map_or("-".into(), |x| field(x, "value"))
    }),
    ("ENDPOINT", |v| field(v, "agentEndpoint")),
];

async fn set_state(
    c: &mut capstan_proto::api::v1::capstan_client::CapstanClient<tonic::transport::Channel>,
    cluster: String,
    instances: Vec<String>,
    status: &str,
) -> anyhow::Result<pb::DescribeResponse> {
    Ok(
        c.update_container_instances_state(pb::UpdateContainerInstancesStateRequest {
            cluster,
            container_instances: instances,
            status: status.into(),
        })
        .await
        .map_err(api_error)?
        .into_inner(),
    )
}

/// Runs an instance command.
pub async fn instance(
    conn: &Conn,
    cluster: &str,
    out: Format,
    cmd: InstanceCmd,
) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let cluster = cluster.to_string();
    let r = match cmd {
        InstanceCmd::List { status, filter } => {
            let ids = c
                .list_container_instances(pb::ListContainerInstancesRequest {
                    cluster: cluster.clone(),
                    status,
                    filter,
                    ..Default::default()
                })
                .await
                .map_err(api_error)?
                .into_inner()
                .arns;
            if ids.is_empty() {
                output::docs(out, &[], INSTANCE_COLUMNS);
                return Ok(0);
            }
            c.describe_container_instances(pb::DescribeContainerInstancesRequest {
                cluster,
                container_instances: ids,
            })
            .await
            .map_err(api_error)?
            .into_inner()
        }
        InstanceCmd::Describe { instances } => c
            .describe_container_instances(pb::DescribeContainerInstancesRequest {
                cluster,
                container_instances: instances,
            })
            .await
            .map_err(api_error)?
            .into_inner(),
        InstanceCmd::Drain { instances } => {
            set_state(&mut c, cluster, instances, "DRAINING").await?
        }
        InstanceCmd::Activate { instances } => {
            set_state(&mut c, cluster, instances, "ACTIVE").await?
        }
    };
    output::docs(out, &output::parse_all(&r.items_json), INSTANCE_COLUMNS);
    done(output::failures(&r.failures))
}

// ---- capacity providers ----

/// `capstan capacity-provider …`
#[derive(Debug, Subcommand)]
pub enum CapacityProviderCmd {
    /// Create a capacity provider from a CreateCapacityProvider JSON file.
    Create {
        /// JSON file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Describe capacity providers (all when none are named).
    Describe {
        /// Names.
        names: Vec<String>,
    },
    /// Set the --cluster's capacity providers and default strategy.
    PutCluster {
        /// Capacity provider names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        providers: Vec<String>,
        /// Default strategy as JSON: `[{"capacityProvider":"a","base":1,"weight":1}]`.
        #[arg(long, default_value = "")]
        strategy: String,
    },
}

const CP_COLUMNS: &[Column] = &[
    ("CAPACITY PROVIDER", |v| field(v, "name")),
    ("ENDPOINT", |v| field(v, "nodeGroupProvider.endpoint")),
    ("GROUP", |v| field(v, "nodeGroupProvider.groupId")),
    ("SCALING", |v| {
        field(v, "nodeGroupProvider.managedScaling.status")
    }),
    ("TARGET", |v| {
        field(v, "nodeGroupProvider.managedScaling.targetCapacity")
    }),
];

/// Runs a capacity provider command.
pub async fn capacity_provider(
    conn: &Conn,
    cluster: &str,
    out: Format,
    cmd: CapacityProviderCmd,
) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    match cmd {
        CapacityProviderCmd::Create { file } => {
            let r = c
                .create_capacity_provider(pb::CreateCapacityProviderRequest {
                    capacity_provider_json: read_doc(&file)?,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            document(out, &r, CP_COLUMNS);
        }
        CapacityProviderCmd::Describe { names } => {
            let r = c
                .describe_capacity_providers(pb::DescribeByNameRequest { names })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), CP_COLUMNS);
            return done(output::failures(&r.failures));
        }
        CapacityProviderCmd::PutCluster {
            providers,
            strategy,
        } => {
            let r = c
                .put_cluster_capacity_providers(pb::PutClusterCapacityProvidersRequest {
                    cluster: cluster.to_string(),
                    capacity_providers: providers,
                    default_capacity_provider_strategy_json: strategy,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::warnings(&r.warnings);
            output::docs(out, &output::parse_all(&[r.cluster_json]), CLUSTER_COLUMNS);
        }
    }
    Ok(0)
}

// ---- load balancing ----

/// `capstan targetgroup …`
#[derive(Debug, Subcommand)]
pub enum TargetGroupCmd {
    /// Create a target group from a JSON file.
    Create {
        /// Name.
        name: String,
        /// JSON file (protocol, port, healthCheck, attributes).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Describe target groups (all when none are named).
    Describe {
        /// Names.
        names: Vec<String>,
    },
    /// The targets of a group and their health.
    Health {
        /// Name.
        name: String,
    },
}

/// `capstan listener …`
#[derive(Debug, Subcommand)]
pub enum ListenerCmd {
    /// Create a listener from a JSON file.
    Create {
        /// Name.
        name: String,
        /// JSON file (port, protocol, defaultActions).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Describe listeners (all when none are named).
    Describe {
        /// Names.
        names: Vec<String>,
    },
}

const TG_COLUMNS: &[Column] = &[
    ("TARGET GROUP", |v| field(v, "targetGroupName")),
    ("PROTOCOL", |v| field(v, "protocol")),
    ("PORT", |v| field(v, "port")),
    ("HEALTH PATH", |v| field(v, "healthCheck.path")),
];

const LISTENER_COLUMNS: &[Column] = &[
    ("LISTENER", |v| field(v, "listenerName")),
    ("ADDRESS", |v| field(v, "bindAddress")),
    ("PORT", |v| field(v, "port")),
    ("PROTOCOL", |v| field(v, "protocol")),
    ("FORWARDS TO", |v| {
        field(&v["defaultActions"][0], "targetGroupArn")
    }),
];

/// Runs a target group command.
pub async fn target_group(conn: &Conn, out: Format, cmd: TargetGroupCmd) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    match cmd {
        TargetGroupCmd::Create { name, file } => {
            let r = c
                .create_target_group(pb::CreateTargetGroupRequest {
                    name,
                    target_group_json: read_doc(&file)?,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            document(out, &r, TG_COLUMNS);
        }
        TargetGroupCmd::Describe { names } => {
            let r = c
                .describe_target_groups(pb::DescribeByNameRequest { names })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), TG_COLUMNS);
        }
        TargetGroupCmd::Health { name } => {
            let r = c
                .describe_target_health(pb::DescribeTargetHealthRequest { target_group: name })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(
                out,
                &output::parse_all(&r.items_json),
                &[
                    ("TASK", |v| field(v, "target.taskId")),
                    ("TARGET", |v| {
                        format!("{}:{}", field(v, "target.id"), field(v, "target.port"))
                    }),
                    ("STATE", |v| field(v, "targetHealth.state")),
                    ("REASON", |v| field(v, "targetHealth.reason")),
                ],
            );
        }
    }
    Ok(0)
}

/// Runs a listener command.
pub async fn listener(conn: &Conn, out: Format, cmd: ListenerCmd) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let r = match cmd {
        ListenerCmd::Create { name, file } => {
            let r = c
                .create_listener(pb::CreateListenerRequest {
                    name,
                    listener_json: read_doc(&file)?,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::warnings(&r.warnings);
            vec![r.json]
        }
        ListenerCmd::Describe { names } => {
            c.describe_listeners(pb::DescribeByNameRequest { names })
                .await
                .map_err(api_error)?
                .into_inner()
                .items_json
        }
    };
    output::docs(out, &output::parse_all(&r), LISTENER_COLUMNS);
    Ok(0)
}

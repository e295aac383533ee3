//! `capstan instance …`

use super::*;

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
    c: &mut capstan_proto::auth::ApiClient,
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

//! `capstan capacity-provider …`

use super::*;

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
    /// Change a capacity provider's managed settings from an AutoScalingGroupProviderUpdate JSON
    /// file (managedScaling, managedTerminationProtection, managedDraining).
    Update {
        /// Name or ARN.
        name: String,
        /// JSON file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a capacity provider that no cluster lists.
    Delete {
        /// Name or ARN.
        name: String,
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
        CapacityProviderCmd::Update { name, file } => {
            let r = c
                .update_capacity_provider(pb::UpdateCapacityProviderRequest {
                    capacity_provider: name,
                    node_group_provider_json: read_doc(&file)?,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            document(out, &r, CP_COLUMNS);
        }
        CapacityProviderCmd::Delete { name } => {
            let r = c
                .delete_capacity_provider(pb::DeleteCapacityProviderRequest {
                    capacity_provider: name,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            document(out, &r, CP_COLUMNS);
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

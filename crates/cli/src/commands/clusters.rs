//! `capstan cluster …`

use super::*;

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
                .describe_clusters(pb::DescribeClustersRequest {
                    clusters: names,
                    include: ["SETTINGS", "TAGS", "CONFIGURATIONS", "STATISTICS"]
                        .map(String::from)
                        .to_vec(),
                })
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

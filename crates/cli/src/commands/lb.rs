//! `capstan targetgroup …` and `capstan listener …`

use super::*;

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

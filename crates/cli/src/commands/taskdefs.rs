//! `capstan taskdef …`

use super::*;

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

//! `capstan task …`

use std::io::Write;

use super::*;

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
        /// Allow `capstan task exec` on the tasks (ECS's enableExecuteCommand).
        #[arg(long)]
        enable_execute_command: bool,
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
    /// Protect service tasks from scale-in and deployments (ECS's UpdateTaskProtection), or
    /// with `--off` lift their protection.
    Protect {
        /// 1 to 10 task ids or ARNs.
        #[arg(required = true)]
        tasks: Vec<String>,
        /// How long, 1 to 2880 minutes (ECS's default 120).
        #[arg(long, default_value_t = 120, conflicts_with = "off")]
        minutes: i32,
        /// Lift the protection instead.
        #[arg(long)]
        off: bool,
    },
    /// Tasks' scale-in protection (ECS's GetTaskProtection); none named: every protected task.
    Protection {
        /// Task ids or ARNs.
        tasks: Vec<String>,
    },
    /// A task's container logs (stdout and stderr, each line with its time), from its agent.
    Logs {
        /// Task id or ARN.
        task: String,
        /// Only this container.
        #[arg(long, short = 'c', default_value = "")]
        container: String,
        /// Keep printing new lines until the task stops (Ctrl-C to leave).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines from this long ago (`10m`, `1h30m`).
        #[arg(long)]
        since: Option<humantime::Duration>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Run a command in a running container of a task (ECS Exec); the task must have been run
    /// with enableExecuteCommand. Exits with the command's exit code.
    Exec {
        /// Task id or ARN.
        task: String,
        /// The container; the task's only one by default.
        #[arg(long, short = 'c', default_value = "")]
        container: String,
        /// Keep stdin open and send it to the command.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Allocate a terminal (with -i, from a terminal: an interactive shell).
        #[arg(long, short = 't')]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
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

/// Columns of a task's protection.
pub const PROTECTION_COLUMNS: &[Column] = &[
    ("TASK", |v| short(&field(v, "taskArn"))),
    ("PROTECTED", |v| field(v, "protectionEnabled")),
    ("EXPIRES", |v| time(v, "expirationDate")),
];

/// Runs a task command.
pub async fn task(conn: &Conn, cluster: &str, out: Format, cmd: TaskCmd) -> anyhow::Result<i32> {
    if let TaskCmd::Exec {
        task,
        container,
        interactive,
        tty,
        command,
    } = cmd
    {
        let args = super::exec::ExecArgs {
            cluster: cluster.to_string(),
            task,
            container,
            interactive,
            tty,
            command,
        };
        return super::exec::exec(conn, args).await;
    }
    let mut c = conn.client().await?;
    let cluster = cluster.to_string();
    match cmd {
        TaskCmd::Run {
            file,
            task_definition,
            count,
            started_by,
            enable_execute_command,
        } => {
            let body = match (file, task_definition) {
                (Some(f), _) => read_doc(&f)?,
                (None, Some(td)) => {
                    let mut v = json!({"taskDefinition": td, "count": count});
                    if let Some(s) = started_by {
                        v["startedBy"] = json!(s);
                    }
                    if enable_execute_command {
                        v["enableExecuteCommand"] = json!(true);
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
        TaskCmd::Protect {
            tasks,
            minutes,
            off,
        } => {
            let r = c
                .update_task_protection(pb::UpdateTaskProtectionRequest {
                    cluster,
                    tasks,
                    protection_enabled: !off,
                    expires_in_minutes: if off { 0 } else { minutes },
                })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), PROTECTION_COLUMNS);
            return done(output::failures(&r.failures));
        }
        TaskCmd::Protection { tasks } => {
            let r = c
                .get_task_protection(pb::GetTaskProtectionRequest { cluster, tasks })
                .await
                .map_err(api_error)?
                .into_inner();
            output::docs(out, &output::parse_all(&r.items_json), PROTECTION_COLUMNS);
            return done(output::failures(&r.failures));
        }
        TaskCmd::Logs {
            task,
            container,
            follow,
            since,
            tail,
        } => {
            let since = since.map(|d| {
                std::time::SystemTime::now()
                    .checked_sub(d.into())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64())
            });
            let mut lines = c
                .get_task_logs(pb::GetTaskLogsRequest {
                    cluster,
                    task,
                    container,
                    follow,
                    since,
                    tail,
                })
                .await
                .map_err(api_error)?
                .into_inner();
            let mut stdout = std::io::stdout().lock();
            while let Some(line) = lines.message().await.map_err(api_error)? {
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs_f64(line.timestamp.max(0.0));
                let text = match out {
                    Format::Json => json!({
                        "timestamp": line.timestamp,
                        "container": line.container,
                        "stream": line.stream,
                        "message": line.message,
                    })
                    .to_string(),
                    _ => format!(
                        "{} {} {} {}",
                        humantime::format_rfc3339_millis(at),
                        line.container,
                        line.stream,
                        line.message
                    ),
                };
                // A closed pipe (`| head`) ends the command quietly.
                if writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
        // Handled before the client above.
        TaskCmd::Exec { .. } => {}
    }
    Ok(0)
}

//! `capstan deploy`: UpdateService to a task definition, then (with --wait) follow the new
//! deployment through WatchService until it COMPLETES (exit 0) or FAILS (exit 1).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::Duration;

use capstan_proto::api::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::output::{Format, field};
use crate::{Conn, api_error};

/// `capstan deploy` arguments.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Service name.
    pub service: String,
    /// `family:revision` or `family` (its latest ACTIVE revision).
    #[arg(long)]
    pub task_definition: String,
    /// Follow the rollout until it completes or fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 2).
    #[arg(long, default_value = "30m")]
    pub timeout: humantime::Duration,
    /// Deploy even if the service already runs this task definition.
    #[arg(long)]
    pub force: bool,
}

/// What one update of the followed deployment means for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still rolling.
    Rolling,
    /// COMPLETED.
    Completed,
    /// FAILED, with the reason.
    Failed(String),
}

/// Reads a deployment document's outcome.
pub fn outcome(dep: &Value) -> Outcome {
    match dep["rolloutState"].as_str() {
        Some("COMPLETED") => Outcome::Completed,
        Some("FAILED") => Outcome::Failed(field(dep, "rolloutStateReason")),
        _ => Outcome::Rolling,
    }
}

/// One line of progress for a deployment.
pub fn progress_line(dep: &Value) -> String {
    let mut s = format!(
        "{} {} {}: running {}/{} pending {}",
        field(dep, "id"),
        field(dep, "taskDefinition"),
        field(dep, "rolloutState"),
        field(dep, "runningCount"),
        field(dep, "desiredCount"),
        field(dep, "pendingCount"),
    );
    if let Some(stage) = dep["lifecycleStage"].as_str() {
        s.push_str(&format!(" stage {stage}"));
    }
    let failures = dep["circuitBreaker"]["failureCount"].as_u64().unwrap_or(0);
    if failures > 0 {
        s.push_str(&format!(
            " breaker {failures}/{}",
            field(&dep["circuitBreaker"], "threshold")
        ));
    }
    s
}

/// Runs `capstan deploy`.
pub async fn run(conn: &Conn, cluster: &str, out: Format, args: DeployArgs) -> anyhow::Result<i32> {
    let mut c = conn.client().await?;
    let before: HashSet<String> = c
        .list_service_deployments(pb::ListServiceDeploymentsRequest {
            cluster: cluster.to_string(),
            service: args.service.clone(),
            status: Vec::new(),
        })
        .await
        .map_err(api_error)?
        .into_inner()
        .items_json
        .iter()
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .map(|d| field(&d, "id"))
        .collect();
    // The revision a family means now, as UpdateService will resolve it.
    let target = c
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: args.task_definition.clone(),
        })
        .await
        .map_err(api_error)?
        .into_inner();
    let target: Value = serde_json::from_str(&target.task_definition_json).unwrap_or(Value::Null);
    let target = format!(
        "{}:{}",
        field(&target, "family"),
        field(&target, "revision")
    );
    let mut update = json!({ "taskDefinition": target });
    if args.force {
        update["forceNewDeployment"] = json!(true);
    }
    let updated = c
        .update_service(pb::UpdateServiceRequest {
            cluster: cluster.to_string(),
            service: args.service.clone(),
            service_json: update.to_string(),
        })
        .await
        .map_err(api_error)?
        .into_inner();
    crate::output::warnings(&updated.warnings);
    if out == Format::Json && !args.wait {
        println!("{}", updated.service_json);
        return Ok(0);
    }
    println!("service {} updated to {target}", args.service);
    if !args.wait {
        return Ok(0);
    }

    let mut stream = c
        .watch_service(pb::WatchServiceRequest {
            cluster: cluster.to_string(),
            service: args.service.clone(),
        })
        .await
        .map_err(api_error)?
        .into_inner();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let bar = std::io::stdout().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => println!("{line}"),
    };
    let mut ours: Option<String> = None;
    let mut last_line = String::new();
    // A deployment only the update can have started: one that was not there before it. When the
    // update changed nothing, the PRIMARY is what the service runs.
    let deadline = tokio::time::Instant::now() + Duration::from(args.timeout);
    loop {
        let msg = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => {
                say(format!(
                    "gave up after {}: the deployment is still in progress",
                    args.timeout
                ));
                return Ok(2);
            }
            Ok(m) => m.map_err(api_error)?,
        };
        let Some(u) = msg else {
            anyhow::bail!("the API closed the watch stream");
        };
        let doc: Value = serde_json::from_str(&u.json).unwrap_or(Value::Null);
        match pb::service_update::Kind::try_from(u.kind) {
            Ok(pb::service_update::Kind::Event)
                if doc["createdAt"].as_f64().unwrap_or(0.0) >= started - 1.0 =>
            {
                say(format!("event: {}", field(&doc, "message")));
            }
            Ok(pb::service_update::Kind::Service) if ours.is_none() => {
                // Nothing new to roll out: follow the PRIMARY the service already has.
                let primary = &doc["deployments"][0];
                if before.contains(&field(primary, "id"))
                    && field(primary, "taskDefinition") == target
                    && !args.force
                    && outcome(primary) == Outcome::Completed
                {
                    say(format!(
                        "{} already runs {target}; nothing to deploy",
                        args.service
                    ));
                    return Ok(0);
                }
            }
            Ok(pb::service_update::Kind::Deployment) if !u.deleted => {
                let id = field(&doc, "id");
                if ours.is_none() && !before.contains(&id) {
                    say(format!("following deployment {id}"));
                    ours = Some(id.clone());
                }
                if ours.as_deref() != Some(id.as_str()) {
                    continue;
                }
                if let Some(b) = &bar {
                    b.set_length(doc["desiredCount"].as_u64().unwrap_or(0));
                    b.set_position(doc["runningCount"].as_u64().unwrap_or(0));
                    b.set_message(format!(
                        "{} {}",
                        field(&doc, "rolloutState"),
                        doc["lifecycleStage"].as_str().unwrap_or("")
                    ));
                }
                let line = progress_line(&doc);
                if line != last_line {
                    if bar.is_none() {
                        say(line.clone());
                    }
                    last_line = line;
                }
                match outcome(&doc) {
                    Outcome::Rolling => {}
                    Outcome::Completed => {
                        if let Some(b) = &bar {
                            b.finish_and_clear();
                        }
                        println!("deployment {id} COMPLETED: {}", last_line);
                        return Ok(0);
                    }
                    Outcome::Failed(reason) => {
                        if let Some(b) = &bar {
                            b.finish_and_clear();
                        }
                        eprintln!("deployment {id} FAILED: {reason}");
                        return Ok(1);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_progress_read_deployments() {
        let d = json!({"id": "ecs-svc/1", "taskDefinition": "web:2", "rolloutState": "IN_PROGRESS",
            "runningCount": 1, "desiredCount": 3, "pendingCount": 2,
            "circuitBreaker": {"failureCount": 2, "threshold": 3}});
        assert_eq!(outcome(&d), Outcome::Rolling);
        assert_eq!(
            progress_line(&d),
            "ecs-svc/1 web:2 IN_PROGRESS: running 1/3 pending 2 breaker 2/3"
        );
        let f = json!({"rolloutState": "FAILED", "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start."});
        assert_eq!(
            outcome(&f),
            Outcome::Failed("ECS deployment circuit breaker: tasks failed to start.".into())
        );
        assert_eq!(
            outcome(&json!({"rolloutState": "COMPLETED"})),
            Outcome::Completed
        );
    }
}

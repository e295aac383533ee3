//! The CloudWatch Logs subset the ECS tutorials use (`aws logs describe-log-streams`,
//! `get-log-events`, `filter-log-events`), over the logs each task's agent keeps
//! (`X-Amz-Target: Logs_20140328.<Action>`, signed for the service `logs`).
//!
//! Groups and streams are named as ECS's awslogs driver names them: a container whose
//! `logConfiguration` is `awslogs` belongs to its `awslogs-group`, in the stream
//! `<awslogs-stream-prefix>/<container>/<task id>`; any other container to `/ecs/<family>`
//! with the prefix `ecs` (the ECS console's default). Reading a stream is `logs:GetLogEvents`
//! on its task; listing a group's streams is `ecs:ListTasks` on each cluster that has some.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use capstan_core::{Task, TaskDefinition};
use capstan_proto::api::v1 as pb;
use serde_json::{Value, json};

use super::actions::{Input, text, texts, wrong_type};
use super::{Endpoint, Who};
use crate::error::{ApiError, ApiResult, Exception};

/// The target prefix of every CloudWatch Logs action.
pub const TARGET_PREFIX: &str = "Logs_20140328.";

/// Most events one call answers (CloudWatch's own cap).
const MAX_EVENTS: usize = 10_000;

/// One log stream: a container of a task.
#[derive(Debug, Clone)]
struct LogStream {
    name: String,
    cluster: String,
    task: String,
    container: String,
    created_ms: i64,
}

/// The group and stream prefix of `container` in `td`.
fn group_and_prefix(td: &TaskDefinition, container: &str) -> (String, String) {
    let config = td
        .container_definitions
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.log_configuration.as_ref());
    let awslogs = config.filter(|c| c["logDriver"] == "awslogs");
    let option = |k: &str| {
        awslogs
            .and_then(|c| c["options"][k].as_str())
            .map(str::to_string)
    };
    (
        option("awslogs-group").unwrap_or_else(|| format!("/ecs/{}", td.family)),
        option("awslogs-stream-prefix").unwrap_or_else(|| {
            if awslogs.is_some() {
                String::new()
            } else {
                "ecs".to_string()
            }
        }),
    )
}

fn stream_name(prefix: &str, container: &str, task: &str) -> String {
    if prefix.is_empty() {
        format!("{container}/{task}")
    } else {
        format!("{prefix}/{container}/{task}")
    }
}

fn millis(epoch_secs: f64) -> i64 {
    (epoch_secs * 1000.0).round() as i64
}

/// An optional integer field (epoch milliseconds, limits).
fn integer(i: &Input, name: &str) -> ApiResult<Option<i64>> {
    match i.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| wrong_type(name, "an integer", &Value::Number(n.clone()))),
        Some(other) => Err(wrong_type(name, "an integer", other)),
    }
}

fn required(i: &Input, name: &str) -> ApiResult<String> {
    let v = text(i, name)?;
    if v.is_empty() {
        return Err(ApiError::invalid(format!("{name} is required")));
    }
    Ok(v)
}

fn no_such_stream(group: &str, stream: &str) -> ApiError {
    ApiError::new(
        Exception::ResourceNotFound,
        format!("The specified log stream does not exist: {stream} in log group {group}."),
    )
}

/// Every stream of `group`, over the tasks of every cluster the caller may list.
async fn streams(e: &Endpoint, who: &Who, group: &str) -> ApiResult<Vec<LogStream>> {
    let api = &e.api;
    let prefix = format!("{}/tasks/", api.keys().prefix());
    let tasks: Vec<Task> = api
        .list::<Task>(&prefix)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut defs: HashMap<String, Option<TaskDefinition>> = HashMap::new();
    let mut out = Vec::new();
    for t in &tasks {
        let arn = &t.task_definition_arn;
        if !defs.contains_key(arn) {
            let td = api
                .resolve_task_definition(crate::shape::name_of(arn))
                .await
                .ok();
            defs.insert(arn.clone(), td);
        }
        let Some(Some(td)) = defs.get(arn) else {
            continue;
        };
        for c in &td.container_definitions {
            let (g, p) = group_and_prefix(td, &c.name);
            if g == group {
                out.push(LogStream {
                    name: stream_name(&p, &c.name, t.id()),
                    cluster: t.cluster().to_string(),
                    task: t.id().to_string(),
                    container: c.name.clone(),
                    created_ms: millis(t.created_at.unwrap_or_default()),
                });
            }
        }
    }
    // Listing a group's streams lists those clusters' tasks.
    let clusters: BTreeSet<String> = out.iter().map(|s| s.cluster.clone()).collect();
    for cluster in clusters {
        let req = pb::ListTasksRequest {
            cluster,
            ..Default::default()
        };
        e.guarded(who, req, async |_, _| Ok(())).await?;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One stream's events (epoch ms, message) between `start` and `end` (ms), through the task's
/// agent, checked as `logs:GetLogEvents` on the task.
async fn events(
    e: &Endpoint,
    who: &Who,
    s: &LogStream,
    start: Option<i64>,
    end: Option<i64>,
) -> ApiResult<Vec<(i64, String)>> {
    let req = pb::GetTaskLogsRequest {
        cluster: s.cluster.clone(),
        task: s.task.clone(),
        container: s.container.clone(),
        follow: false,
        since: start.map(|ms| ms as f64 / 1000.0),
        tail: None,
    };
    e.guarded(who, req, async |api, r| {
        let mut lines = api.task_logs(r).await?;
        let mut out = Vec::new();
        loop {
            match lines.message().await {
                Ok(Some(l)) => {
                    let at = millis(l.timestamp);
                    if end.is_none_or(|end| at < end) && start.is_none_or(|s| at >= s) {
                        out.push((at, l.message));
                    }
                }
                Ok(None) => return Ok(out),
                Err(status) => {
                    return Err(ApiError::new(
                        Exception::Server,
                        format!(
                            "reading the task's logs from its agent: {}",
                            status.message()
                        ),
                    ));
                }
            }
        }
    })
    .await
}

/// Whether `message` matches a filter pattern: every term (or "quoted phrase") appears in it.
fn matches(pattern: &str, message: &str) -> bool {
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        let (term, after) = match rest.strip_prefix('"') {
            Some(q) => q.split_once('"').unwrap_or((q, "")),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        if !term.is_empty() && !message.contains(term) {
            return false;
        }
        rest = after.trim_start();
    }
    true
}

/// Answers CloudWatch Logs `action` with `input` for `who`.
pub async fn dispatch(e: &Endpoint, who: &Who, action: &str, i: &Input) -> ApiResult<Value> {
    match action {
        "DescribeLogStreams" => {
            let group = required(i, "logGroupName")?;
            let prefix = text(i, "logStreamNamePrefix")?;
            let limit = integer(i, "limit")?.map_or(50, |l| l.clamp(1, 50) as usize);
            let all = streams(e, who, &group).await?;
            let after = text(i, "nextToken")?;
            let page: Vec<&LogStream> = all
                .iter()
                .filter(|s| s.name.starts_with(&prefix) && s.name > after)
                .take(limit + 1)
                .collect();
            let more = page.len() > limit;
            let shown: Vec<Value> = page
                .iter()
                .take(limit)
                .map(|s| {
                    json!({
                        "logStreamName": s.name,
                        "creationTime": s.created_ms,
                        "arn": format!("arn:capstan:logs:local:000000000000:log-group:{group}:log-stream:{}", s.name),
                    })
                })
                .collect();
            let mut out = json!({"logStreams": shown});
            if more && let Some(last) = page.get(limit - 1) {
                out["nextToken"] = last.name.clone().into();
            }
            Ok(out)
        }
        "GetLogEvents" => {
            let group = required(i, "logGroupName")?;
            let name = required(i, "logStreamName")?;
            let s = streams(e, who, &group)
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| no_such_stream(&group, &name))?;
            let limit =
                integer(i, "limit")?.map_or(MAX_EVENTS, |l| (l.max(1) as usize).min(MAX_EVENTS));
            let from_head = matches!(i.get("startFromHead"), Some(Value::Bool(true)));
            // A token from an earlier answer: `f/<ms>` (after it) or `b/<ms>` (before it).
            let token = text(i, "nextToken")?;
            let (mut start, mut end) = (integer(i, "startTime")?, integer(i, "endTime")?);
            let mut forward = from_head;
            if let Some(ms) = token.strip_prefix("f/").and_then(|t| t.parse::<i64>().ok()) {
                start = Some(ms + 1);
                forward = true;
            } else if let Some(ms) = token.strip_prefix("b/").and_then(|t| t.parse::<i64>().ok()) {
                end = Some(ms);
                forward = false;
            }
            let mut all = events(e, who, &s, start, end).await?;
            if forward {
                all.truncate(limit);
            } else {
                let skip = all.len().saturating_sub(limit);
                all.drain(..skip);
            }
            let first = all.first().map_or(start.unwrap_or(0), |(t, _)| *t);
            let last = all
                .last()
                .map_or(start.unwrap_or(0).max(1) - 1, |(t, _)| *t);
            let shown: Vec<Value> = all
                .iter()
                .map(|(t, m)| json!({"timestamp": t, "message": m, "ingestionTime": t}))
                .collect();
            Ok(json!({
                "events": shown,
                "nextForwardToken": format!("f/{last}"),
                "nextBackwardToken": format!("b/{first}"),
            }))
        }
        "FilterLogEvents" => {
            let group = required(i, "logGroupName")?;
            let names: BTreeSet<String> = texts(i, "logStreamNames")?.into_iter().collect();
            let prefix = text(i, "logStreamNamePrefix")?;
            let pattern = text(i, "filterPattern")?;
            let limit =
                integer(i, "limit")?.map_or(MAX_EVENTS, |l| (l.max(1) as usize).min(MAX_EVENTS));
            let (start, end) = (integer(i, "startTime")?, integer(i, "endTime")?);
            let mut found: Vec<(i64, String, String)> = Vec::new();
            let mut searched = BTreeMap::new();
            for s in streams(e, who, &group).await? {
                if (!names.is_empty() && !names.contains(&s.name)) || !s.name.starts_with(&prefix) {
                    continue;
                }
                // A stream whose agent cannot be reached is reported as not searched.
                match events(e, who, &s, start, end).await {
                    Ok(evs) => {
                        found.extend(
                            evs.into_iter()
                                .filter(|(_, m)| matches(&pattern, m))
                                .map(|(t, m)| (t, s.name.clone(), m)),
                        );
                        searched.insert(s.name.clone(), true);
                    }
                    Err(err) if err.exception == Exception::AccessDenied => return Err(err),
                    Err(_) => {
                        searched.insert(s.name.clone(), false);
                    }
                }
            }
            found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            found.truncate(limit);
            let shown: Vec<Value> = found
                .iter()
                .enumerate()
                .map(|(n, (t, stream, m))| {
                    json!({"logStreamName": stream, "timestamp": t, "message": m,
                        "ingestionTime": t, "eventId": format!("{t:020}{n:08}")})
                })
                .collect();
            let searched: Vec<Value> = searched
                .into_iter()
                .map(|(n, done)| json!({"logStreamName": n, "searchedCompletely": done}))
                .collect();
            Ok(json!({"events": shown, "searchedLogStreams": searched}))
        }
        other => Err(ApiError::new(
            Exception::UnknownOperation,
            format!(
                "{other} is not a CloudWatch Logs action Capstan serves (DescribeLogStreams, GetLogEvents, FilterLogEvents)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_log_to_their_awslogs_group_or_to_ecs_default() {
        let td: TaskDefinition = serde_json::from_value(json!({
            "family": "web",
            "containerDefinitions": [
                {"name": "app", "image": "x", "logConfiguration": {"logDriver": "awslogs",
                    "options": {"awslogs-group": "/ecs/tutorial", "awslogs-stream-prefix": "svc"}}},
                {"name": "side", "image": "x"},
                {"name": "plain", "image": "x", "logConfiguration": {"logDriver": "awslogs",
                    "options": {"awslogs-group": "g"}}}
            ]
        }))
        .expect("task definition");
        assert_eq!(
            group_and_prefix(&td, "app"),
            ("/ecs/tutorial".into(), "svc".into())
        );
        assert_eq!(
            group_and_prefix(&td, "side"),
            ("/ecs/web".into(), "ecs".into())
        );
        assert_eq!(stream_name("svc", "app", "t1"), "svc/app/t1");
        assert_eq!(stream_name("", "plain", "t1"), "plain/t1");
    }

    #[test]
    fn filter_patterns_need_every_term_and_phrase() {
        assert!(matches("", "anything"));
        assert!(matches("GET 200", "GET /index 200"));
        assert!(!matches("GET 404", "GET /index 200"));
        assert!(matches("\"GET /index\" 200", "GET /index 200"));
        assert!(!matches("\"GET 200\"", "GET /index 200"));
    }
}

//! The requests the control plane sends agents, built in one place: a StartTask sent at launch
//! and one re-sent after a failover must be the same request.

use capstan_core::task::{StopCode, Task};
use capstan_proto::agent::v1 as pb;

/// StartTask for `task`, whose task definition is `task_definition_json` (serialized once by the
/// caller: most launches share one), fenced with `fencing_token`. Carries the task's overrides.
pub fn start_request(
    task: &Task,
    task_definition_json: String,
    fencing_token: u64,
) -> pb::StartTaskRequest {
    pb::StartTaskRequest {
        task_id: task.id().to_string(),
        cluster: task.cluster().to_string(),
        task_definition_arn: task.task_definition_arn.clone(),
        task_definition_json,
        overrides_json: task
            .overrides
            .as_ref()
            .and_then(|o| serde_json::to_string(o).ok())
            .unwrap_or_default(),
        fencing_token,
        enable_execute_command: task.enable_execute_command,
    }
}

/// StopTask for task `task_id` with ECS's `reason` and `code`, fenced with `fencing_token`.
pub fn stop_request(
    task_id: &str,
    reason: &str,
    code: StopCode,
    fencing_token: u64,
) -> pb::StopTaskRequest {
    pb::StopTaskRequest {
        task_id: task_id.to_string(),
        reason: reason.to_string(),
        timeout: None,
        fencing_token,
        stop_code: pb::StopCode::from(code) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_carries_the_tasks_overrides_cluster_and_token() {
        let overrides: capstan_core::task::TaskOverride = serde_json::from_value(
            serde_json::json!({"containerOverrides": [{"name": "app", "command": ["echo", "hi"]}]}),
        )
        .expect("overrides");
        let t = Task {
            task_arn: "arn:capstan:ecs:local:000000000000:task/prod/t1".into(),
            cluster_arn: "arn:capstan:ecs:local:000000000000:cluster/prod".into(),
            task_definition_arn: "web:3".into(),
            overrides: Some(overrides),
            ..Default::default()
        };
        let r = start_request(&t, "{}".into(), 42);
        assert_eq!(
            (
                r.task_id.as_str(),
                r.cluster.as_str(),
                r.task_definition_arn.as_str()
            ),
            ("t1", "prod", "web:3")
        );
        assert_eq!(r.fencing_token, 42);
        let sent: serde_json::Value = serde_json::from_str(&r.overrides_json).expect("json");
        assert_eq!(sent["containerOverrides"][0]["command"][1], "hi");
        let plain = Task {
            overrides: None,
            ..t
        };
        assert_eq!(start_request(&plain, "{}".into(), 1).overrides_json, "");
    }

    #[test]
    fn stop_request_maps_the_stop_code() {
        let r = stop_request("t1", "scaled in", StopCode::ServiceSchedulerInitiated, 7);
        assert_eq!(r.stop_code, pb::StopCode::ServiceSchedulerInitiated as i32);
        assert_eq!(
            (r.task_id.as_str(), r.reason.as_str(), r.fencing_token),
            ("t1", "scaled in", 7)
        );
    }
}

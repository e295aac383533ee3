//! Pure pieces of the API: ARNs, pagination, UpdateService's merge, DescribeServices' shape and
//! ListTasks' filters. No IO, so they carry most of the unit tests.

use capstan_core::service::ServiceStatus;
use capstan_core::task::DesiredStatus;
use capstan_core::{Service, ServiceEvent, ServiceStatusDoc, Task};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// Start of every Capstan ARN.
pub const ARN_PREFIX: &str = "arn:capstan:ecs:local:000000000000:";

/// Most items one List call returns, and its default.
pub const MAX_RESULTS: i32 = 100;

/// `arn:capstan:ecs:local:000000000000:<resource>`.
pub fn arn(resource: &str) -> String {
    format!("{ARN_PREFIX}{resource}")
}

/// The name an ARN or a plain name refers to: the part after the last `/`.
pub fn name_of(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// One page of `items` (sorted), after `next_token`; returns the page and the token of the next.
pub fn page(
    mut items: Vec<String>,
    max_results: i32,
    next_token: &str,
) -> ApiResult<(Vec<String>, String)> {
    let max = match max_results {
        0 => MAX_RESULTS,
        n if (1..=MAX_RESULTS).contains(&n) => n,
        n => {
            return Err(ApiError::invalid(format!(
                "maxResults must be between 1 and {MAX_RESULTS}, got {n}"
            )));
        }
    } as usize;
    items.sort();
    items.dedup();
    let start = if next_token.is_empty() {
        0
    } else {
        items.partition_point(|i| i.as_str() <= next_token)
    };
    let rest = &items[start.min(items.len())..];
    let shown: Vec<String> = rest.iter().take(max).cloned().collect();
    let token = if rest.len() > max {
        shown.last().cloned().unwrap_or_default()
    } else {
        String::new()
    };
    Ok((shown, token))
}

/// Fields UpdateService may not change (they name the service).
const FIXED_FIELDS: [&str; 3] = ["serviceName", "cluster", "schedulingStrategy"];

/// UpdateService: `current` with the update's fields laid over it. The update may name the
/// service as ECS's `service` field; it may not rename it or change its scheduling strategy.
pub fn merge_update(current: &Service, update: &[u8]) -> ApiResult<Vec<u8>> {
    let update: Value = serde_json::from_slice(update)
        .map_err(|e| ApiError::invalid(format!("service_json is not JSON: {e}")))?;
    let Value::Object(update) = update else {
        return Err(ApiError::invalid("service_json must be a JSON object"));
    };
    let mut merged = match serde_json::to_value(current) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // A previous forceNewDeployment must not force again.
    merged.remove("forceNewDeployment");
    for (k, v) in update {
        if k == "service" {
            continue;
        }
        if FIXED_FIELDS.contains(&k.as_str()) {
            if merged.get(&k) != Some(&v) && !(k == "cluster" && v.is_null()) {
                return Err(ApiError::invalid(format!(
                    "{k} cannot be changed by UpdateService; create a new service instead"
                )));
            }
            continue;
        }
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    serde_json::to_vec(&Value::Object(merged))
        .map_err(|e| ApiError::invalid(format!("cannot encode the merged service: {e}")))
}

/// The service as DescribeServices returns it: the spec, what the deployer reports, and the
/// latest events (newest first). Either of spec and status may be missing (a deleted service
/// has only its status; a new one only its spec).
pub fn describe_service(
    cluster: &str,
    name: &str,
    spec: Option<(&Service, i64)>,
    status: Option<&ServiceStatusDoc>,
    events: &[ServiceEvent],
) -> Value {
    let spec_rev = spec.map(|(_, rev)| rev).unwrap_or_default();
    let spec = spec.map(|(s, _)| s);
    let mut doc = match spec.map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    };
    doc.remove("forceNewDeployment");
    doc.remove("status");
    doc.insert("serviceName".into(), json!(name));
    doc.insert(
        "serviceArn".into(),
        json!(arn(&format!("service/{cluster}/{name}"))),
    );
    doc.insert(
        "clusterArn".into(),
        json!(arn(&format!("cluster/{cluster}"))),
    );
    doc.remove("cluster");
    let state = match (spec, status) {
        (Some(_), _) => ServiceStatus::Active,
        (None, Some(s)) if s.status == ServiceStatus::Inactive => ServiceStatus::Inactive,
        (None, Some(s)) if s.deployments.is_empty() && s.status == ServiceStatus::Active => {
            ServiceStatus::Inactive
        }
        (None, _) => ServiceStatus::Draining,
    };
    doc.insert("status".into(), json!(state));
    let desired = match (spec, status) {
        (Some(s), _) => s.desired_count.unwrap_or(0),
        (None, _) => 0,
    };
    doc.insert("desiredCount".into(), json!(desired));
    let (running, pending, deployments) = status.map_or((0, 0, Vec::new()), |s| {
        (s.running_count, s.pending_count, s.deployments.clone())
    });
    doc.insert("runningCount".into(), json!(running));
    doc.insert("pendingCount".into(), json!(pending));
    if let Some(td) = deployments.first().map(|d| d.task_definition.clone()) {
        doc.insert("taskDefinition".into(), json!(td));
    }
    let mut deployments = match serde_json::to_value(&deployments) {
        Ok(Value::Array(d)) => d,
        _ => Vec::new(),
    };
    if let Some(pending) = spec.and_then(|s| pending_deployment(s, spec_rev, &deployments)) {
        // ECS creates the new PRIMARY deployment within CreateService/UpdateService; Capstan's
        // deployer does it a moment later. Until then the service shows it as ECS would, so a
        // `services-stable` waiter started at once does not see the old deployment as done.
        if let Some(Value::Object(old)) = deployments.first_mut() {
            old.insert("status".into(), json!("ACTIVE"));
        }
        doc.insert("taskDefinition".into(), pending["taskDefinition"].clone());
        deployments.insert(0, pending);
    }
    doc.insert("deployments".into(), Value::Array(deployments));
    if let Some(err) = status.and_then(|s| s.error.as_ref()) {
        doc.insert("error".into(), json!(err));
    }
    let mut events: Vec<&ServiceEvent> = events.iter().collect();
    events.sort_by(|a, b| b.id.cmp(&a.id));
    doc.insert("events".into(), json!(events));
    Value::Object(doc)
}

/// The deployment a service's spec (written at `spec_rev`) asks for that its status does not
/// show yet, if any: the spec names a revision, no deployment answers the spec (its
/// fingerprint, which a rollback's deployment carries too) and none is PRIMARY on it.
fn pending_deployment(spec: &Service, spec_rev: i64, deployments: &[Value]) -> Option<Value> {
    let td = spec
        .task_definition
        .as_deref()
        .filter(|t| t.contains(':'))?;
    let fingerprint = capstan_plan::service::fingerprint(spec, spec_rev);
    if deployments
        .iter()
        .any(|d| d["specFingerprint"].as_str() == Some(fingerprint.as_str()))
    {
        return None;
    }
    let primary = deployments
        .first()
        .and_then(|d| d["taskDefinition"].as_str());
    if primary == Some(td) {
        return None;
    }
    Some(json!({
        "id": "ecs-svc/pending",
        "status": "PRIMARY",
        "taskDefinition": td,
        "desiredCount": spec.desired_count.unwrap_or(0),
        "pendingCount": 0,
        "runningCount": 0,
        "failedTasks": 0,
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": "ECS deployment is being created.",
    }))
}

/// What ListTasks filters on; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Task definition family.
    pub family: String,
    /// Service name (tasks of group `service:<name>`).
    pub service_name: String,
    /// RUNNING (default) or STOPPED.
    pub desired_status: String,
    /// Container instance id or ARN.
    pub container_instance: String,
    /// startedBy value.
    pub started_by: String,
}

impl TaskFilter {
    /// Checks the desired status filter.
    pub fn validate(&self) -> ApiResult<()> {
        match self.desired_status.as_str() {
            "" | "RUNNING" | "STOPPED" => Ok(()),
            other => Err(ApiError::invalid(format!(
                "desiredStatus must be RUNNING or STOPPED, got {other:?}"
            ))),
        }
    }

    /// Whether `task` passes.
    pub fn matches(&self, task: &Task) -> bool {
        let wanted = if self.desired_status == "STOPPED" {
            DesiredStatus::Stopped
        } else {
            DesiredStatus::Running
        };
        let family = name_of(&task.task_definition_arn)
            .split(':')
            .next()
            .unwrap_or_default();
        task.desired_status == wanted
            && (self.family.is_empty() || family == self.family)
            && (self.service_name.is_empty() || task.service() == Some(self.service_name.as_str()))
            && (self.container_instance.is_empty()
                || task
                    .container_instance_arn
                    .as_deref()
                    .is_some_and(|c| name_of(c) == name_of(&self.container_instance)))
            && (self.started_by.is_empty()
                || task.started_by.as_deref() == Some(self.started_by.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use capstan_core::Deployment;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn pages_walk_every_item_once() {
        let items: Vec<String> = (0..7).map(|i| format!("i{i}")).collect();
        let (p1, t1) = page(items.clone(), 3, "").expect("page");
        assert_eq!(p1, ["i0", "i1", "i2"]);
        let (p2, t2) = page(items.clone(), 3, &t1).expect("page");
        assert_eq!(p2, ["i3", "i4", "i5"]);
        let (p3, t3) = page(items.clone(), 3, &t2).expect("page");
        assert_eq!(p3, ["i6"]);
        assert!(t3.is_empty());
        assert!(page(items, 101, "").is_err());
    }

    proptest! {
        #[test]
        fn paging_is_a_partition(n in 0usize..60, size in 1i32..10) {
            let items: Vec<String> = (0..n).map(|i| format!("k{i:03}")).collect();
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let (p, t) = page(items.clone(), size, &token).expect("page");
                prop_assert!(p.len() <= size as usize);
                seen.extend(p);
                if t.is_empty() { break; }
                token = t;
            }
            prop_assert_eq!(seen, items);
        }
    }

    fn svc(json: &str) -> Service {
        capstan_core::parse_json(json.as_bytes()).expect("service")
    }

    #[test]
    fn update_lays_fields_over_the_spec() {
        let cur = svc(
            r#"{"serviceName":"web","taskDefinition":"web:1","desiredCount":2,"forceNewDeployment":true}"#,
        );
        let merged =
            merge_update(&cur, br#"{"service":"web","taskDefinition":"web:2"}"#).expect("merge");
        let s: Service = capstan_core::parse_json(&merged).expect("parses");
        assert_eq!(s.task_definition.as_deref(), Some("web:2"));
        assert_eq!(s.desired_count, Some(2));
        assert_eq!(s.force_new_deployment, None, "an old force does not repeat");
        let merged = merge_update(&cur, br#"{"desiredCount":null}"#).expect("merge");
        let s: Service = capstan_core::parse_json(&merged).expect("parses");
        assert_eq!(s.desired_count, None);
    }

    #[test]
    fn update_refuses_renames_and_non_objects() {
        let cur = svc(r#"{"serviceName":"web"}"#);
        let e = merge_update(&cur, br#"{"serviceName":"api"}"#).expect_err("rename");
        assert!(e.message.contains("serviceName cannot be changed"), "{e}");
        assert!(merge_update(&cur, b"[1]").is_err());
        assert!(merge_update(&cur, b"{").is_err());
    }

    #[test]
    fn describe_reports_spec_status_and_newest_events_first() {
        let spec = svc(r#"{"serviceName":"web","taskDefinition":"web","desiredCount":3}"#);
        let status = ServiceStatusDoc {
            running_count: 2,
            pending_count: 1,
            deployments: vec![Deployment {
                id: "ecs-svc/1".into(),
                task_definition: "web:4".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let events = [
            ServiceEvent {
                id: "001".into(),
                message: "old".into(),
                ..Default::default()
            },
            ServiceEvent {
                id: "002".into(),
                message: "new".into(),
                ..Default::default()
            },
        ];
        let d = describe_service("prod", "web", Some((&spec, 1)), Some(&status), &events);
        assert_eq!(d["status"], "ACTIVE");
        assert_eq!(d["desiredCount"], 3);
        assert_eq!(d["runningCount"], 2);
        assert_eq!(d["taskDefinition"], "web:4");
        assert_eq!(
            d["serviceArn"],
            "arn:capstan:ecs:local:000000000000:service/prod/web"
        );
        assert_eq!(d["events"][0]["message"], "new");
        let gone = describe_service("prod", "web", None, Some(&status), &[]);
        assert_eq!(gone["status"], "DRAINING");
        assert_eq!(gone["desiredCount"], 0);
        let done = ServiceStatusDoc {
            status: ServiceStatus::Inactive,
            ..Default::default()
        };
        assert_eq!(
            describe_service("prod", "web", None, Some(&done), &[])["status"],
            "INACTIVE"
        );
    }

    #[test]
    fn a_revision_the_deployer_has_not_taken_up_shows_as_the_primary_deployment() {
        let spec = svc(r#"{"serviceName":"web","taskDefinition":"web:5","desiredCount":2}"#);
        let status = ServiceStatusDoc {
            running_count: 2,
            deployments: vec![Deployment {
                id: "ecs-svc/1".into(),
                task_definition: "web:4".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = describe_service("prod", "web", Some((&spec, 1)), Some(&status), &[]);
        let deployments = d["deployments"].as_array().expect("deployments");
        assert_eq!(deployments.len(), 2, "{d}");
        assert_eq!(deployments[0]["status"], "PRIMARY");
        assert_eq!(deployments[0]["taskDefinition"], "web:5");
        assert_eq!(deployments[0]["runningCount"], 0);
        assert_eq!(deployments[1]["status"], "ACTIVE");
        assert_eq!(d["taskDefinition"], "web:5");

        // Once the deployer has made it, it is the one shown.
        let mut taken = status.clone();
        taken.deployments[0].task_definition = "web:5".into();
        let d = describe_service("prod", "web", Some((&spec, 1)), Some(&taken), &[]);
        assert_eq!(d["deployments"].as_array().map(Vec::len), Some(1));
        // A rollback's deployment answers the spec it rolled back from: nothing is pending.
        let mut rolled_back = status.clone();
        rolled_back.deployments[0].spec_fingerprint =
            Some(capstan_plan::service::fingerprint(&spec, 1));
        let d = describe_service("prod", "web", Some((&spec, 1)), Some(&rolled_back), &[]);
        assert_eq!(d["deployments"].as_array().map(Vec::len), Some(1), "{d}");
        assert_eq!(d["taskDefinition"], "web:4");
        // A brand-new service shows its first deployment at once.
        let d = describe_service("prod", "web", Some((&spec, 1)), None, &[]);
        assert_eq!(d["deployments"][0]["rolloutState"], "IN_PROGRESS");
    }

    #[test]
    fn task_filters() {
        let t = Task {
            task_definition_arn: "web:3".into(),
            group: Some("service:web".into()),
            container_instance_arn: Some(arn("container-instance/default/ci-1")),
            started_by: Some("ecs-svc/9".into()),
            ..Default::default()
        };
        let f = |family: &str, svc: &str, ci: &str, by: &str, ds: &str| TaskFilter {
            family: family.into(),
            service_name: svc.into(),
            container_instance: ci.into(),
            started_by: by.into(),
            desired_status: ds.into(),
        };
        assert!(f("", "", "", "", "").matches(&t));
        assert!(f("web", "web", "ci-1", "ecs-svc/9", "RUNNING").matches(&t));
        assert!(!f("api", "", "", "", "").matches(&t));
        assert!(!f("", "api", "", "", "").matches(&t));
        assert!(!f("", "", "ci-2", "", "").matches(&t));
        assert!(!f("", "", "", "", "STOPPED").matches(&t));
        assert!(f("", "", "", "", "BOGUS").validate().is_err());
    }
}

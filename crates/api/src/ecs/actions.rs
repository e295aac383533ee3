//! ECS actions on the wire: each takes ECS's input shape, builds the gRPC API's request, calls
//! the same [`Api`](crate::actions::Api) method under the same check, and answers in ECS's
//! output shape. Fields Capstan keeps in its documents pass through as they are.

use capstan_proto::api::v1 as pb;
use serde_json::{Map, Value, json};

use super::{Endpoint, Who};
use crate::authz;
use crate::error::{ApiError, ApiResult, Exception};

pub(super) type Input = Map<String, Value>;

/// The string field `name` ("" when absent); a field of another type is the caller's error.
pub(super) fn text(input: &Input, name: &str) -> ApiResult<String> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

/// The list of strings `name` (empty when absent).
pub(super) fn texts(input: &Input, name: &str) -> ApiResult<Vec<String>> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(name, "a list of strings", other)),
            })
            .collect(),
        Some(other) => Err(wrong_type(name, "a list of strings", other)),
    }
}

pub(super) fn flag(input: &Input, name: &str) -> ApiResult<bool> {
    match input.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(wrong_type(name, "a boolean", other)),
    }
}

pub(super) fn max_results(input: &Input) -> ApiResult<i32> {
    match input.get("maxResults") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::invalid(format!("maxResults must be at least 1, got {n}"))),
        Some(other) => Err(wrong_type("maxResults", "an integer", other)),
    }
}

pub(super) fn wrong_type(name: &str, want: &str, got: &Value) -> ApiError {
    ApiError::new(
        Exception::Serialization,
        format!("{name} must be {want}, got {got}"),
    )
}

/// The input without the fields the gRPC request carries apart, as the JSON document.
fn document(input: &Input, apart: &[&str]) -> String {
    let mut m = input.clone();
    for k in apart {
        m.remove(*k);
    }
    Value::Object(m).to_string()
}

/// A stored document (JSON text) as a value.
pub(super) fn doc(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| json!({}))
}

fn items(r: &pb::DescribeResponse) -> Value {
    Value::Array(r.items_json.iter().map(|j| doc(j)).collect())
}

fn failures(r: &pb::DescribeResponse) -> Value {
    Value::Array(
        r.failures
            .iter()
            .map(|f| {
                let mut m = Map::new();
                if !f.arn.is_empty() {
                    m.insert("arn".into(), f.arn.clone().into());
                }
                m.insert("reason".into(), f.reason.clone().into());
                if !f.detail.is_empty() {
                    m.insert("detail".into(), f.detail.clone().into());
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// A service as ECS writes it: task definitions as ARNs (Capstan's documents keep
/// `family:revision`).
fn ecs_service(mut v: Value) -> Value {
    fn to_arn(v: &mut Value) {
        if let Some(td) = v.as_str()
            && !td.starts_with("arn:")
        {
            *v = crate::shape::arn(&format!("task-definition/{td}")).into();
        }
    }
    if let Some(td) = v.get_mut("taskDefinition") {
        to_arn(td);
    }
    if let Some(Value::Array(ds)) = v.get_mut("deployments") {
        for d in ds {
            if let Some(td) = d.get_mut("taskDefinition") {
                to_arn(td);
            }
        }
    }
    v
}

/// Account settings are the whole account's in Capstan: a `principalArn` naming anyone else is
/// refused rather than applied to everyone.
fn whole_account(input: &Input) -> ApiResult<()> {
    let principal = text(input, "principalArn")?;
    if principal.is_empty() || principal.ends_with(":root") {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Capstan keeps account settings for the whole account only; leave out principalArn (got {principal})"
        )))
    }
}

/// `{<field>: items, "failures": […]}`.
/// A capacity provider as ECS clients read it: its ARN, ACTIVE unless it says otherwise, and its
/// node group's managed settings also as `autoScalingGroupProvider` (without an Auto Scaling
/// group ARN: there is none), since SDKs drop the `nodeGroupProvider` they do not know.
fn capacity_provider(mut v: Value) -> Value {
    let Value::Object(m) = &mut v else {
        return v;
    };
    if let Some(name) = m.get("name").and_then(Value::as_str) {
        let arn = crate::shape::arn(&format!("capacity-provider/{name}"));
        m.entry("capacityProviderArn").or_insert(arn.into());
    }
    m.entry("status").or_insert("ACTIVE".into());
    if let Some(Value::Object(ng)) = m.get("nodeGroupProvider") {
        let managed: Map<String, Value> = ng
            .iter()
            .filter(|(k, _)| k.starts_with("managed"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert("autoScalingGroupProvider".into(), Value::Object(managed));
    }
    v
}

fn described(field: &str, r: &pb::DescribeResponse) -> Value {
    json!({ field: items(r), "failures": failures(r) })
}

/// `{<field>: […], "nextToken"?}`: no token on the last page, as clients expect.
fn listed(field: &str, r: pb::ListResponse) -> Value {
    let mut out = json!({ field: r.arns });
    if !r.next_token.is_empty() {
        out["nextToken"] = r.next_token.into();
    }
    out
}

/// One action's future, boxed: each arm then polls in a stack frame of its own, so the
/// dispatcher's frame does not grow with the number of actions (a debug build's single frame
/// for every arm overflowed a worker thread's stack).
fn arm<F: Future<Output = ApiResult<Value>>>(f: F) -> std::pin::Pin<Box<F>> {
    Box::pin(f)
}

/// Answers `action` with `input` for `who`.
pub async fn dispatch(e: &Endpoint, who: &Who, action: &str, input: &Input) -> ApiResult<Value> {
    let i = input;
    Ok(match action {
        "CreateCluster" => {
            arm(async {
                let req = pb::CreateClusterRequest {
                    cluster_json: document(i, &[]),
                };
                let r = e
                    .guarded(who, req, async |a, r| a.create_cluster(r).await)
                    .await?;
                Ok(json!({"cluster": doc(&r.cluster_json)}))
            })
            .await?
        }
        "DescribeClusters" => {
            arm(async {
                let req = pb::DescribeClustersRequest {
                    clusters: texts(i, "clusters")?,
                    include: texts(i, "include")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.describe_clusters(r).await)
                    .await?;
                Ok(described("clusters", &r))
            })
            .await?
        }
        "ListClusters" => {
            arm(async {
                let req = pb::ListClustersRequest {
                    max_results: max_results(i)?,
                    next_token: text(i, "nextToken")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_clusters(r).await)
                    .await?;
                Ok(listed("clusterArns", r))
            })
            .await?
        }
        "DeleteCluster" => {
            arm(async {
                let req = pb::DeleteClusterRequest {
                    cluster: text(i, "cluster")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.delete_cluster(r).await)
                    .await?;
                Ok(json!({"cluster": doc(&r.cluster_json)}))
            })
            .await?
        }
        "PutClusterCapacityProviders" => {
            arm(async {
                let strategy = i
                    .get("defaultCapacityProviderStrategy")
                    .map(Value::to_string)
                    .unwrap_or_default();
                let req = pb::PutClusterCapacityProvidersRequest {
                    cluster: text(i, "cluster")?,
                    capacity_providers: texts(i, "capacityProviders")?,
                    default_capacity_provider_strategy_json: strategy,
                };
                let r = e
                    .guarded(who, req, async |a, r| {
                        a.put_cluster_capacity_providers(r).await
                    })
                    .await?;
                Ok(json!({"cluster": doc(&r.cluster_json)}))
            })
            .await?
        }
        "RegisterTaskDefinition" => {
            arm(async {
                let req = pb::RegisterTaskDefinitionRequest {
                    task_definition_json: document(i, &[]),
                };
                let r = e
                    .guarded(who, req, async |a, r| a.register_task_definition(r).await)
                    .await?;
                let tags = i.get("tags").cloned().unwrap_or_else(|| json!([]));
                Ok(json!({"taskDefinition": doc(&r.task_definition_json), "tags": tags}))
            })
            .await?
        }
        "DescribeTaskDefinition" => {
            arm(async {
                let req = pb::DescribeTaskDefinitionRequest {
                    task_definition: text(i, "taskDefinition")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.describe_task_definition(r).await)
                    .await?;
                let td = doc(&r.task_definition_json);
                let tags = td.get("tags").cloned().unwrap_or_else(|| json!([]));
                Ok(json!({"taskDefinition": td, "tags": tags}))
            })
            .await?
        }
        "ListTaskDefinitions" => {
            arm(async {
                let req = pb::ListTaskDefinitionsRequest {
                    family_prefix: text(i, "familyPrefix")?,
                    status: text(i, "status")?,
                    sort: text(i, "sort")?,
                    max_results: max_results(i)?,
                    next_token: text(i, "nextToken")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_task_definitions(r).await)
                    .await?;
                Ok(listed("taskDefinitionArns", r))
            })
            .await?
        }
        "ListTaskDefinitionFamilies" => {
            arm(async {
                let req = pb::ListTaskDefinitionFamiliesRequest {
                    family_prefix: text(i, "familyPrefix")?,
                    status: text(i, "status")?,
                    max_results: max_results(i)?,
                    next_token: text(i, "nextToken")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| {
                        a.list_task_definition_families(r).await
                    })
                    .await?;
                Ok(listed("families", r))
            })
            .await?
        }
        "DeregisterTaskDefinition" => {
            arm(async {
                let req = pb::DeregisterTaskDefinitionRequest {
                    task_definition: text(i, "taskDefinition")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.deregister_task_definition(r).await)
                    .await?;
                Ok(json!({"taskDefinition": doc(&r.task_definition_json)}))
            })
            .await?
        }
        "CreateService" => {
            arm(async {
                let req = pb::CreateServiceRequest {
                    cluster: text(i, "cluster")?,
                    service_json: document(i, &["cluster"]),
                };
                let r = e
                    .guarded(who, req, async |a, r| a.create_service(r).await)
                    .await?;
                Ok(json!({"service": ecs_service(doc(&r.service_json))}))
            })
            .await?
        }
        "UpdateService" => {
            arm(async {
                let req = pb::UpdateServiceRequest {
                    cluster: text(i, "cluster")?,
                    service: text(i, "service")?,
                    service_json: document(i, &["cluster", "service"]),
                };
                let r = e
                    .guarded(who, req, async |a, r| a.update_service(r).await)
                    .await?;
                Ok(json!({"service": ecs_service(doc(&r.service_json))}))
            })
            .await?
        }
        "DescribeServices" => {
            arm(async {
                let req = pb::DescribeServicesRequest {
                    cluster: text(i, "cluster")?,
                    services: texts(i, "services")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.describe_services(r).await)
                    .await?;
                let mut out = described("services", &r);
                if let Some(Value::Array(services)) = out.get_mut("services") {
                    for s in services.iter_mut() {
                        *s = ecs_service(s.take());
                    }
                }
                Ok(out)
            })
            .await?
        }
        "ListServices" => {
            arm(async {
                let req = pb::ListServicesRequest {
                    cluster: text(i, "cluster")?,
                    max_results: max_results(i)?,
                    next_token: text(i, "nextToken")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_services(r).await)
                    .await?;
                Ok(listed("serviceArns", r))
            })
            .await?
        }
        "DeleteService" => {
            arm(async {
                let req = pb::DeleteServiceRequest {
                    cluster: text(i, "cluster")?,
                    service: text(i, "service")?,
                    force: flag(i, "force")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.delete_service(r).await)
                    .await?;
                Ok(json!({"service": ecs_service(doc(&r.service_json))}))
            })
            .await?
        }
        "ListServiceDeployments"
        | "DescribeServiceDeployments"
        | "DescribeServiceRevisions"
        | "ContinueServiceDeployment"
        | "StopServiceDeployment" => {
            arm(super::deployment_actions::dispatch(e, who, action, i)).await?
        }
        "RunTask" => {
            arm(async {
                let req = pb::RunTaskRequest {
                    cluster: text(i, "cluster")?,
                    run_task_json: document(i, &[]),
                };
                let r = e
                    .guarded(who, req, async |a, r| a.run_task(r).await)
                    .await?;
                Ok(described("tasks", &r))
            })
            .await?
        }
        "StartTask" => {
            arm(async {
                let overrides = i.get("overrides").map(Value::to_string).unwrap_or_default();
                let req = pb::StartTaskRequest {
                    cluster: text(i, "cluster")?,
                    task_definition: text(i, "taskDefinition")?,
                    container_instances: texts(i, "containerInstances")?,
                    started_by: text(i, "startedBy")?,
                    group: text(i, "group")?,
                    overrides_json: overrides,
                    enable_execute_command: flag(i, "enableExecuteCommand")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.start_task(r).await)
                    .await?;
                Ok(described("tasks", &r))
            })
            .await?
        }
        "StopTask" => {
            arm(async {
                let req = pb::StopTaskRequest {
                    cluster: text(i, "cluster")?,
                    task: text(i, "task")?,
                    reason: text(i, "reason")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.stop_task(r).await)
                    .await?;
                Ok(json!({"task": doc(&r.task_json)}))
            })
            .await?
        }
        "DescribeTasks" => {
            arm(async {
                let req = pb::DescribeTasksRequest {
                    cluster: text(i, "cluster")?,
                    tasks: texts(i, "tasks")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.describe_tasks(r).await)
                    .await?;
                Ok(described("tasks", &r))
            })
            .await?
        }
        "ListTasks" => {
            arm(async {
                let req = pb::ListTasksRequest {
                    cluster: text(i, "cluster")?,
                    family: text(i, "family")?,
                    service_name: text(i, "serviceName")?,
                    desired_status: text(i, "desiredStatus")?,
                    container_instance: text(i, "containerInstance")?,
                    started_by: text(i, "startedBy")?,
                    max_results: max_results(i)?,
                    next_token: text(i, "nextToken")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_tasks(r).await)
                    .await?;
                Ok(listed("taskArns", r))
            })
            .await?
        }
        "PutAccountSetting" | "PutAccountSettingDefault" => {
            arm(async {
                whole_account(i)?;
                let req = pb::PutAccountSettingRequest {
                    name: text(i, "name")?,
                    value: text(i, "value")?,
                    account_default: action == "PutAccountSettingDefault",
                };
                let r = e
                    .guarded(who, req, async |a, r| a.put_account_setting(r).await)
                    .await?;
                Ok(json!({"setting": doc(&r.json)}))
            })
            .await?
        }
        "DeleteAccountSetting" => {
            arm(async {
                whole_account(i)?;
                let req = pb::DeleteAccountSettingRequest {
                    name: text(i, "name")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.delete_account_setting(r).await)
                    .await?;
                Ok(json!({"setting": doc(&r.json)}))
            })
            .await?
        }
        "ListAccountSettings" => {
            arm(async {
                whole_account(i)?;
                let req = pb::ListAccountSettingsRequest {
                    name: text(i, "name")?,
                    value: text(i, "value")?,
                    effective_settings: flag(i, "effectiveSettings")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_account_settings(r).await)
                    .await?;
                Ok(json!({"settings": items(&r)}))
            })
            .await?
        }
        "UpdateTaskProtection" => {
            arm(async {
                let minutes = match i.get("expiresInMinutes") {
                    None | Some(Value::Null) => 0,
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            ApiError::invalid(format!(
                                "expiresInMinutes must be between 1 and 2880, got {n}"
                            ))
                        })?,
                    Some(other) => return Err(wrong_type("expiresInMinutes", "an integer", other)),
                };
                if !i.contains_key("protectionEnabled") {
                    return Err(ApiError::invalid(
                        "protectionEnabled is required: true to protect the tasks, false to stop",
                    ));
                }
                let req = pb::UpdateTaskProtectionRequest {
                    cluster: text(i, "cluster")?,
                    tasks: texts(i, "tasks")?,
                    protection_enabled: flag(i, "protectionEnabled")?,
                    expires_in_minutes: minutes,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.update_task_protection(r).await)
                    .await?;
                Ok(described("protectedTasks", &r))
            })
            .await?
        }
        "GetTaskProtection" => {
            arm(async {
                let req = pb::GetTaskProtectionRequest {
                    cluster: text(i, "cluster")?,
                    tasks: texts(i, "tasks")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.get_task_protection(r).await)
                    .await?;
                Ok(described("protectedTasks", &r))
            })
            .await?
        }
        "ListContainerInstances" => {
            arm(async {
                let req = pb::ListContainerInstancesRequest {
                    cluster: text(i, "cluster")?,
                    status: text(i, "status")?,
                    filter: text(i, "filter")?,
                    max_results: max_results(i)?,
                    next_token: text(i, "nextToken")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_container_instances(r).await)
                    .await?;
                Ok(listed("containerInstanceArns", r))
            })
            .await?
        }
        "DescribeContainerInstances" => {
            arm(async {
                let req = pb::DescribeContainerInstancesRequest {
                    cluster: text(i, "cluster")?,
                    container_instances: texts(i, "containerInstances")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| {
                        a.describe_container_instances(r).await
                    })
                    .await?;
                Ok(described("containerInstances", &r))
            })
            .await?
        }
        "UpdateContainerInstancesState" => {
            arm(async {
                let req = pb::UpdateContainerInstancesStateRequest {
                    cluster: text(i, "cluster")?,
                    container_instances: texts(i, "containerInstances")?,
                    status: text(i, "status")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| {
                        a.update_container_instances_state(r).await
                    })
                    .await?;
                Ok(described("containerInstances", &r))
            })
            .await?
        }
        "CreateCapacityProvider" => {
            arm(async {
                let req = pb::CreateCapacityProviderRequest {
                    capacity_provider_json: document(i, &[]),
                };
                let r = e
                    .guarded(who, req, async |a, r| a.create_capacity_provider(r).await)
                    .await?;
                Ok(json!({"capacityProvider": capacity_provider(doc(&r.json))}))
            })
            .await?
        }
        "DescribeCapacityProviders" => {
            arm(async {
                let req = pb::DescribeByNameRequest {
                    names: texts(i, "capacityProviders")?,
                };
                let ask = authz::describe_by_name(
                    "ecs:DescribeCapacityProviders",
                    "capacity-provider",
                    &req,
                );
                let r = e
                    .guarded_ask(who, ask, req, async |a, r| {
                        a.describe_capacity_providers(r).await
                    })
                    .await?;
                let mut out = described("capacityProviders", &r);
                if let Some(Value::Array(items)) = out.get_mut("capacityProviders") {
                    for item in items.iter_mut() {
                        *item = capacity_provider(item.take());
                    }
                }
                Ok(out)
            })
            .await?
        }
        "UpdateCapacityProvider" => {
            arm(async {
                // ECS's autoScalingGroupProvider is Capstan's nodeGroupProvider; either is taken.
                let update = match (
                    i.get("autoScalingGroupProvider"),
                    i.get("nodeGroupProvider"),
                ) {
                    (Some(_), Some(_)) => {
                        return Err(ApiError::invalid(
                            "give autoScalingGroupProvider or nodeGroupProvider, not both",
                        ));
                    }
                    (Some(v), None) | (None, Some(v)) => v.to_string(),
                    (None, None) => {
                        return Err(ApiError::invalid("autoScalingGroupProvider is required"));
                    }
                };
                let req = pb::UpdateCapacityProviderRequest {
                    capacity_provider: text(i, "name")?,
                    node_group_provider_json: update,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.update_capacity_provider(r).await)
                    .await?;
                Ok(json!({"capacityProvider": capacity_provider(doc(&r.json))}))
            })
            .await?
        }
        "DeleteCapacityProvider" => {
            arm(async {
                let req = pb::DeleteCapacityProviderRequest {
                    capacity_provider: text(i, "capacityProvider")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.delete_capacity_provider(r).await)
                    .await?;
                Ok(json!({"capacityProvider": capacity_provider(doc(&r.json))}))
            })
            .await?
        }
        "TagResource" => {
            arm(async {
                let tags = i.get("tags").cloned().unwrap_or_else(|| json!([]));
                let req = pb::TagResourceRequest {
                    resource_arn: text(i, "resourceArn")?,
                    tags_json: tags.to_string(),
                };
                e.guarded(who, req, async |a, r| a.tag_resource(r).await)
                    .await?;
                Ok(json!({}))
            })
            .await?
        }
        "UntagResource" => {
            arm(async {
                let req = pb::UntagResourceRequest {
                    resource_arn: text(i, "resourceArn")?,
                    tag_keys: texts(i, "tagKeys")?,
                };
                e.guarded(who, req, async |a, r| a.untag_resource(r).await)
                    .await?;
                Ok(json!({}))
            })
            .await?
        }
        "ListTagsForResource" => {
            arm(async {
                let req = pb::ListTagsForResourceRequest {
                    resource_arn: text(i, "resourceArn")?,
                };
                let r = e
                    .guarded(who, req, async |a, r| a.list_tags_for_resource(r).await)
                    .await?;
                Ok(json!({"tags": doc(&r.tags_json)}))
            })
            .await?
        }
        other => {
            return Err(ApiError::new(
                Exception::UnknownOperation,
                format!(
                    "Capstan's ECS endpoint does not serve {other}; see docs/ecs-api.md for the actions it does"
                ),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> Input {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn fields_of_the_wrong_type_are_the_callers_error() {
        let i = input(json!({"cluster": 3, "tasks": ["a", 1], "maxResults": 0, "force": "yes"}));
        assert_eq!(
            text(&i, "cluster").map_err(|e| e.exception),
            Err(Exception::Serialization)
        );
        assert_eq!(
            texts(&i, "tasks").map_err(|e| e.exception),
            Err(Exception::Serialization)
        );
        assert_eq!(
            max_results(&i).map_err(|e| e.exception),
            Err(Exception::InvalidParameter)
        );
        assert_eq!(
            flag(&i, "force").map_err(|e| e.exception),
            Err(Exception::Serialization)
        );
        assert_eq!(text(&i, "absent").ok(), Some(String::new()));
    }

    #[test]
    fn capacity_providers_carry_their_managed_settings_as_ecs_names_them() {
        let cp = capacity_provider(json!({"name": "spot", "nodeGroupProvider": {
            "endpoint": "e", "groupId": "g", "managedDraining": "ENABLED",
            "managedScaling": {"status": "ENABLED", "targetCapacity": 80}}}));
        assert_eq!(
            cp["autoScalingGroupProvider"],
            json!({"managedDraining": "ENABLED",
                "managedScaling": {"status": "ENABLED", "targetCapacity": 80}})
        );
        assert_eq!(cp["status"], "ACTIVE");
        assert!(
            cp["capacityProviderArn"]
                .as_str()
                .is_some_and(|a| a.ends_with(":capacity-provider/spot")),
            "{cp}"
        );
        let gone = capacity_provider(json!({"name": "spot", "status": "INACTIVE"}));
        assert_eq!(gone["status"], "INACTIVE");
    }

    #[test]
    fn the_last_page_carries_no_token() {
        let last = listed(
            "clusterArns",
            pb::ListResponse {
                arns: vec!["a".into()],
                next_token: String::new(),
            },
        );
        assert_eq!(last, json!({"clusterArns": ["a"]}));
        let more = listed(
            "clusterArns",
            pb::ListResponse {
                arns: vec!["a".into()],
                next_token: "a".into(),
            },
        );
        assert_eq!(more["nextToken"], "a");
    }

    #[test]
    fn services_name_task_definitions_by_arn() {
        let s = ecs_service(json!({
            "taskDefinition": "web:2",
            "deployments": [{"taskDefinition": "web:2"}, {"taskDefinition": "arn:x"}]
        }));
        assert_eq!(
            s["taskDefinition"],
            "arn:capstan:ecs:local:000000000000:task-definition/web:2"
        );
        assert_eq!(s["deployments"][0]["taskDefinition"], s["taskDefinition"]);
        assert_eq!(s["deployments"][1]["taskDefinition"], "arn:x");
    }

    #[test]
    fn documents_leave_out_what_travels_apart() {
        let i = input(json!({"cluster": "c", "service": "s", "desiredCount": 2}));
        assert_eq!(
            doc(&document(&i, &["cluster", "service"])),
            json!({"desiredCount": 2})
        );
    }
}

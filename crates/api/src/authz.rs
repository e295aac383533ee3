//! What each request asks to do: its IAM action, the ARNs of the resources it concerns, and
//! whether it changes anything (what the audit log records). One table, in one place; the
//! decision itself is `capstan_iam::Directory::authorize`.
//!
//! Resources follow ECS's ARNs (`arn:capstan:ecs:local:000000000000:service/<cluster>/<name>`,
//! `task/<cluster>/<id>`, `container-instance/<cluster>/<id>`, `cluster/<name>`,
//! `capacity-provider/<name>`, `targetgroup/<name>`, `listener/<name>`). Task definitions are
//! authorized by family, `task-definition/<family>` (a revision is not a separate grant).
//! Actions over a cluster's contents as a whole (ListServices, ListTasks,
//! ListContainerInstances) name the cluster; ListClusters and the task-definition lists name
//! `*`, as ECS does; a Describe of every object of a kind names `<kind>/*`. RunTask and
//! StartTask need the action on both the cluster and the task definition's family.

use capstan_iam::{IAM_ARN_PREFIX, Principal};
use capstan_proto::api::v1 as pb;
use serde_json::Value;

use crate::actions::cluster_name;
use crate::shape::{arn, name_of};

/// One request's action and resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// IAM action, e.g. `ecs:CreateService`.
    pub action: &'static str,
    /// ARNs it concerns; each must be allowed.
    pub resources: Vec<String>,
    /// Whether it writes (audited even when it succeeds).
    pub mutates: bool,
}

/// A request that can say what it asks to do.
pub trait Guarded {
    /// Its action and resources.
    fn ask(&self) -> Ask;
}

fn read(action: &'static str, resources: Vec<String>) -> Ask {
    Ask {
        action,
        resources,
        mutates: false,
    }
}

fn write(action: &'static str, resources: Vec<String>) -> Ask {
    Ask {
        action,
        resources,
        mutates: true,
    }
}

fn cluster(c: &str) -> String {
    arn(&format!("cluster/{}", cluster_name(c)))
}

fn in_cluster(kind: &str, c: &str, name: &str) -> String {
    arn(&format!("{kind}/{}/{}", cluster_name(c), name_of(name)))
}

/// `task-definition/<family>` for `family`, `family:rev` or an ARN.
fn task_definition(reference: &str) -> String {
    let last = name_of(reference);
    let family = last.split(':').next().unwrap_or(last);
    arn(&format!("task-definition/{family}"))
}

fn json_field(json: &str, field: &str) -> String {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.get(field).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// The request's cluster, or else the document's (the action refuses when they differ).
fn cluster_of(request: &str, json: &str) -> String {
    if request.is_empty() {
        json_field(json, "cluster")
    } else {
        request.to_string()
    }
}

fn each(kind: &str, names: &[String], all: &str) -> Vec<String> {
    if names.is_empty() {
        vec![arn(&format!("{kind}/{all}"))]
    } else {
        names
            .iter()
            .map(|n| arn(&format!("{kind}/{}", name_of(n))))
            .collect()
    }
}

fn iam_arn(resource: &str) -> String {
    format!("{IAM_ARN_PREFIX}{resource}")
}

macro_rules! guarded {
    ($($req:ty => |$r:ident| $body:expr;)*) => {
        $(impl Guarded for $req {
            fn ask(&self) -> Ask {
                let $r = self;
                $body
            }
        })*
    };
}

guarded! {
    pb::RegisterTaskDefinitionRequest => |r| write("ecs:RegisterTaskDefinition",
        vec![task_definition(&json_field(&r.task_definition_json, "family"))]);
    pb::DescribeTaskDefinitionRequest => |r| read("ecs:DescribeTaskDefinition",
        vec![task_definition(&r.task_definition)]);
    pb::ListTaskDefinitionsRequest => |_r| read("ecs:ListTaskDefinitions", vec!["*".into()]);
    pb::ListTaskDefinitionFamiliesRequest => |_r| read("ecs:ListTaskDefinitionFamilies", vec!["*".into()]);
    pb::DeregisterTaskDefinitionRequest => |r| write("ecs:DeregisterTaskDefinition",
        vec![task_definition(&r.task_definition)]);
    pb::CreateClusterRequest => |r| write("ecs:CreateCluster",
        vec![cluster(&json_field(&r.cluster_json, "clusterName"))]);
    pb::DescribeClustersRequest => |r| read("ecs:DescribeClusters",
        if r.clusters.is_empty() { vec![cluster("")] } else { r.clusters.iter().map(|c| cluster(c)).collect() });
    pb::ListClustersRequest => |_r| read("ecs:ListClusters", vec!["*".into()]);
    pb::DeleteClusterRequest => |r| write("ecs:DeleteCluster", vec![cluster(&r.cluster)]);
    pb::PutClusterCapacityProvidersRequest => |r| write("ecs:PutClusterCapacityProviders",
        vec![cluster(&r.cluster)]);
    pb::CreateServiceRequest => |r| write("ecs:CreateService", vec![in_cluster("service",
        &cluster_of(&r.cluster, &r.service_json), &json_field(&r.service_json, "serviceName"))]);
    pb::UpdateServiceRequest => |r| write("ecs:UpdateService",
        vec![in_cluster("service", &r.cluster, &r.service)]);
    pb::DescribeServicesRequest => |r| read("ecs:DescribeServices",
        r.services.iter().map(|s| in_cluster("service", &r.cluster, s)).collect());
    pb::ListServicesRequest => |r| read("ecs:ListServices", vec![cluster(&r.cluster)]);
    pb::DeleteServiceRequest => |r| write("ecs:DeleteService",
        vec![in_cluster("service", &r.cluster, &r.service)]);
    pb::ListServiceDeploymentsRequest => |r| read("ecs:ListServiceDeployments",
        vec![in_cluster("service", &r.cluster, &r.service)]);
    pb::ContinueServiceDeploymentRequest => |r| write("ecs:ContinueServiceDeployment",
        vec![in_cluster("service", &r.cluster, &r.service)]);
    pb::StopServiceDeploymentRequest => |r| write("ecs:StopServiceDeployment",
        vec![in_cluster("service", &r.cluster, &r.service)]);
    pb::WatchServiceRequest => |r| read("ecs:DescribeServices",
        vec![in_cluster("service", &r.cluster, &r.service)]);
    pb::RunTaskRequest => |r| write("ecs:RunTask", vec![
        cluster(&cluster_of(&r.cluster, &r.run_task_json)),
        task_definition(&json_field(&r.run_task_json, "taskDefinition")),
    ]);
    pb::StartTaskRequest => |r| write("ecs:StartTask",
        vec![cluster(&r.cluster), task_definition(&r.task_definition)]);
    pb::StopTaskRequest => |r| write("ecs:StopTask", vec![in_cluster("task", &r.cluster, &r.task)]);
    pb::DescribeTasksRequest => |r| read("ecs:DescribeTasks",
        r.tasks.iter().map(|t| in_cluster("task", &r.cluster, t)).collect());
    pb::ListTasksRequest => |r| read("ecs:ListTasks", vec![cluster(&r.cluster)]);
    pb::PutAccountSettingRequest => |r| write(
        if r.account_default { "ecs:PutAccountSettingDefault" } else { "ecs:PutAccountSetting" },
        vec!["*".into()]);
    pb::DeleteAccountSettingRequest => |_r| write("ecs:DeleteAccountSetting", vec!["*".into()]);
    pb::ListAccountSettingsRequest => |_r| read("ecs:ListAccountSettings", vec!["*".into()]);
    pb::UpdateTaskProtectionRequest => |r| write("ecs:UpdateTaskProtection",
        r.tasks.iter().map(|t| in_cluster("task", &r.cluster, t)).collect());
    pb::GetTaskProtectionRequest => |r| read("ecs:GetTaskProtection",
        if r.tasks.is_empty() { vec![in_cluster("task", &r.cluster, "*")] }
        else { r.tasks.iter().map(|t| in_cluster("task", &r.cluster, t)).collect() });
    pb::PutSecretRequest => |r| write("secretsmanager:PutSecretValue", vec![arn(&format!("secret/{}", r.name))]);
    pb::GetSecretValueRequest => |r| read("secretsmanager:GetSecretValue", vec![arn(&format!("secret/{}", r.name))]);
    pb::ListSecretsRequest => |_r| read("secretsmanager:ListSecrets", vec![arn("secret/*")]);
    pb::DeleteSecretRequest => |r| write("secretsmanager:DeleteSecret", vec![arn(&format!("secret/{}", r.name))]);
    pb::GetTaskLogsRequest => |r| read("logs:GetLogEvents", vec![in_cluster("task", &r.cluster, &r.task)]);
    pb::ExecuteCommandStart => |r| write("ecs:ExecuteCommand", vec![in_cluster("task", &r.cluster, &r.task)]);
    pb::ListContainerInstancesRequest => |r| read("ecs:ListContainerInstances", vec![cluster(&r.cluster)]);
    pb::DescribeContainerInstancesRequest => |r| read("ecs:DescribeContainerInstances",
        r.container_instances.iter().map(|i| in_cluster("container-instance", &r.cluster, i)).collect());
    pb::UpdateContainerInstancesStateRequest => |r| write("ecs:UpdateContainerInstancesState",
        r.container_instances.iter().map(|i| in_cluster("container-instance", &r.cluster, i)).collect());
    pb::CreateCapacityProviderRequest => |r| write("ecs:CreateCapacityProvider",
        vec![arn(&format!("capacity-provider/{}", json_field(&r.capacity_provider_json, "name")))]);
    pb::UpdateCapacityProviderRequest => |r| write("ecs:UpdateCapacityProvider",
        vec![arn(&format!("capacity-provider/{}", name_of(&r.capacity_provider)))]);
    pb::DeleteCapacityProviderRequest => |r| write("ecs:DeleteCapacityProvider",
        vec![arn(&format!("capacity-provider/{}", name_of(&r.capacity_provider)))]);
    pb::CreateTargetGroupRequest => |r| write("elasticloadbalancing:CreateTargetGroup",
        vec![arn(&format!("targetgroup/{}", if r.name.is_empty() { json_field(&r.target_group_json, "targetGroupName") } else { r.name.clone() }))]);
    pb::DescribeTargetHealthRequest => |r| read("elasticloadbalancing:DescribeTargetHealth",
        vec![arn(&format!("targetgroup/{}", name_of(&r.target_group)))]);
    pb::CreateListenerRequest => |r| write("elasticloadbalancing:CreateListener",
        vec![arn(&format!("listener/{}", if r.name.is_empty() { json_field(&r.listener_json, "listenerName") } else { r.name.clone() }))]);
    pb::TagResourceRequest => |r| write("ecs:TagResource", vec![r.resource_arn.clone()]);
    pb::UntagResourceRequest => |r| write("ecs:UntagResource", vec![r.resource_arn.clone()]);
    pb::ListTagsForResourceRequest => |r| read("ecs:ListTagsForResource", vec![r.resource_arn.clone()]);
    pb::BootstrapRequest => |_r| write("capstan:Bootstrap", vec![iam_arn("policy/AdministratorAccess")]);
    pb::WhoAmIRequest => |_r| read("capstan:WhoAmI", vec!["*".into()]);
    pb::CreateTokenRequest => |r| write("capstan:CreateToken", vec![principal_arn(&r.principal)]);
    pb::ListTokensRequest => |_r| read("capstan:ListTokens", vec![iam_arn("token/*")]);
    pb::RevokeTokenRequest => |r| write("capstan:RevokeToken", vec![iam_arn(&format!("token/{}", r.token_id))]);
    pb::CreateAccessKeyRequest => |r| write("capstan:CreateAccessKey", vec![principal_arn(&r.principal)]);
    pb::ListAccessKeysRequest => |_r| read("capstan:ListAccessKeys", vec![iam_arn("access-key/*")]);
    pb::DeleteAccessKeyRequest => |r| write("capstan:DeleteAccessKey", vec![iam_arn(&format!("access-key/{}", r.access_key_id))]);
    pb::PutIamDocumentRequest => |r| write(iam_action("Put", &r.kind), vec![iam_doc_arn(&r.kind, &r.name)]);
    pb::IamDocumentRequest => |r| read(iam_action("Get", &r.kind), vec![iam_doc_arn(&r.kind, &r.name)]);
    pb::ListIamDocumentsRequest => |r| read(iam_action("List", &r.kind), vec![iam_doc_arn(&r.kind, "*")]);
}

/// DescribeCapacityProviders, DescribeTargetGroups and DescribeListeners share one request
/// type, so their asks are built here.
pub fn describe_by_name(action: &'static str, kind: &str, r: &pb::DescribeByNameRequest) -> Ask {
    read(action, each(kind, &r.names, "*"))
}

/// DeleteDocument shares its request with GetDocument.
pub fn delete_document(r: &pb::IamDocumentRequest) -> Ask {
    write(
        iam_action("Delete", &r.kind),
        vec![iam_doc_arn(&r.kind, &r.name)],
    )
}

fn principal_arn(uri: &str) -> String {
    match Principal::parse(uri) {
        Ok(p) => p.arn(),
        Err(_) => iam_arn("principal/"),
    }
}

/// `capstan:<verb>Policy|Group|Principal`; an unknown kind gets an action no policy names.
fn iam_action(verb: &str, kind: &str) -> &'static str {
    match (verb, kind) {
        ("Put", "policy") => "capstan:PutPolicy",
        ("Get", "policy") => "capstan:GetPolicy",
        ("List", "policy") => "capstan:ListPolicies",
        ("Delete", "policy") => "capstan:DeletePolicy",
        ("Put", "group") => "capstan:PutGroup",
        ("Get", "group") => "capstan:GetGroup",
        ("List", "group") => "capstan:ListGroups",
        ("Delete", "group") => "capstan:DeleteGroup",
        ("Put", "principal") => "capstan:PutPrincipal",
        ("Get", "principal") => "capstan:GetPrincipal",
        ("List", "principal") => "capstan:ListPrincipals",
        ("Delete", "principal") => "capstan:DeletePrincipal",
        _ => "capstan:UnknownIamKind",
    }
}

fn iam_doc_arn(kind: &str, name: &str) -> String {
    match kind {
        "principal" if name == "*" => iam_arn("principal/*"),
        "principal" => principal_arn(name),
        _ => iam_arn(&format!("{kind}/{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "arn:capstan:ecs:local:000000000000:";

    #[test]
    fn each_request_names_its_action_and_resources() {
        let create = pb::CreateServiceRequest {
            cluster: String::new(),
            service_json: r#"{"serviceName":"web","cluster":"prod"}"#.into(),
        };
        assert_eq!(
            create.ask(),
            write("ecs:CreateService", vec![format!("{P}service/prod/web")])
        );
        let run = pb::RunTaskRequest {
            cluster: "arn:capstan:ecs:local:000000000000:cluster/batch".into(),
            run_task_json: r#"{"taskDefinition":"job:3"}"#.into(),
        };
        assert_eq!(
            run.ask().resources,
            vec![
                format!("{P}cluster/batch"),
                format!("{P}task-definition/job")
            ]
        );
        let stop = pb::StopTaskRequest {
            cluster: String::new(),
            task: format!("{P}task/default/abc"),
            reason: String::new(),
        };
        assert_eq!(stop.ask().resources, vec![format!("{P}task/default/abc")]);
        let describe = pb::DescribeClustersRequest::default();
        assert_eq!(
            describe.ask(),
            read("ecs:DescribeClusters", vec![format!("{P}cluster/default")])
        );
        let all = pb::DescribeByNameRequest { names: vec![] };
        assert_eq!(
            describe_by_name(
                "elasticloadbalancing:DescribeTargetGroups",
                "targetgroup",
                &all
            )
            .resources,
            vec![format!("{P}targetgroup/*")]
        );
        let td = pb::DescribeTaskDefinitionRequest {
            task_definition: format!("{P}task-definition/web:7"),
        };
        assert_eq!(td.ask().resources, vec![format!("{P}task-definition/web")]);
    }

    #[test]
    fn iam_requests_name_iam_resources() {
        let put = pb::PutIamDocumentRequest {
            kind: "principal".into(),
            name: "capstan://user/alice".into(),
            document_json: "{}".into(),
        };
        assert_eq!(
            put.ask(),
            write(
                "capstan:PutPrincipal",
                vec!["arn:capstan:iam::000000000000:principal/user/alice".into()]
            )
        );
        let bad = pb::IamDocumentRequest {
            kind: "role".into(),
            name: "x".into(),
        };
        assert_eq!(delete_document(&bad).action, "capstan:UnknownIamKind");
    }
}

//! ECS's service-deployment actions on the wire: ListServiceDeployments,
//! DescribeServiceDeployments, DescribeServiceRevisions, ContinueServiceDeployment and
//! StopServiceDeployment. They read a service's deployments through the gRPC API's
//! ListServiceDeployments (so its check applies) and answer in the shapes of
//! [`super::deployments`].

use std::collections::BTreeMap;

use capstan_core::deployment::Deployment;
use capstan_proto::api::v1 as pb;
use serde_json::{Value, json};

use super::actions::{Input, max_results, text, texts, wrong_type};
use super::deployments::{self as shape, Kind};
use super::{Endpoint, Who};
use crate::error::{ApiError, ApiResult, Exception};

/// Most ARNs one Describe call takes (ECS's limit).
const MAX_DESCRIBE: usize = 20;

/// ListServiceDeployments' default page size (ECS's).
const DEFAULT_PAGE: usize = 20;

/// The ECS statuses a filter may name.
const STATUSES: [&str; 9] = [
    "PENDING",
    "SUCCESSFUL",
    "STOPPED",
    "STOP_REQUESTED",
    "IN_PROGRESS",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
];

/// The cluster a request names: `cluster`, else the one in a service ARN, else default.
fn cluster_for(cluster: &str, service: &str) -> String {
    if !cluster.is_empty() {
        return cluster.to_string();
    }
    service
        .split_once(":service/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default()
}

/// Every deployment of `cluster`/`service`, read under ListServiceDeployments' check.
async fn deployments(
    e: &Endpoint,
    who: &Who,
    cluster: &str,
    service: &str,
) -> ApiResult<Vec<Deployment>> {
    let req = pb::ListServiceDeploymentsRequest {
        cluster: cluster.to_string(),
        service: service.to_string(),
        status: vec![],
    };
    let r = e
        .guarded(who, req, async |a, r| a.list_service_deployments(r).await)
        .await?;
    r.items_json
        .iter()
        .map(|j| {
            serde_json::from_str::<Deployment>(j)
                .map_err(|err| ApiError::new(Exception::Server, format!("a deployment: {err}")))
        })
        .collect()
}

/// A `{before, after}` bound in epoch seconds.
fn bound(range: &Value, name: &str) -> ApiResult<Option<f64>> {
    match range.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(wrong_type(
            &format!("createdAt.{name}"),
            "a timestamp",
            other,
        )),
    }
}

async fn list(e: &Endpoint, who: &Who, i: &Input) -> ApiResult<Value> {
    let service = text(i, "service")?;
    if service.is_empty() {
        return Err(ApiError::invalid("service is required"));
    }
    let cluster = cluster_for(&text(i, "cluster")?, &service);
    let statuses = texts(i, "status")?;
    if let Some(bad) = statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
        return Err(ApiError::invalid(format!(
            "status must be one of {}, got {bad:?}",
            STATUSES.join(", ")
        )));
    }
    let range = i.get("createdAt").cloned().unwrap_or(Value::Null);
    let (before, after) = (bound(&range, "before")?, bound(&range, "after")?);
    let page = match max_results(i)? {
        0 => DEFAULT_PAGE,
        n if n <= 100 => n as usize,
        n => {
            return Err(ApiError::invalid(format!(
                "maxResults must be between 1 and 100, got {n}"
            )));
        }
    };
    let all = deployments(e, who, &cluster, &service).await?;
    let cluster = if cluster.is_empty() {
        "default".to_string()
    } else {
        cluster
    };
    let name = crate::shape::name_of(&service);
    let briefs: Vec<Value> = shape::listed(&all)
        .into_iter()
        .filter(|d| {
            let at = d.created_at.unwrap_or(0.0);
            before.is_none_or(|b| at < b) && after.is_none_or(|a| at > a)
        })
        .map(|d| shape::brief(&cluster, name, d, &all))
        .filter(|b| statuses.is_empty() || statuses.iter().any(|s| b["status"] == s.as_str()))
        .collect();
    let token = text(i, "nextToken")?;
    let start = if token.is_empty() {
        0
    } else {
        briefs
            .iter()
            .position(|b| b["serviceDeploymentArn"] == token.as_str())
            .map(|p| p + 1)
            .ok_or_else(|| ApiError::invalid("nextToken is not one this listing gave"))?
    };
    let shown: Vec<Value> = briefs.iter().skip(start).take(page).cloned().collect();
    let mut out = json!({ "serviceDeployments": shown });
    if briefs.len() > start + page
        && let Some(last) = shown.last()
    {
        out["nextToken"] = last["serviceDeploymentArn"].clone();
    }
    Ok(out)
}

/// DescribeServiceDeployments or DescribeServiceRevisions: the ARNs grouped by service, each
/// service read once; an ARN that names nothing is a MISSING failure.
async fn describe(e: &Endpoint, who: &Who, i: &Input, kind: Kind) -> ApiResult<Value> {
    let (field, out_field) = match kind {
        Kind::Deployment => ("serviceDeploymentArns", "serviceDeployments"),
        Kind::Revision => ("serviceRevisionArns", "serviceRevisions"),
    };
    let arns = texts(i, field)?;
    if arns.is_empty() || arns.len() > MAX_DESCRIBE {
        return Err(ApiError::invalid(format!(
            "{field} must name 1 to {MAX_DESCRIBE} ARNs, got {}",
            arns.len()
        )));
    }
    let missing = |arn: &str| json!({"arn": arn, "reason": "MISSING"});
    let mut failures = Vec::new();
    let mut by_service: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for a in &arns {
        match shape::parse(kind, a) {
            Some((c, s, id)) => by_service.entry((c, s)).or_default().push((a.clone(), id)),
            None => failures.push(missing(a)),
        }
    }
    let mut found = Vec::new();
    for ((cluster, service), wanted) in by_service {
        let all = match deployments(e, who, &cluster, &service).await {
            Ok(all) => all,
            Err(err)
                if matches!(
                    err.exception,
                    Exception::ClusterNotFound | Exception::ServiceNotFound
                ) =>
            {
                failures.extend(wanted.iter().map(|(a, _)| missing(a)));
                continue;
            }
            Err(err) => return Err(err),
        };
        for (a, id) in wanted {
            match all.iter().find(|d| d.id == id) {
                Some(d) => found.push(match kind {
                    Kind::Deployment => shape::full(&cluster, &service, d, &all),
                    Kind::Revision => shape::revision(&cluster, &service, d),
                }),
                None => failures.push(missing(&a)),
            }
        }
    }
    Ok(json!({ out_field: found, "failures": failures }))
}

/// The `(cluster, service, id)` of the required `serviceDeploymentArn`.
fn named_deployment(i: &Input) -> ApiResult<(String, String, String)> {
    let a = text(i, "serviceDeploymentArn")?;
    shape::parse(Kind::Deployment, &a).ok_or_else(|| {
        ApiError::invalid(format!(
            "serviceDeploymentArn must be a service deployment's ARN \
             (…:service-deployment/<cluster>/<service>/<id>), got {a:?}"
        ))
    })
}

/// Answers one of the service-deployment actions.
pub(super) async fn dispatch(e: &Endpoint, who: &Who, action: &str, i: &Input) -> ApiResult<Value> {
    match action {
        "ListServiceDeployments" => list(e, who, i).await,
        "DescribeServiceDeployments" => describe(e, who, i, Kind::Deployment).await,
        "DescribeServiceRevisions" => describe(e, who, i, Kind::Revision).await,
        "ContinueServiceDeployment" => {
            let (cluster, service, id) = named_deployment(i)?;
            let req = pb::ContinueServiceDeploymentRequest {
                cluster: cluster.clone(),
                service: service.clone(),
                deployment_id: id,
                action: text(i, "action")?,
                hook_id: text(i, "hookId")?,
            };
            let r = e
                .guarded(who, req, async |a, r| {
                    a.continue_service_deployment(r).await
                })
                .await?;
            let arn = shape::arn_of(Kind::Deployment, &cluster, &service, &r.deployment_id);
            Ok(json!({ "serviceDeploymentArn": arn }))
        }
        "StopServiceDeployment" => {
            let (cluster, service, id) = named_deployment(i)?;
            let req = pb::StopServiceDeploymentRequest {
                cluster: cluster.clone(),
                service: service.clone(),
                deployment_id: id,
                stop_type: text(i, "stopType")?,
            };
            let r = e
                .guarded(who, req, async |a, r| a.stop_service_deployment(r).await)
                .await?;
            let arn = shape::arn_of(Kind::Deployment, &cluster, &service, &r.deployment_id);
            Ok(json!({ "serviceDeploymentArn": arn }))
        }
        other => Err(ApiError::new(
            Exception::UnknownOperation,
            format!("{other} is not a service-deployment action"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_comes_from_the_request_or_the_service_arn() {
        assert_eq!(cluster_for("prod", "web"), "prod");
        assert_eq!(
            cluster_for("", "arn:aws:ecs:eu-west-3:1:service/blue/web"),
            "blue"
        );
        assert_eq!(cluster_for("", "web"), "");
    }
}

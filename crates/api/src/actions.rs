//! ECS's actions over the store: each validates with `capstan-core`, reads what it needs and
//! writes with compare-and-swap, so concurrent API replicas (and etcdctl users) never lose a write.

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_core::deployment::{DeploymentStatus, RolloutState};
use capstan_core::instance::InstanceStatus;
use capstan_core::keys::Family;
use capstan_core::lb::TargetGroupStatusDoc;
use capstan_core::requests::{
    ContinueDeploymentRequest, RunTaskRequest, RunTaskResult, StopTaskRequest,
};
use capstan_core::service::{PlacementConstraint, PlacementConstraintType, ServiceStatus};
use capstan_core::task::{DesiredStatus, TaskOverride};
use capstan_core::taskdef::{TaskDefinitionRef, TaskDefinitionStatus};
use capstan_core::{
    CapacityProvider, CapacityProviderStrategyItem, Cluster, ContainerInstance, Deployment, Issue,
    Keys, Listener, Service, ServiceEvent, ServiceStatusDoc, TargetGroup, Task, TaskDefinition,
    accept,
};
use capstan_proto::api::v1 as pb;
use capstan_store::{KeyValue, Store, StoreError, Write};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Exception};
use crate::shape::{TaskFilter, arn, describe_service, merge_update, name_of, page};

/// The cluster that exists without CreateCluster, as ECS creates `default` on first use.
pub const DEFAULT_CLUSTER: &str = "default";

/// Attempts of a compare-and-swap write before giving up.
const CAS_ATTEMPTS: usize = 200;

/// The API's handle on the store.
#[derive(Clone)]
pub struct Api {
    store: Store,
    run_task_timeout: Duration,
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn warnings(issues: Vec<Issue>) -> Vec<pb::Warning> {
    issues
        .into_iter()
        .map(|i| pb::Warning {
            path: i.path,
            message: i.message,
        })
        .collect()
}

fn missing(resource: String) -> pb::Failure {
    pb::Failure {
        arn: arn(&resource),
        reason: "MISSING".into(),
        detail: String::new(),
    }
}

fn cluster_or_default(c: &str) -> &str {
    if c.is_empty() {
        DEFAULT_CLUSTER
    } else {
        name_of(c)
    }
}

/// One page of names as a List response of ARNs `<resource_prefix><name>`.
fn arn_page(
    names: Vec<String>,
    max_results: i32,
    next_token: &str,
    resource_prefix: &str,
) -> ApiResult<pb::ListResponse> {
    let (shown, next_token) = page(names, max_results, next_token)?;
    Ok(pb::ListResponse {
        arns: shown
            .iter()
            .map(|n| arn(&format!("{resource_prefix}{n}")))
            .collect(),
        next_token,
    })
}

/// The name of a target group or listener: the request's, the document's (`field`), or both
/// when they agree.
fn object_name(field: &str, in_doc: Option<&str>, requested: &str) -> ApiResult<String> {
    match (in_doc, requested) {
        (Some(n), "") => Ok(n.to_string()),
        (Some(n), r) if n != r => Err(ApiError::invalid(format!(
            "{field} {n} differs from the request's name {r}"
        ))),
        (_, r) if !r.is_empty() => Ok(r.to_string()),
        _ => Err(ApiError::invalid("name is required")),
    }
}

/// Whether an UpdateService document sets `taskDefinition`.
fn names_task_definition(json: &str) -> bool {
    serde_json::from_str::<Value>(json)
        .ok()
        .is_some_and(|v| v.get("taskDefinition").is_some_and(|t| !t.is_null()))
}

fn now() -> f64 {
    capstan_runtime::events::now()
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    serde_json::from_slice(&kv.value).ok()
}

impl Api {
    /// An API over `store`; RunTask waits up to `run_task_timeout` for the scheduler.
    pub fn new(store: Store, run_task_timeout: Duration) -> Self {
        Self {
            store,
            run_task_timeout,
        }
    }

    fn keys(&self) -> &Keys {
        self.store.keys()
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> ApiResult<Option<(T, KeyValue)>> {
        Ok(self
            .store
            .get(key)
            .await?
            .and_then(|kv| decode(&kv).map(|v| (v, kv))))
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> ApiResult<Vec<(T, KeyValue)>> {
        Ok(self
            .store
            .list(prefix)
            .await?
            .kvs
            .into_iter()
            .filter_map(|kv| decode(&kv).map(|v| (v, kv)))
            .collect())
    }

    /// Fails with ClusterNotFoundException unless the cluster exists.
    async fn require_cluster(&self, cluster: &str) -> ApiResult<()> {
        if cluster == DEFAULT_CLUSTER {
            return Ok(());
        }
        match self.get::<Cluster>(&self.keys().cluster(cluster)).await? {
            Some((c, _)) if c.status.as_deref() != Some("INACTIVE") => Ok(()),
            _ => Err(ApiError::cluster_not_found(cluster)),
        }
    }

    /// The task definition a reference names (the family's latest ACTIVE revision for `family`).
    async fn resolve_task_definition(&self, reference: &str) -> ApiResult<TaskDefinition> {
        let r =
            TaskDefinitionRef::parse(reference).map_err(|e| ApiError::invalid(e.to_string()))?;
        let found = match r.revision {
            Some(rev) => self
                .get::<TaskDefinition>(&self.keys().task_definition(&r.family, rev))
                .await?
                .map(|(td, _)| td),
            None => self
                .list::<TaskDefinition>(&self.keys().list(Family::TaskDefinitions, &[&r.family]))
                .await?
                .into_iter()
                .map(|(td, _)| td)
                .filter(|td| {
                    td.status.unwrap_or(TaskDefinitionStatus::Active)
                        == TaskDefinitionStatus::Active
                })
                .max_by_key(|td| td.revision.unwrap_or(0)),
        };
        found.ok_or_else(|| {
            ApiError::new(
                Exception::Client,
                format!(
                    "Unable to describe task definition {r}: no such {}. Register it with RegisterTaskDefinition.",
                    if r.revision.is_some() {
                        "revision"
                    } else {
                        "family with an ACTIVE revision"
                    }
                ),
            )
        })
    }

    /// A task definition new tasks may use: it exists and is ACTIVE.
    async fn usable_task_definition(&self, reference: &str) -> ApiResult<TaskDefinition> {
        let td = self.resolve_task_definition(reference).await?;
        if td.status.unwrap_or(TaskDefinitionStatus::Active) != TaskDefinitionStatus::Active {
            return Err(ApiError::invalid(format!(
                "TaskDefinition is inactive: {}. Register a new revision or use an ACTIVE one.",
                td.family_revision()
            )));
        }
        Ok(td)
    }

    // ---- task definitions ----

    /// RegisterTaskDefinition: the family's next revision, allocated with a create-if-absent
    /// transaction so concurrent callers get distinct consecutive revisions.
    pub async fn register_task_definition(
        &self,
        req: pb::RegisterTaskDefinitionRequest,
    ) -> ApiResult<pb::TaskDefinitionResponse> {
        let accepted = accept::<TaskDefinition>(req.task_definition_json.as_bytes())?;
        let mut td = accepted.value;
        let prefix = self.keys().list(Family::TaskDefinitions, &[&td.family]);
        for attempt in 0..CAS_ATTEMPTS {
            let listing = self.store.list(&prefix).await?;
            let next = listing
                .kvs
                .iter()
                .filter_map(|kv| kv.key.rsplit('/').next()?.parse::<u32>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            td.revision = Some(next);
            td.status = Some(TaskDefinitionStatus::Active);
            td.registered_at = Some(now());
            td.deregistered_at = None;
            td.task_definition_arn = Some(arn(&format!("task-definition/{}:{next}", td.family)));
            let key = self.keys().task_definition(&td.family, next);
            match self
                .store
                .commit(Write::new().put_json(&key, &td).if_absent(&key), None)
                .await
            {
                Ok(_) => {
                    return Ok(pb::TaskDefinitionResponse {
                        task_definition_json: to_json(&td),
                        warnings: warnings(accepted.warnings),
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another caller took this revision; spread retries a little.
                    let jitter = (uuid::Uuid::new_v4().as_u128() % 5) as u64 + attempt as u64 % 5;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            Exception::Server,
            "too many concurrent registrations in this family; retry",
        ))
    }

    /// DescribeTaskDefinition.
    pub async fn describe_task_definition(
        &self,
        req: pb::DescribeTaskDefinitionRequest,
    ) -> ApiResult<pb::TaskDefinitionResponse> {
        let td = self.resolve_task_definition(&req.task_definition).await?;
        Ok(pb::TaskDefinitionResponse {
            task_definition_json: to_json(&td),
            warnings: Vec::new(),
        })
    }

    async fn all_task_definitions(&self, family: &str) -> ApiResult<Vec<TaskDefinition>> {
        let prefix = if family.is_empty() {
            self.keys().list(Family::TaskDefinitions, &[])
        } else {
            self.keys().list(Family::TaskDefinitions, &[family])
        };
        Ok(self
            .list::<TaskDefinition>(&prefix)
            .await?
            .into_iter()
            .map(|(td, _)| td)
            .collect())
    }

    fn status_filter(status: &str) -> ApiResult<Option<TaskDefinitionStatus>> {
        match status {
            "" | "ACTIVE" => Ok(Some(TaskDefinitionStatus::Active)),
            "INACTIVE" => Ok(Some(TaskDefinitionStatus::Inactive)),
            "ALL" => Ok(None),
            other => Err(ApiError::invalid(format!(
                "status must be ACTIVE, INACTIVE or ALL, got {other:?}"
            ))),
        }
    }

    /// ListTaskDefinitions: `family:revision` ARNs, by family then revision.
    pub async fn list_task_definitions(
        &self,
        req: pb::ListTaskDefinitionsRequest,
    ) -> ApiResult<pb::ListResponse> {
        let wanted = Self::status_filter(&req.status)?;
        let desc = match req.sort.as_str() {
            "" | "ASC" => false,
            "DESC" => true,
            other => {
                return Err(ApiError::invalid(format!(
                    "sort must be ASC or DESC, got {other:?}"
                )));
            }
        };
        let mut tds: Vec<TaskDefinition> = self
            .all_task_definitions("")
            .await?
            .into_iter()
            .filter(|td| td.family.starts_with(&req.family_prefix))
            .filter(|td| {
                wanted.is_none_or(|w| td.status.unwrap_or(TaskDefinitionStatus::Active) == w)
            })
            .collect();
        tds.sort_by(|a, b| (&a.family, a.revision).cmp(&(&b.family, b.revision)));
        // Sortable names for paging, mapped back to ARNs in order.
        let names: Vec<String> = tds
            .iter()
            .map(|td| format!("{}:{:010}", td.family, td.revision.unwrap_or(0)))
            .collect();
        let (mut shown, token) = page(names, req.max_results, &req.next_token)?;
        if desc {
            shown.reverse();
        }
        let arns = shown
            .iter()
            .filter_map(|n| n.rsplit_once(':'))
            .map(|(f, r)| {
                arn(&format!(
                    "task-definition/{f}:{}",
                    r.parse::<u32>().unwrap_or(0)
                ))
            })
            .collect();
        Ok(pb::ListResponse {
            arns,
            next_token: token,
        })
    }

    /// ListTaskDefinitionFamilies.
    pub async fn list_task_definition_families(
        &self,
        req: pb::ListTaskDefinitionFamiliesRequest,
    ) -> ApiResult<pb::ListResponse> {
        let tds = self.all_task_definitions("").await?;
        let mut by_family: BTreeMap<String, Vec<TaskDefinitionStatus>> = BTreeMap::new();
        for td in tds {
            by_family
                .entry(td.family.clone())
                .or_default()
                .push(td.status.unwrap_or(TaskDefinitionStatus::Active));
        }
        let families: Vec<String> = by_family
            .into_iter()
            .filter(|(f, _)| f.starts_with(&req.family_prefix))
            .filter(|(_, st)| match req.status.as_str() {
                "ALL" => true,
                "INACTIVE" => st.iter().all(|s| *s != TaskDefinitionStatus::Active),
                _ => st.contains(&TaskDefinitionStatus::Active),
            })
            .map(|(f, _)| f)
            .collect();
        let (arns, next_token) = page(families, req.max_results, &req.next_token)?;
        Ok(pb::ListResponse { arns, next_token })
    }

    /// DeregisterTaskDefinition: the revision becomes INACTIVE.
    pub async fn deregister_task_definition(
        &self,
        req: pb::DeregisterTaskDefinitionRequest,
    ) -> ApiResult<pb::TaskDefinitionResponse> {
        let r = TaskDefinitionRef::parse(&req.task_definition)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let Some(rev) = r.revision else {
            return Err(ApiError::invalid(
                "taskDefinition must name a revision (family:revision)",
            ));
        };
        let key = self.keys().task_definition(&r.family, rev);
        let Some((mut td, kv)) = self.get::<TaskDefinition>(&key).await? else {
            return Err(ApiError::new(
                Exception::Client,
                format!("Unable to describe task definition {r}: no such revision."),
            ));
        };
        if td.status.unwrap_or(TaskDefinitionStatus::Active) == TaskDefinitionStatus::Active {
            td.status = Some(TaskDefinitionStatus::Inactive);
            td.deregistered_at = Some(now());
            self.store
                .commit(
                    Write::new()
                        .put_json(&key, &td)
                        .if_unchanged(&key, kv.mod_revision),
                    None,
                )
                .await?;
        }
        Ok(pb::TaskDefinitionResponse {
            task_definition_json: to_json(&td),
            warnings: Vec::new(),
        })
    }

    // ---- clusters ----

    /// CreateCluster; creating an existing cluster returns it, as ECS does.
    pub async fn create_cluster(
        &self,
        req: pb::CreateClusterRequest,
    ) -> ApiResult<pb::ClusterResponse> {
        let body = if req.cluster_json.trim().is_empty() {
            "{}"
        } else {
            req.cluster_json.as_str()
        };
        let mut v: Value = serde_json::from_str(body)
            .map_err(|e| ApiError::invalid(format!("cluster_json is not JSON: {e}")))?;
        if let Value::Object(m) = &mut v {
            m.entry("clusterName")
                .or_insert_with(|| json!(DEFAULT_CLUSTER));
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let accepted = accept::<Cluster>(&bytes)?;
        let mut cluster = accepted.value;
        for cp in &cluster.capacity_providers {
            self.require_capacity_provider(cp).await?;
        }
        cluster.status = Some("ACTIVE".into());
        let key = self.keys().cluster(&cluster.cluster_name);
        if let Some((existing, kv)) = self.get::<Cluster>(&key).await? {
            if existing.status.as_deref() != Some("INACTIVE") {
                return Ok(pb::ClusterResponse {
                    cluster_json: to_json(&self.cluster_view(&existing).await?),
                    warnings: warnings(accepted.warnings),
                });
            }
            self.store
                .commit(
                    Write::new()
                        .put_json(&key, &cluster)
                        .if_unchanged(&key, kv.mod_revision),
                    None,
                )
                .await?;
        } else {
            self.store
                .commit(Write::new().put_json(&key, &cluster).if_absent(&key), None)
                .await?;
        }
        Ok(pb::ClusterResponse {
            cluster_json: to_json(&self.cluster_view(&cluster).await?),
            warnings: warnings(accepted.warnings),
        })
    }

    /// The cluster as DescribeClusters shows it, with its counts.
    async fn cluster_view(&self, c: &Cluster) -> ApiResult<Value> {
        let name = &c.cluster_name;
        let instances = self
            .store
            .list(&self.keys().list(Family::ContainerInstances, &[name]))
            .await?
            .kvs
            .len();
        let tasks: Vec<Task> = self
            .list::<Task>(&self.keys().list(Family::Tasks, &[name]))
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let services = self
            .store
            .list(&self.keys().list(Family::Services, &[name]))
            .await?
            .kvs
            .len();
        let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("clusterArn".into(), json!(arn(&format!("cluster/{name}"))));
            m.entry("status").or_insert_with(|| json!("ACTIVE"));
            m.insert("registeredContainerInstancesCount".into(), json!(instances));
            m.insert(
                "runningTasksCount".into(),
                json!(
                    tasks
                        .iter()
                        .filter(|t| t.last_status == capstan_core::task::TaskStatus::Running)
                        .count()
                ),
            );
            m.insert(
                "pendingTasksCount".into(),
                json!(
                    tasks
                        .iter()
                        .filter(|t| t.last_status < capstan_core::task::TaskStatus::Running)
                        .count()
                ),
            );
            m.insert("activeServicesCount".into(), json!(services));
        }
        Ok(v)
    }

    async fn cluster_doc(&self, name: &str) -> ApiResult<Option<(Cluster, Option<KeyValue>)>> {
        match self.get::<Cluster>(&self.keys().cluster(name)).await? {
            Some((c, kv)) => Ok(Some((c, Some(kv)))),
            None if name == DEFAULT_CLUSTER => Ok(Some((
                Cluster {
                    cluster_name: DEFAULT_CLUSTER.into(),
                    status: Some("ACTIVE".into()),
                    ..Default::default()
                },
                None,
            ))),
            None => Ok(None),
        }
    }

    /// DescribeClusters.
    pub async fn describe_clusters(
        &self,
        req: pb::DescribeClustersRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let names = if req.clusters.is_empty() {
            vec![DEFAULT_CLUSTER.to_string()]
        } else {
            req.clusters
        };
        let mut out = pb::DescribeResponse::default();
        for n in &names {
            let name = name_of(n);
            match self.cluster_doc(name).await? {
                Some((c, _)) => out.items_json.push(to_json(&self.cluster_view(&c).await?)),
                None => out.failures.push(missing(format!("cluster/{name}"))),
            }
        }
        Ok(out)
    }

    /// ListClusters.
    pub async fn list_clusters(&self, req: pb::ListClustersRequest) -> ApiResult<pb::ListResponse> {
        let mut names: Vec<String> = self
            .list::<Cluster>(&self.keys().list(Family::Clusters, &[]))
            .await?
            .into_iter()
            .filter(|(c, _)| c.status.as_deref() != Some("INACTIVE"))
            .map(|(c, _)| c.cluster_name)
            .collect();
        names.push(DEFAULT_CLUSTER.into());
        arn_page(names, req.max_results, &req.next_token, "cluster/")
    }

    /// DeleteCluster: only an empty cluster (no services, instances or tasks).
    pub async fn delete_cluster(
        &self,
        req: pb::DeleteClusterRequest,
    ) -> ApiResult<pb::ClusterResponse> {
        let name = cluster_or_default(&req.cluster);
        let Some((mut c, kv)) = self.cluster_doc(name).await? else {
            return Err(ApiError::cluster_not_found(name));
        };
        let k = self.keys();
        if !self
            .store
            .list(&k.list(Family::Services, &[name]))
            .await?
            .kvs
            .is_empty()
        {
            return Err(ApiError::new(
                Exception::ClusterContainsServices,
                "The Cluster cannot be deleted while Services are active. Delete its services first.",
            ));
        }
        if !self
            .store
            .list(&k.list(Family::ContainerInstances, &[name]))
            .await?
            .kvs
            .is_empty()
        {
            return Err(ApiError::new(
                Exception::ClusterContainsContainerInstances,
                "The Cluster cannot be deleted while Container Instances are active or draining. Stop its agents first.",
            ));
        }
        if self
            .list::<Task>(&k.list(Family::Tasks, &[name]))
            .await?
            .iter()
            .any(|(t, _)| t.desired_status == DesiredStatus::Running)
        {
            return Err(ApiError::new(
                Exception::ClusterContainsTasks,
                "The Cluster cannot be deleted while Tasks are active. Stop its tasks first.",
            ));
        }
        if let Some(kv) = kv {
            let key = k.cluster(name);
            self.store
                .commit(
                    Write::new()
                        .delete(&key)
                        .if_unchanged(&key, kv.mod_revision),
                    None,
                )
                .await?;
        }
        c.status = Some("INACTIVE".into());
        Ok(pb::ClusterResponse {
            cluster_json: to_json(&c),
            warnings: Vec::new(),
        })
    }

    async fn require_capacity_provider(&self, name: &str) -> ApiResult<CapacityProvider> {
        self.get::<CapacityProvider>(&self.keys().capacity_provider(name))
            .await?
            .map(|(cp, _)| cp)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "The specified capacity provider {name} does not exist. Create it with CreateCapacityProvider."
                ))
            })
    }

    /// PutClusterCapacityProviders.
    pub async fn put_cluster_capacity_providers(
        &self,
        req: pb::PutClusterCapacityProvidersRequest,
    ) -> ApiResult<pb::ClusterResponse> {
        let name = cluster_or_default(&req.cluster);
        let strategy: Vec<CapacityProviderStrategyItem> = if req
            .default_capacity_provider_strategy_json
            .trim()
            .is_empty()
        {
            Vec::new()
        } else {
            capstan_core::parse_json(req.default_capacity_provider_strategy_json.as_bytes())?
        };
        for cp in &req.capacity_providers {
            self.require_capacity_provider(cp).await?;
        }
        for item in &strategy {
            if !req.capacity_providers.contains(&item.capacity_provider) {
                return Err(ApiError::invalid(format!(
                    "defaultCapacityProviderStrategy names {}, which is not in capacityProviders",
                    item.capacity_provider
                )));
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut c, kv)) = self.cluster_doc(name).await? else {
                return Err(ApiError::cluster_not_found(name));
            };
            c.capacity_providers = req.capacity_providers.clone();
            c.default_capacity_provider_strategy = strategy.clone();
            let bytes = serde_json::to_vec(&c).unwrap_or_default();
            let accepted = accept::<Cluster>(&bytes)?;
            let key = self.keys().cluster(name);
            let w = Write::new().put_json(&key, &accepted.value);
            let w = match &kv {
                Some(kv) => w.if_unchanged(&key, kv.mod_revision),
                None => w.if_absent(&key),
            };
            match self.store.commit(w, None).await {
                Ok(_) => {
                    return Ok(pb::ClusterResponse {
                        cluster_json: to_json(&self.cluster_view(&accepted.value).await?),
                        warnings: warnings(accepted.warnings),
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            Exception::Server,
            "the cluster keeps changing; retry",
        ))
    }

    // ---- services ----

    async fn service_state(
        &self,
        cluster: &str,
        name: &str,
    ) -> ApiResult<(Option<(Service, KeyValue)>, Option<ServiceStatusDoc>)> {
        let spec = self
            .store
            .get(&self.keys().service(cluster, name))
            .await?
            .map(|kv| {
                capstan_core::parse_json::<Service>(&kv.value)
                    .map(|s| (s, kv))
                    .map_err(ApiError::from)
            })
            .transpose()?;
        let status = self
            .get::<ServiceStatusDoc>(&self.keys().service_status(cluster, name))
            .await?
            .map(|(s, _)| s);
        Ok((spec, status))
    }

    async fn describe_one(&self, cluster: &str, name: &str) -> ApiResult<Option<Value>> {
        let (spec, status) = self.service_state(cluster, name).await?;
        if spec.is_none() && status.is_none() {
            return Ok(None);
        }
        let events: Vec<ServiceEvent> = self
            .list::<ServiceEvent>(&self.keys().list(Family::Events, &[cluster, name]))
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        Ok(Some(describe_service(
            cluster,
            name,
            spec.as_ref().map(|(s, _)| s),
            status.as_ref(),
            &events,
        )))
    }

    /// Checks what the service names exists; returns its task definition as `family:revision`.
    async fn check_service_refs(&self, s: &Service) -> ApiResult<String> {
        let resolved = match &s.task_definition {
            Some(td) => self.usable_task_definition(td).await?.family_revision(),
            None => return Err(ApiError::invalid("taskDefinition is required")),
        };
        for cp in &s.capacity_provider_strategy {
            self.require_capacity_provider(&cp.capacity_provider)
                .await?;
        }
        for lb in &s.load_balancers {
            if let Some(tg) = &lb.target_group_arn {
                self.require_target_group(capstan_core::service::lb_object_name(tg))
                    .await?;
            }
        }
        Ok(resolved)
    }

    /// CreateService.
    pub async fn create_service(
        &self,
        req: pb::CreateServiceRequest,
    ) -> ApiResult<pb::ServiceResponse> {
        let accepted = accept::<Service>(req.service_json.as_bytes())?;
        let mut s = accepted.value;
        let cluster = match (&s.cluster, req.cluster.as_str()) {
            (Some(c), "") => name_of(c).to_string(),
            (Some(c), r) if name_of(c) != name_of(r) => {
                return Err(ApiError::invalid(format!(
                    "the document's cluster {c} differs from the request's {r}"
                )));
            }
            _ => cluster_or_default(&req.cluster).to_string(),
        };
        self.require_cluster(&cluster).await?;
        if s.service_name.is_empty() {
            return Err(ApiError::invalid("serviceName is required"));
        }
        if s.status.is_some_and(|st| st != ServiceStatus::Active) {
            return Err(ApiError::invalid(
                "status is set by Capstan, not by CreateService",
            ));
        }
        s.status = None;
        s.force_new_deployment = None;
        s.cluster = Some(cluster.clone());
        // As ECS does, a family resolves to its latest ACTIVE revision now, so that later
        // registrations do not change what the service runs.
        s.task_definition = Some(self.check_service_refs(&s).await?);
        let (existing, status) = self.service_state(&cluster, &s.service_name).await?;
        if existing.is_some() {
            return Err(ApiError::invalid(
                "Creation of service was not idempotent: a service with this name is already ACTIVE. Use UpdateService to change it.",
            ));
        }
        if status.is_some_and(|st| st.status == ServiceStatus::Draining) {
            return Err(ApiError::invalid(
                "Unable to Start a service that is still Draining. Wait until it is INACTIVE.",
            ));
        }
        let key = self.keys().service(&cluster, &s.service_name);
        match self
            .store
            .commit(Write::new().put_json(&key, &s).if_absent(&key), None)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::invalid(
                    "Creation of service was not idempotent: a service with this name is already ACTIVE.",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let doc = self
            .describe_one(&cluster, &s.service_name)
            .await?
            .unwrap_or_else(|| json!({}));
        Ok(pb::ServiceResponse {
            service_json: doc.to_string(),
            warnings: warnings(accepted.warnings),
        })
    }

    /// The spec of a service that must be ACTIVE.
    async fn active_service(&self, cluster: &str, name: &str) -> ApiResult<(Service, KeyValue)> {
        self.require_cluster(cluster).await?;
        match self.service_state(cluster, name).await? {
            (Some(s), _) => Ok(s),
            (None, Some(_)) => Err(ApiError::new(
                Exception::ServiceNotActive,
                format!(
                    "Service {name} was deleted and is not ACTIVE. Create it again with CreateService."
                ),
            )),
            (None, None) => Err(ApiError::service_not_found(cluster, name)),
        }
    }

    /// UpdateService: the given fields over the current spec.
    pub async fn update_service(
        &self,
        req: pb::UpdateServiceRequest,
    ) -> ApiResult<pb::ServiceResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        let name = name_of(&req.service).to_string();
        if name.is_empty() {
            return Err(ApiError::invalid("service is required"));
        }
        for _ in 0..CAS_ATTEMPTS {
            let (cur, kv) = self.active_service(&cluster, &name).await?;
            let merged = merge_update(&cur, req.service_json.as_bytes())?;
            let mut accepted = accept::<Service>(&merged)?;
            let resolved = self.check_service_refs(&accepted.value).await?;
            // A taskDefinition given here resolves to a revision now (a family: its latest
            // ACTIVE one); an update without one keeps what the service runs.
            if names_task_definition(&req.service_json) {
                // Unless it is what the service already runs (its PRIMARY deployment's): then
                // the spec stays as it was written, so no deployment starts for nothing.
                let current = self
                    .deployments(&cluster, &name)
                    .await?
                    .into_iter()
                    .find(|d| d.status == DeploymentStatus::Primary)
                    .map(|d| d.task_definition);
                accepted.value.task_definition = if current.as_ref() == Some(&resolved) {
                    cur.task_definition.clone()
                } else {
                    Some(resolved)
                };
            }
            let key = self.keys().service(&cluster, &name);
            match self
                .store
                .commit(
                    Write::new()
                        .put_json(&key, &accepted.value)
                        .if_unchanged(&key, kv.mod_revision),
                    None,
                )
                .await
            {
                Ok(_) => {
                    let doc = self
                        .describe_one(&cluster, &name)
                        .await?
                        .unwrap_or_else(|| json!({}));
                    return Ok(pb::ServiceResponse {
                        service_json: doc.to_string(),
                        warnings: warnings(accepted.warnings),
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            Exception::Server,
            "the service keeps changing; retry",
        ))
    }

    /// DescribeServices.
    pub async fn describe_services(
        &self,
        req: pb::DescribeServicesRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.services.is_empty() || req.services.len() > 10 {
            return Err(ApiError::invalid("services must name 1 to 10 services"));
        }
        let mut out = pb::DescribeResponse::default();
        for s in &req.services {
            let name = name_of(s);
            match self.describe_one(&cluster, name).await? {
                Some(doc) => out.items_json.push(doc.to_string()),
                None => out
                    .failures
                    .push(missing(format!("service/{cluster}/{name}"))),
            }
        }
        Ok(out)
    }

    /// ListServices: ACTIVE services' ARNs.
    pub async fn list_services(&self, req: pb::ListServicesRequest) -> ApiResult<pb::ListResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let names: Vec<String> = self
            .store
            .list(&self.keys().list(Family::Services, &[&cluster]))
            .await?
            .kvs
            .iter()
            .map(|kv| name_of(&kv.key).to_string())
            .collect();
        arn_page(
            names,
            req.max_results,
            &req.next_token,
            &format!("service/{cluster}/"),
        )
    }

    /// DeleteService: removes the spec; the deployer scales the service to 0 (DRAINING) and
    /// marks it INACTIVE once its tasks are gone.
    pub async fn delete_service(
        &self,
        req: pb::DeleteServiceRequest,
    ) -> ApiResult<pb::ServiceResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        let name = name_of(&req.service).to_string();
        let (s, kv) = self.active_service(&cluster, &name).await?;
        let replica = s.scheduling_strategy() == capstan_core::service::SchedulingStrategy::Replica;
        if replica && s.desired_count.unwrap_or(0) > 0 && !req.force {
            return Err(ApiError::invalid(
                "The service cannot be stopped while it is scaled above 0. Set desiredCount to 0 with UpdateService, or pass force.",
            ));
        }
        let key = self.keys().service(&cluster, &name);
        self.store
            .commit(
                Write::new()
                    .delete(&key)
                    .if_unchanged(&key, kv.mod_revision),
                None,
            )
            .await?;
        let (_, status) = self.service_state(&cluster, &name).await?;
        let mut doc = describe_service(&cluster, &name, Some(&s), status.as_ref(), &[]);
        doc["status"] = json!(ServiceStatus::Draining);
        doc["desiredCount"] = json!(0);
        Ok(pb::ServiceResponse {
            service_json: doc.to_string(),
            warnings: Vec::new(),
        })
    }

    async fn deployments(&self, cluster: &str, service: &str) -> ApiResult<Vec<Deployment>> {
        let mut deps: Vec<Deployment> = self
            .list::<Deployment>(&self.keys().list(Family::Deployments, &[cluster, service]))
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        deps.sort_by(|a, b| {
            b.created_at
                .unwrap_or(0.0)
                .total_cmp(&a.created_at.unwrap_or(0.0))
        });
        Ok(deps)
    }

    /// ListServiceDeployments: newest first.
    pub async fn list_service_deployments(
        &self,
        req: pb::ListServiceDeploymentsRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        let name = name_of(&req.service).to_string();
        self.require_cluster(&cluster).await?;
        let (spec, status) = self.service_state(&cluster, &name).await?;
        if spec.is_none() && status.is_none() {
            return Err(ApiError::service_not_found(&cluster, &name));
        }
        let mut wanted = Vec::new();
        for s in &req.status {
            let st: RolloutState = serde_json::from_value(json!(s)).map_err(|_| {
                ApiError::invalid(format!(
                    "status must be IN_PROGRESS, COMPLETED or FAILED, got {s:?}"
                ))
            })?;
            wanted.push(st);
        }
        let items_json = self
            .deployments(&cluster, &name)
            .await?
            .iter()
            .filter(|d| wanted.is_empty() || wanted.contains(&d.rollout_state))
            .map(to_json)
            .collect();
        Ok(pb::DescribeResponse {
            items_json,
            failures: Vec::new(),
        })
    }

    /// ContinueServiceDeployment: writes the request key the deployer consumes.
    pub async fn continue_service_deployment(
        &self,
        req: pb::ContinueServiceDeploymentRequest,
    ) -> ApiResult<pb::ContinueServiceDeploymentResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        let name = name_of(&req.service).to_string();
        self.active_service(&cluster, &name).await?;
        let deps = self.deployments(&cluster, &name).await?;
        let dep = if req.deployment_id.is_empty() {
            deps.iter().find(|d| {
                d.status == DeploymentStatus::Primary && d.rollout_state == RolloutState::InProgress
            })
        } else {
            deps.iter().find(|d| d.id == req.deployment_id)
        };
        let Some(dep) = dep else {
            return Err(ApiError::new(
                Exception::ResourceNotFound,
                format!(
                    "no {} deployment of service {name}",
                    if req.deployment_id.is_empty() {
                        "in-progress".to_string()
                    } else {
                        req.deployment_id.clone()
                    }
                ),
            ));
        };
        if dep.rollout_state != RolloutState::InProgress {
            return Err(ApiError::invalid(format!(
                "deployment {} is not in progress; nothing waits for an answer",
                dep.id
            )));
        }
        let body = json!({
            "action": if req.action.is_empty() { "CONTINUE" } else { req.action.as_str() },
            "hookId": if req.hook_id.is_empty() { Value::Null } else { json!(req.hook_id) },
        });
        let mut body = body;
        if let Value::Object(m) = &mut body {
            m.retain(|_, v| !v.is_null());
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let accepted = accept::<ContinueDeploymentRequest>(&bytes)?;
        let key = self.keys().continue_deployment(&cluster, &name, &dep.id);
        self.store.put_json(&key, &accepted.value).await?;
        Ok(pb::ContinueServiceDeploymentResponse {
            deployment_id: dep.id.clone(),
        })
    }

    // ---- tasks ----

    async fn task(&self, cluster: &str, id: &str) -> ApiResult<Option<Task>> {
        Ok(self
            .get::<Task>(&self.keys().task(cluster, id))
            .await?
            .map(|(t, _)| t))
    }

    /// Writes a RunTask request and waits for the scheduler's answer.
    async fn submit_run_task(
        &self,
        cluster: &str,
        request: &RunTaskRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let key = self.keys().key(Family::RunTaskRequests, &[cluster, &id]);
        let result_key = self.keys().key(Family::RunTaskResults, &[cluster, &id]);
        let rev = self.store.put_json(&key, request).await?;
        let Some(kv) =
            crate::watch::wait_for_key(&self.store, &result_key, rev, self.run_task_timeout)
                .await?
        else {
            return Err(ApiError::new(
                Exception::Server,
                format!(
                    "the scheduler did not answer within {:?}; is capstan-scheduler running? The request stays queued as {key}",
                    self.run_task_timeout
                ),
            ));
        };
        let result: RunTaskResult = decode(&kv).unwrap_or_default();
        let mut out = pb::DescribeResponse::default();
        for t in &result.tasks {
            if let Some(task) = self.task(cluster, t).await? {
                out.items_json.push(to_json(&task));
            }
        }
        out.failures = result
            .failures
            .into_iter()
            .map(|f| pb::Failure {
                arn: String::new(),
                reason: f.reason,
                detail: f.detail,
            })
            .collect();
        Ok(out)
    }

    /// RunTask: places and starts up to 10 tasks through the scheduler.
    pub async fn run_task(&self, req: pb::RunTaskRequest) -> ApiResult<pb::DescribeResponse> {
        let accepted = accept::<RunTaskRequest>(req.run_task_json.as_bytes())?;
        let mut r = accepted.value;
        let cluster = match (&r.cluster, req.cluster.as_str()) {
            (Some(c), "") => name_of(c).to_string(),
            _ => cluster_or_default(&req.cluster).to_string(),
        };
        self.require_cluster(&cluster).await?;
        self.usable_task_definition(&r.task_definition).await?;
        for cp in &r.capacity_provider_strategy {
            self.require_capacity_provider(&cp.capacity_provider)
                .await?;
        }
        r.cluster = Some(cluster.clone());
        self.submit_run_task(&cluster, &r).await
    }

    /// StartTask: one task on each named container instance.
    pub async fn start_task(&self, req: pb::StartTaskRequest) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.container_instances.is_empty() || req.container_instances.len() > 10 {
            return Err(ApiError::invalid(
                "containerInstances must name 1 to 10 container instances",
            ));
        }
        self.usable_task_definition(&req.task_definition).await?;
        let overrides: Option<TaskOverride> = if req.overrides_json.trim().is_empty() {
            None
        } else {
            Some(capstan_core::parse_json(req.overrides_json.as_bytes())?)
        };
        let mut out = pb::DescribeResponse::default();
        for ci in &req.container_instances {
            let id = name_of(ci);
            if self
                .store
                .get(&self.keys().container_instance(&cluster, id))
                .await?
                .is_none()
            {
                out.failures
                    .push(missing(format!("container-instance/{cluster}/{id}")));
                continue;
            }
            let r = RunTaskRequest {
                task_definition: req.task_definition.clone(),
                count: Some(1),
                group: (!req.group.is_empty()).then(|| req.group.clone()),
                started_by: (!req.started_by.is_empty()).then(|| req.started_by.clone()),
                placement_constraints: vec![PlacementConstraint {
                    kind: PlacementConstraintType::MemberOf,
                    expression: Some(format!("ec2InstanceId == {id}")),
                }],
                overrides: overrides.clone(),
                cluster: Some(cluster.clone()),
                ..Default::default()
            };
            let bytes = serde_json::to_vec(&r).unwrap_or_default();
            let r = accept::<RunTaskRequest>(&bytes)?.value;
            let part = self.submit_run_task(&cluster, &r).await?;
            out.items_json.extend(part.items_json);
            out.failures.extend(part.failures.into_iter().map(|mut f| {
                f.arn = arn(&format!("container-instance/{cluster}/{id}"));
                f
            }));
        }
        Ok(out)
    }

    /// StopTask: writes the request key the scheduler consumes.
    pub async fn stop_task(&self, req: pb::StopTaskRequest) -> ApiResult<pb::TaskResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let id = name_of(&req.task).to_string();
        let Some(mut task) = self.task(&cluster, &id).await? else {
            return Err(ApiError::invalid(format!(
                "The referenced task was not found: {id} in cluster {cluster}."
            )));
        };
        let body = StopTaskRequest {
            reason: (!req.reason.is_empty()).then(|| req.reason.clone()),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let body = accept::<StopTaskRequest>(&bytes)?.value;
        if task.desired_status == DesiredStatus::Running {
            self.store
                .put_json(
                    &self.keys().key(Family::StopTaskRequests, &[&cluster, &id]),
                    &body,
                )
                .await?;
            // As ECS answers: the task with the stop accepted.
            task.desired_status = DesiredStatus::Stopped;
            if task.stopped_reason.is_none() {
                task.stopped_reason = body.reason;
            }
        }
        Ok(pb::TaskResponse {
            task_json: to_json(&task),
        })
    }

    /// DescribeTasks.
    pub async fn describe_tasks(
        &self,
        req: pb::DescribeTasksRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.tasks.is_empty() || req.tasks.len() > 100 {
            return Err(ApiError::invalid("tasks must name 1 to 100 tasks"));
        }
        let mut out = pb::DescribeResponse::default();
        for t in &req.tasks {
            let id = name_of(t);
            match self.task(&cluster, id).await? {
                Some(task) => out.items_json.push(to_json(&task)),
                None => out.failures.push(missing(format!("task/{cluster}/{id}"))),
            }
        }
        Ok(out)
    }

    /// ListTasks.
    pub async fn list_tasks(&self, req: pb::ListTasksRequest) -> ApiResult<pb::ListResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let filter = TaskFilter {
            family: req.family,
            service_name: name_of(&req.service_name).to_string(),
            desired_status: req.desired_status,
            container_instance: req.container_instance,
            started_by: req.started_by,
        };
        filter.validate()?;
        let ids: Vec<String> = self
            .list::<Task>(&self.keys().list(Family::Tasks, &[&cluster]))
            .await?
            .iter()
            .filter(|(t, _)| filter.matches(t))
            .map(|(_, kv)| name_of(&kv.key).to_string())
            .collect();
        arn_page(
            ids,
            req.max_results,
            &req.next_token,
            &format!("task/{cluster}/"),
        )
    }

    // ---- container instances ----

    async fn instances(&self, cluster: &str) -> ApiResult<Vec<(ContainerInstance, KeyValue)>> {
        self.list::<ContainerInstance>(&self.keys().list(Family::ContainerInstances, &[cluster]))
            .await
    }

    /// ListContainerInstances, with a status and a cluster-query-language filter.
    pub async fn list_container_instances(
        &self,
        req: pb::ListContainerInstancesRequest,
    ) -> ApiResult<pb::ListResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let status = match req.status.as_str() {
            "" => None,
            "ACTIVE" => Some(InstanceStatus::Active),
            "DRAINING" => Some(InstanceStatus::Draining),
            other => {
                return Err(ApiError::invalid(format!(
                    "status must be ACTIVE or DRAINING, got {other:?}"
                )));
            }
        };
        let filter = if req.filter.trim().is_empty() {
            None
        } else {
            Some(
                capstan_plan::query::parse(&req.filter)
                    .map_err(|e| ApiError::invalid(format!("filter: {e}")))?,
            )
        };
        let tasks: Vec<Task> = if filter.is_some() {
            self.list::<Task>(&self.keys().list(Family::Tasks, &[&cluster]))
                .await?
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| t.desired_status == DesiredStatus::Running)
                .collect()
        } else {
            Vec::new()
        };
        let mut ids = Vec::new();
        for (ci, _) in self.instances(&cluster).await? {
            if status.is_some_and(|s| s != ci.status) {
                continue;
            }
            if let Some(expr) = &filter {
                let attributes: BTreeMap<String, String> = ci
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
                    .collect();
                let groups: Vec<String> = tasks
                    .iter()
                    .filter(|t| {
                        t.container_instance_arn
                            .as_deref()
                            .is_some_and(|c| name_of(c) == ci.id())
                    })
                    .filter_map(|t| t.group.clone())
                    .collect();
                let facts = capstan_plan::query::Facts {
                    instance_id: ci.id(),
                    attributes: &attributes,
                    agent_connected: ci.agent_connected,
                    agent_version: &ci.version_info.agent_version,
                    registered_at: ci.registered_at,
                    running_tasks_count: ci.running_tasks_count,
                    task_groups: &groups,
                };
                if !expr.eval(&facts) {
                    continue;
                }
            }
            ids.push(ci.id().to_string());
        }
        arn_page(
            ids,
            req.max_results,
            &req.next_token,
            &format!("container-instance/{cluster}/"),
        )
    }

    /// DescribeContainerInstances.
    pub async fn describe_container_instances(
        &self,
        req: pb::DescribeContainerInstancesRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        if req.container_instances.is_empty() || req.container_instances.len() > 100 {
            return Err(ApiError::invalid(
                "containerInstances must name 1 to 100 container instances",
            ));
        }
        let mut out = pb::DescribeResponse::default();
        for ci in &req.container_instances {
            let id = name_of(ci);
            match self
                .get::<ContainerInstance>(&self.keys().container_instance(&cluster, id))
                .await?
            {
                Some((c, _)) => out.items_json.push(to_json(&c)),
                None => out
                    .failures
                    .push(missing(format!("container-instance/{cluster}/{id}"))),
            }
        }
        Ok(out)
    }

    /// UpdateContainerInstancesState: ACTIVE or DRAINING, written under the agent's lease.
    pub async fn update_container_instances_state(
        &self,
        req: pb::UpdateContainerInstancesStateRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        self.require_cluster(&cluster).await?;
        let status = match req.status.as_str() {
            "ACTIVE" => InstanceStatus::Active,
            "DRAINING" => InstanceStatus::Draining,
            other => {
                return Err(ApiError::invalid(format!(
                    "status must be ACTIVE or DRAINING, got {other:?}"
                )));
            }
        };
        if req.container_instances.is_empty() || req.container_instances.len() > 10 {
            return Err(ApiError::invalid(
                "containerInstances must name 1 to 10 container instances",
            ));
        }
        let mut out = pb::DescribeResponse::default();
        for ci in &req.container_instances {
            let id = name_of(ci);
            let key = self.keys().container_instance(&cluster, id);
            let mut done = None;
            for _ in 0..CAS_ATTEMPTS {
                let Some((mut c, kv)) = self.get::<ContainerInstance>(&key).await? else {
                    break;
                };
                c.status = status;
                c.status_reason = (status == InstanceStatus::Draining)
                    .then(|| "Draining requested by UpdateContainerInstancesState".to_string());
                match self
                    .store
                    .commit(
                        Write::new()
                            .put_json_with_lease(&key, &c, kv.lease)
                            .if_unchanged(&key, kv.mod_revision),
                        None,
                    )
                    .await
                {
                    Ok(_) => {
                        done = Some(c);
                        break;
                    }
                    // The agent rewrote its registration meanwhile: read again.
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            match done {
                Some(c) => out.items_json.push(to_json(&c)),
                None => out
                    .failures
                    .push(missing(format!("container-instance/{cluster}/{id}"))),
            }
        }
        Ok(out)
    }

    // ---- capacity providers ----

    /// CreateCapacityProvider.
    pub async fn create_capacity_provider(
        &self,
        req: pb::CreateCapacityProviderRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let accepted = accept::<CapacityProvider>(req.capacity_provider_json.as_bytes())?;
        let key = self.keys().capacity_provider(&accepted.value.name);
        match self
            .store
            .commit(
                Write::new().put_json(&key, &accepted.value).if_absent(&key),
                None,
            )
            .await
        {
            Ok(_) => Ok(pb::DocumentResponse {
                json: to_json(&accepted.value),
                warnings: warnings(accepted.warnings),
            }),
            Err(StoreError::Conflict { .. }) => Err(ApiError::new(
                Exception::Client,
                format!(
                    "The specified capacity provider {} already exists.",
                    accepted.value.name
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Describe* by name over one key family; every object when no names are given.
    async fn describe_named<T: DeserializeOwned + Serialize>(
        &self,
        family: Family,
        names: &[String],
        kind: &str,
        not_found: impl Fn(&str) -> ApiError,
    ) -> ApiResult<pb::DescribeResponse> {
        let mut out = pb::DescribeResponse::default();
        if names.is_empty() {
            out.items_json = self
                .list::<T>(&self.keys().list(family, &[]))
                .await?
                .iter()
                .map(|(v, _)| to_json(v))
                .collect();
            return Ok(out);
        }
        for n in names {
            let name = name_of(n);
            match self.get::<T>(&self.keys().key(family, &[name])).await? {
                Some((v, _)) => out.items_json.push(to_json(&v)),
                None if kind == "capacity-provider" => {
                    out.failures.push(missing(format!("{kind}/{name}")))
                }
                None => return Err(not_found(name)),
            }
        }
        Ok(out)
    }

    /// DescribeCapacityProviders.
    pub async fn describe_capacity_providers(
        &self,
        req: pb::DescribeByNameRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        self.describe_named::<CapacityProvider>(
            Family::CapacityProviders,
            &req.names,
            "capacity-provider",
            |n| ApiError::invalid(n.to_string()),
        )
        .await
    }

    // ---- load balancing ----

    fn target_group_not_found(name: &str) -> ApiError {
        ApiError::new(
            Exception::TargetGroupNotFound,
            format!(
                "One or more target groups not found: {name}. Create it with CreateTargetGroup."
            ),
        )
    }

    async fn require_target_group(&self, name: &str) -> ApiResult<TargetGroup> {
        self.get::<TargetGroup>(&self.keys().target_group(name))
            .await?
            .map(|(t, _)| t)
            .ok_or_else(|| Self::target_group_not_found(name))
    }

    /// CreateTargetGroup; the same name with the same settings returns it, as ELBv2 does.
    pub async fn create_target_group(
        &self,
        req: pb::CreateTargetGroupRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let accepted = accept::<TargetGroup>(req.target_group_json.as_bytes())?;
        let mut tg = accepted.value;
        let name = object_name(
            "targetGroupName",
            tg.target_group_name.as_deref(),
            &req.name,
        )?;
        tg.target_group_name = Some(name.clone());
        let bytes = serde_json::to_vec(&tg).unwrap_or_default();
        let tg = accept::<TargetGroup>(&bytes)?.value;
        let key = self.keys().target_group(&name);
        match self
            .store
            .commit(Write::new().put_json(&key, &tg).if_absent(&key), None)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                let existing = self.require_target_group(&name).await?;
                if existing != tg {
                    return Err(ApiError::new(
                        Exception::ResourceInUse,
                        format!(
                            "A target group with the same name '{name}' exists, but with different settings"
                        ),
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(pb::DocumentResponse {
            json: to_json(&tg),
            warnings: warnings(accepted.warnings),
        })
    }

    /// DescribeTargetGroups.
    pub async fn describe_target_groups(
        &self,
        req: pb::DescribeByNameRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        self.describe_named::<TargetGroup>(
            Family::TargetGroups,
            &req.names,
            "targetgroup",
            Self::target_group_not_found,
        )
        .await
    }

    /// DescribeTargetHealth: ELBv2's TargetHealthDescriptions from the registrar's status.
    pub async fn describe_target_health(
        &self,
        req: pb::DescribeTargetHealthRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        let name = name_of(&req.target_group);
        self.require_target_group(name).await?;
        let status = self
            .get::<TargetGroupStatusDoc>(&self.keys().target_group_status(name))
            .await?
            .map(|(s, _)| s)
            .unwrap_or_default();
        let items_json = status
            .targets
            .iter()
            .map(|t| {
                json!({
                    "target": {"id": t.host, "port": t.port, "taskId": t.task_id},
                    "healthCheckPort": t.port.to_string(),
                    "targetHealth": {
                        "state": t.state,
                        "reason": t.reason,
                    },
                })
                .to_string()
            })
            .collect();
        Ok(pb::DescribeResponse {
            items_json,
            failures: Vec::new(),
        })
    }

    /// CreateListener: its target groups must exist and its port must be free.
    pub async fn create_listener(
        &self,
        req: pb::CreateListenerRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let accepted = accept::<Listener>(req.listener_json.as_bytes())?;
        let mut l = accepted.value;
        let name = object_name("listenerName", l.listener_name.as_deref(), &req.name)?;
        l.listener_name = Some(name.clone());
        for a in &l.default_actions {
            for (tg, _) in a.weighted_target_groups() {
                self.require_target_group(&tg).await?;
            }
        }
        for (other, kv) in self
            .list::<Listener>(&self.keys().list(Family::Listeners, &[]))
            .await?
        {
            if name_of(&kv.key) != name
                && other.port == l.port
                && other.bind_address() == l.bind_address()
            {
                return Err(ApiError::new(
                    Exception::DuplicateListener,
                    format!(
                        "A listener already exists on {}:{} ({})",
                        l.bind_address(),
                        l.port,
                        name_of(&kv.key)
                    ),
                ));
            }
        }
        let key = self.keys().listener(&name);
        match self
            .store
            .commit(Write::new().put_json(&key, &l).if_absent(&key), None)
            .await
        {
            Ok(_) => Ok(pb::DocumentResponse {
                json: to_json(&l),
                warnings: warnings(accepted.warnings),
            }),
            Err(StoreError::Conflict { .. }) => Err(ApiError::new(
                Exception::DuplicateListener,
                format!("A listener named {name} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// DescribeListeners.
    pub async fn describe_listeners(
        &self,
        req: pb::DescribeByNameRequest,
    ) -> ApiResult<pb::DescribeResponse> {
        self.describe_named::<Listener>(Family::Listeners, &req.names, "listener", |n| {
            ApiError::new(
                Exception::ListenerNotFound,
                format!("One or more listeners not found: {n}"),
            )
        })
        .await
    }

    /// The store, for the watch stream.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// DescribeServices' document for one service (for the watch stream).
    pub async fn describe_service_doc(
        &self,
        cluster: &str,
        name: &str,
    ) -> ApiResult<Option<Value>> {
        self.describe_one(cluster, name).await
    }

    /// Checks that a service exists in some state (for the watch stream).
    pub async fn require_service(&self, cluster: &str, name: &str) -> ApiResult<()> {
        self.require_cluster(cluster).await?;
        match self.service_state(cluster, name).await? {
            (None, None) => Err(ApiError::service_not_found(cluster, name)),
            _ => Ok(()),
        }
    }
}

/// The cluster a request names (`default` when empty).
pub fn cluster_name(c: &str) -> &str {
    cluster_or_default(c)
}

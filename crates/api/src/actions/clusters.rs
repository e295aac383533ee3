//! Clusters: CreateCluster, DescribeClusters, ListClusters, DeleteCluster, PutClusterCapacityProviders.

use super::*;

impl Api {
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

    /// What a cluster holds, counted once for both its counts and its `statistics`.
    async fn cluster_counts(&self, name: &str) -> ApiResult<ClusterCounts> {
        use capstan_core::task::TaskStatus;
        let instances = self
            .store
            .list(&self.keys().list(Family::ContainerInstances, &[name]))
            .await?
            .kvs
            .len();
        let tasks = self
            .list::<Task>(&self.keys().list(Family::Tasks, &[name]))
            .await?;
        let services = self
            .list::<Service>(&self.keys().list(Family::Services, &[name]))
            .await?;
        let draining = services
            .iter()
            .filter(|(s, _)| s.status == Some(ServiceStatus::Draining))
            .count();
        Ok(ClusterCounts {
            instances,
            running: tasks
                .iter()
                .filter(|(t, _)| t.last_status == TaskStatus::Running)
                .count(),
            pending: tasks
                .iter()
                .filter(|(t, _)| t.last_status < TaskStatus::Running)
                .count(),
            services: services.len(),
            draining,
        })
    }

    /// The cluster as DescribeClusters shows it, with its counts.
    pub(crate) async fn cluster_view(&self, c: &Cluster) -> ApiResult<Value> {
        let n = self.cluster_counts(&c.cluster_name).await?;
        let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert(
                "clusterArn".into(),
                json!(arn(&format!("cluster/{}", c.cluster_name))),
            );
            m.entry("status").or_insert_with(|| json!("ACTIVE"));
            m.insert(
                "registeredContainerInstancesCount".into(),
                json!(n.instances),
            );
            m.insert("runningTasksCount".into(), json!(n.running));
            m.insert("pendingTasksCount".into(), json!(n.pending));
            m.insert("activeServicesCount".into(), json!(n.services));
        }
        Ok(v)
    }

    /// ECS's cluster `statistics`: every task runs on a container instance, so the Fargate
    /// counts are 0 (a FARGATE-shaped task runs on an agent like any other).
    async fn cluster_statistics(&self, name: &str) -> ApiResult<Value> {
        let n = self.cluster_counts(name).await?;
        let stat = |name: &str, v: usize| json!({"name": name, "value": v.to_string()});
        Ok(json!([
            stat("runningEC2TasksCount", n.running),
            stat("runningFargateTasksCount", 0),
            stat("pendingEC2TasksCount", n.pending),
            stat("pendingFargateTasksCount", 0),
            stat("activeEC2ServiceCount", n.services - n.draining),
            stat("activeFargateServiceCount", 0),
            stat("drainingEC2ServiceCount", n.draining),
            stat("drainingFargateServiceCount", 0),
        ]))
    }

    pub(crate) async fn cluster_doc(
        &self,
        name: &str,
    ) -> ApiResult<Option<(Cluster, Option<KeyValue>)>> {
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
        const INCLUDES: [&str; 5] = [
            "ATTACHMENTS",
            "CONFIGURATIONS",
            "SETTINGS",
            "STATISTICS",
            "TAGS",
        ];
        if let Some(bad) = req.include.iter().find(|i| !INCLUDES.contains(&i.as_str())) {
            return Err(ApiError::invalid(format!(
                "include must be among {}; got {bad:?}",
                INCLUDES.join(", ")
            )));
        }
        let included = |what: &str| req.include.iter().any(|i| i == what);
        let names = if req.clusters.is_empty() {
            vec![DEFAULT_CLUSTER.to_string()]
        } else {
            req.clusters.clone()
        };
        let mut out = pb::DescribeResponse::default();
        for n in &names {
            let name = name_of(n);
            let Some((c, _)) = self.cluster_doc(name).await? else {
                out.failures.push(missing(format!("cluster/{name}")));
                continue;
            };
            let mut v = self.cluster_view(&c).await?;
            if let Value::Object(m) = &mut v {
                // As ECS: what `include` does not name is not in the answer.
                for (field, include) in [
                    ("tags", "TAGS"),
                    ("settings", "SETTINGS"),
                    ("configuration", "CONFIGURATIONS"),
                    ("serviceConnectDefaults", "CONFIGURATIONS"),
                ] {
                    if !included(include) {
                        m.remove(field);
                    }
                }
                if included("ATTACHMENTS") {
                    m.insert("attachments".into(), json!([]));
                }
                if included("STATISTICS") {
                    m.insert("statistics".into(), self.cluster_statistics(name).await?);
                }
            }
            out.items_json.push(to_json(&v));
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

    pub(crate) async fn require_capacity_provider(
        &self,
        name: &str,
    ) -> ApiResult<CapacityProvider> {
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
            if committed(self.store.commit(w, None).await)? {
                return Ok(pb::ClusterResponse {
                    cluster_json: to_json(&self.cluster_view(&accepted.value).await?),
                    warnings: warnings(accepted.warnings),
                });
            }
        }
        Err(busy("the cluster"))
    }
}

/// A cluster's contents as its counts and statistics report them.
struct ClusterCounts {
    instances: usize,
    running: usize,
    pending: usize,
    services: usize,
    draining: usize,
}

//! Container instances: List, Describe, UpdateContainerInstancesState.

use super::*;

impl Api {
    pub(crate) async fn instances(
        &self,
        cluster: &str,
    ) -> ApiResult<Vec<(ContainerInstance, KeyValue)>> {
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
                // Under the agent's lease; the agent rewriting its registration meanwhile loses
                // the compare for one of us, and we read again.
                let w = Write::new()
                    .put_json_with_lease(&key, &c, kv.lease)
                    .if_unchanged(&key, kv.mod_revision);
                if committed(self.store.commit(w, None).await)? {
                    done = Some(c);
                    break;
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
}

//! Services: CreateService, UpdateService, DescribeServices, ListServices, DeleteService, deployments and ContinueServiceDeployment.

use super::*;

impl Api {
    pub(crate) async fn service_state(
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

    pub(crate) async fn describe_one(&self, cluster: &str, name: &str) -> ApiResult<Option<Value>> {
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
            spec.as_ref().map(|(s, kv)| (s, kv.mod_revision)),
            status.as_ref(),
            &events,
        )))
    }

    /// Checks what the service names exists; returns its task definition as `family:revision`.
    pub(crate) async fn check_service_refs(&self, s: &Service) -> ApiResult<String> {
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
    pub(crate) async fn active_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> ApiResult<(Service, KeyValue)> {
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
            let w = Write::new()
                .put_json(&key, &accepted.value)
                .if_unchanged(&key, kv.mod_revision);
            if !committed(self.store.commit(w, None).await)? {
                continue;
            }
            let doc = self
                .describe_one(&cluster, &name)
                .await?
                .unwrap_or_else(|| json!({}));
            return Ok(pb::ServiceResponse {
                service_json: doc.to_string(),
                warnings: warnings(accepted.warnings),
            });
        }
        Err(busy("the service"))
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
        let mut doc = describe_service(
            &cluster,
            &name,
            Some((&s, kv.mod_revision)),
            status.as_ref(),
            &[],
        );
        doc["status"] = json!(ServiceStatus::Draining);
        doc["desiredCount"] = json!(0);
        Ok(pb::ServiceResponse {
            service_json: doc.to_string(),
            warnings: Vec::new(),
        })
    }

    pub(crate) async fn deployments(
        &self,
        cluster: &str,
        service: &str,
    ) -> ApiResult<Vec<Deployment>> {
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

    /// The in-progress deployment `id` of a service (its in-progress PRIMARY when `id` is empty).
    async fn in_progress_deployment(
        &self,
        cluster: &str,
        name: &str,
        id: &str,
    ) -> ApiResult<Deployment> {
        self.active_service(cluster, name).await?;
        let deps = self.deployments(cluster, name).await?;
        let dep = if id.is_empty() {
            deps.into_iter().find(|d| {
                d.status == DeploymentStatus::Primary && d.rollout_state == RolloutState::InProgress
            })
        } else {
            deps.into_iter().find(|d| d.id == id)
        };
        let Some(dep) = dep else {
            return Err(ApiError::new(
                Exception::ServiceDeploymentNotFound,
                format!(
                    "no {} deployment of service {name}",
                    if id.is_empty() { "in-progress" } else { id }
                ),
            ));
        };
        if dep.rollout_state != RolloutState::InProgress || dep.status != DeploymentStatus::Primary
        {
            return Err(ApiError::invalid(format!(
                "deployment {} is not in progress",
                dep.id
            )));
        }
        Ok(dep)
    }

    /// Checks a request for the deployer and writes it under the deployment's key.
    async fn request_deployment(
        &self,
        cluster: &str,
        name: &str,
        dep: &Deployment,
        body: Value,
    ) -> ApiResult<()> {
        let mut body = body;
        if let Value::Object(m) = &mut body {
            m.retain(|_, v| !v.is_null());
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let accepted = accept::<ContinueDeploymentRequest>(&bytes)?;
        let key = self.keys().continue_deployment(cluster, name, &dep.id);
        self.store.put_json(&key, &accepted.value).await?;
        Ok(())
    }

    /// ContinueServiceDeployment: writes the request key the deployer consumes.
    pub async fn continue_service_deployment(
        &self,
        req: pb::ContinueServiceDeploymentRequest,
    ) -> ApiResult<pb::ContinueServiceDeploymentResponse> {
        let cluster = cluster_or_default(&req.cluster).to_string();
        let name = name_of(&req.service).to_string();
        let dep = self
            .in_progress_deployment(&cluster, &name, &req.deployment_id)
            .await?;
        let body = json!({
            "action": if req.action.is_empty() { "CONTINUE" } else { req.action.as_str() },
            "hookId": if req.hook_id.is_empty() { Value::Null } else { json!(req.hook_id) },
        });
        self.request_deployment(&cluster, &name, &dep, body).await?;
        Ok(pb::ContinueServiceDeploymentResponse {
            deployment_id: dep.id,
        })
    }

    /// StopServiceDeployment: asks the deployer to roll the in-progress deployment back.
    pub async fn stop_service_deployment(
        &self,
        req: pb::StopServiceDeploymentRequest,
    ) -> ApiResult<pb::StopServiceDeploymentResponse> {
        let stop_type = if req.stop_type.is_empty() {
            "ROLLBACK"
        } else {
            req.stop_type.as_str()
        };
        if stop_type != "ROLLBACK" {
            return Err(ApiError::invalid(format!(
                "stopType must be ROLLBACK (Capstan stops a deployment by rolling it back), got {stop_type:?}"
            )));
        }
        let cluster = cluster_or_default(&req.cluster).to_string();
        let name = name_of(&req.service).to_string();
        let dep = self
            .in_progress_deployment(&cluster, &name, &req.deployment_id)
            .await?;
        let body = json!({"action": "ROLLBACK", "stopType": stop_type});
        self.request_deployment(&cluster, &name, &dep, body).await?;
        Ok(pb::StopServiceDeploymentResponse {
            deployment_id: dep.id,
        })
    }
}

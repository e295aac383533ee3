//! Capacity providers: CreateCapacityProvider, DescribeCapacityProviders, UpdateCapacityProvider,
//! DeleteCapacityProvider.

use capstan_core::capacity::NodeGroupProviderUpdate;

use super::*;

impl Api {
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
    pub(crate) async fn describe_named<T: DeserializeOwned + Serialize>(
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

    /// UpdateCapacityProvider: the managed settings change, judged as a whole provider by the
    /// rules CreateCapacityProvider applies; the scaler acts on it when it sees the record.
    pub async fn update_capacity_provider(
        &self,
        req: pb::UpdateCapacityProviderRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let name = name_of(&req.capacity_provider);
        if name.is_empty() {
            return Err(ApiError::invalid("name is required"));
        }
        let update: NodeGroupProviderUpdate =
            capstan_core::parse_json(req.node_group_provider_json.as_bytes())?;
        if update.is_empty() {
            return Err(ApiError::invalid(
                "autoScalingGroupProvider must name managedScaling, managedTerminationProtection or managedDraining",
            ));
        }
        let key = self.keys().capacity_provider(name);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut cp, kv)) = self.get::<CapacityProvider>(&key).await? else {
                return Err(ApiError::invalid(format!(
                    "The specified capacity provider {name} does not exist."
                )));
            };
            update.clone().apply(&mut cp.node_group_provider);
            let accepted = accept::<CapacityProvider>(to_json(&cp).as_bytes())?;
            let w = Write::new()
                .put_json(&key, &accepted.value)
                .if_unchanged(&key, kv.mod_revision);
            if committed(self.store.commit(w, None).await)? {
                let mut v = serde_json::to_value(&accepted.value).unwrap_or_else(|_| json!({}));
                if let Value::Object(m) = &mut v {
                    m.insert("status".into(), json!("ACTIVE"));
                    m.insert("updateStatus".into(), json!("UPDATE_COMPLETE"));
                }
                return Ok(pb::DocumentResponse {
                    json: v.to_string(),
                    warnings: warnings(accepted.warnings),
                });
            }
        }
        Err(busy("the capacity provider"))
    }

    /// DeleteCapacityProvider: refused while a cluster lists it or a service's strategy names
    /// it. The commit is guarded on every cluster read, so a cluster that takes the provider
    /// meanwhile makes it fail.
    pub async fn delete_capacity_provider(
        &self,
        req: pb::DeleteCapacityProviderRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let name = name_of(&req.capacity_provider);
        if name.is_empty() {
            return Err(ApiError::invalid("capacityProvider is required"));
        }
        let key = self.keys().capacity_provider(name);
        let Some((cp, kv)) = self.get::<CapacityProvider>(&key).await? else {
            return Err(ApiError::invalid(format!(
                "The specified capacity provider {name} does not exist."
            )));
        };
        let clusters = self
            .list::<Cluster>(&self.keys().list(Family::Clusters, &[]))
            .await?;
        let users: Vec<&str> = clusters
            .iter()
            .filter(|(c, _)| c.capacity_providers.iter().any(|p| p == name))
            .map(|(c, _)| c.cluster_name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::new(
                Exception::ResourceInUse,
                format!(
                    "The specified capacity provider {name} is in use by cluster(s) {}; remove it with PutClusterCapacityProviders first.",
                    users.join(", ")
                ),
            ));
        }
        let services: Vec<String> = self
            .list::<Service>(&self.keys().list(Family::Services, &[]))
            .await?
            .into_iter()
            .filter(|(s, _)| {
                s.capacity_provider_strategy
                    .iter()
                    .any(|i| i.capacity_provider == name)
            })
            .map(|(s, _)| s.service_name)
            .collect();
        if !services.is_empty() {
            return Err(ApiError::new(
                Exception::ResourceInUse,
                format!(
                    "The specified capacity provider {name} is in use by service(s) {}; update their capacityProviderStrategy first.",
                    services.join(", ")
                ),
            ));
        }
        let mut w = Write::new()
            .delete(&key)
            .if_unchanged(&key, kv.mod_revision);
        for (_, ckv) in &clusters {
            w = w.if_unchanged(&ckv.key, ckv.mod_revision);
        }
        match self.store.commit(w, None).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::new(
                    Exception::Client,
                    format!(
                        "capacity provider {name} or a cluster changed while it was being deleted; try again"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let mut v = serde_json::to_value(&cp).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("status".into(), json!("INACTIVE"));
            m.insert("updateStatus".into(), json!("DELETE_COMPLETE"));
        }
        Ok(pb::DocumentResponse {
            json: v.to_string(),
            warnings: Vec::new(),
        })
    }
}

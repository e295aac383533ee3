//! Load balancing: target groups, their health, listeners.

use super::*;

impl Api {
    pub(crate) fn target_group_not_found(name: &str) -> ApiError {
        ApiError::new(
            Exception::TargetGroupNotFound,
            format!(
                "One or more target groups not found: {name}. Create it with CreateTargetGroup."
            ),
        )
    }

    pub(crate) async fn require_target_group(&self, name: &str) -> ApiResult<TargetGroup> {
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
}

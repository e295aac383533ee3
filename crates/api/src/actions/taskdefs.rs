//! Task definitions: RegisterTaskDefinition, Describe, List, ListFamilies, Deregister.

use super::*;

impl Api {
    /// RegisterTaskDefinition: the family's next revision, allocated with a create-if-absent
    /// transaction so concurrent callers get distinct consecutive revisions.
    pub async fn register_task_definition(
        &self,
        req: pb::RegisterTaskDefinitionRequest,
    ) -> ApiResult<pb::TaskDefinitionResponse> {
        let accepted = accept::<TaskDefinition>(req.task_definition_json.as_bytes())?;
        let mut td = accepted.value;
        // The account's default delivery mode is resolved now, so a revision keeps the mode it
        // was registered with (visible in DescribeTaskDefinition) whatever the setting becomes.
        if let Some(mode) = self.default_log_driver_mode().await? {
            capstan_core::settings::apply_default_log_mode(&mut td, &mode);
        }
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
            let w = Write::new().put_json(&key, &td).if_absent(&key);
            if !committed(self.store.commit(w, None).await)? {
                // Another caller took this revision; spread retries a little.
                let jitter = (uuid::Uuid::new_v4().as_u128() % 5) as u64 + attempt as u64 % 5;
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                continue;
            }
            return Ok(pb::TaskDefinitionResponse {
                task_definition_json: to_json(&td),
                warnings: warnings(accepted.warnings),
            });
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

    pub(crate) async fn all_task_definitions(
        &self,
        family: &str,
    ) -> ApiResult<Vec<TaskDefinition>> {
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

    pub(crate) fn status_filter(status: &str) -> ApiResult<Option<TaskDefinitionStatus>> {
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
}

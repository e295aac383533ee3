//! Capacity providers: CreateCapacityProvider, DescribeCapacityProviders.

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
}

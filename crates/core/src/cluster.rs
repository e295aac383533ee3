//! Clusters in the shape of ECS's `CreateCluster` input.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Tag;
use crate::capacity::{CapacityProviderStrategyItem, validate_capacity_provider_strategy};
use crate::validate::{Issue, Report, ValidationError, check_name, index};

/// Most capacity providers one cluster may list.
pub const MAX_CAPACITY_PROVIDERS: usize = 20;

/// A cluster spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Cluster {
    /// Name; `default` when created without one.
    pub cluster_name: String,
    /// Capacity providers associated with the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capacity_providers: Vec<String>,
    /// Strategy used when a service or RunTask names none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    /// Up to 50 tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// ACTIVE, or INACTIVE once deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_connect_defaults: Option<Value>,
}

impl Cluster {
    /// Validates against ECS's rules; returns warnings for kept-but-ignored fields.
    pub fn validate(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        check_name(&mut r, "clusterName", &self.cluster_name);
        if self.capacity_providers.len() > MAX_CAPACITY_PROVIDERS {
            r.error(
                "capacityProviders",
                format!("at most {MAX_CAPACITY_PROVIDERS} capacity providers per cluster"),
            );
        }
        for (i, cp) in self.capacity_providers.iter().enumerate() {
            check_name(&mut r, &index("", "capacityProviders", i), cp);
        }
        if !self.default_capacity_provider_strategy.is_empty() {
            validate_capacity_provider_strategy(
                &mut r,
                "defaultCapacityProviderStrategy",
                &self.default_capacity_provider_strategy,
            );
            for (i, item) in self.default_capacity_provider_strategy.iter().enumerate() {
                if !self.capacity_providers.contains(&item.capacity_provider) {
                    r.error(
                        index("", "defaultCapacityProviderStrategy", i),
                        format!(
                            "capacity provider {:?} is not associated with the cluster; add it to capacityProviders",
                            item.capacity_provider
                        ),
                    );
                }
            }
        }
        if self.tags.len() > 50 {
            r.error("tags", "at most 50 tags are allowed");
        }
        r.ignored("settings", self.settings.is_some());
        r.ignored("configuration", self.configuration.is_some());
        r.ignored(
            "serviceConnectDefaults",
            self.service_connect_defaults.is_some(),
        );
        r.finish()
    }
}

//! The scaler's IO: calls to node-group providers (one channel per endpoint) and fenced etcd
//! writes — DRAINING marks and status documents. It decides nothing.

use capstan_core::capacity::CapacityProviderStatusDoc;
use capstan_core::capacity::NodeGroupProvider;
use capstan_core::instance::InstanceStatus;
use capstan_proto::nodegroup::v1 as pb;
use capstan_proto::nodegroup::v1::node_group_provider_client::NodeGroupProviderClient;
use capstan_proto::tls::{Channels, TlsFiles};
use capstan_store::{Claim, Store, StoreError, Write};
use tonic::transport::Channel;

use crate::snapshot::{Caches, Registered};

/// The scaler's writer and caller.
pub struct Executor {
    /// The store.
    pub store: Store,
    /// Caches (for the status documents as written).
    pub caches: Caches,
    channels: Channels,
}

impl Executor {
    /// An executor writing through `store`, calling providers with `tls` when set.
    pub fn new(store: Store, caches: Caches, tls: Option<TlsFiles>) -> Self {
        Self {
            store,
            caches,
            channels: Channels::new(tls),
        }
    }

    fn client(&self, endpoint: &str) -> Result<NodeGroupProviderClient<Channel>, String> {
        self.channels
            .get(endpoint)
            .map(NodeGroupProviderClient::new)
            .map_err(|e| format!("node-group provider {endpoint}: {e}"))
    }

    /// The node group as its provider describes it; a failure is the message to show.
    pub async fn describe(
        &self,
        ng: &NodeGroupProvider,
    ) -> Result<pb::DescribeGroupResponse, String> {
        let mut c = self.client(&ng.endpoint)?;
        let r = c
            .describe_group(pb::DescribeGroupRequest {
                group_id: ng.group_id.clone(),
            })
            .await;
        r.map(tonic::Response::into_inner).map_err(|s| {
            self.channels.forget(&ng.endpoint);
            format!("node-group provider {}: {}", ng.endpoint, s.message())
        })
    }

    /// Sets the group's desired capacity (a value, never an increment); returns what it holds.
    pub async fn set_desired(&self, ng: &NodeGroupProvider, to: u32) -> Result<u32, String> {
        let mut c = self.client(&ng.endpoint)?;
        let req = pb::SetDesiredCapacityRequest {
            group_id: ng.group_id.clone(),
            desired_capacity: to,
        };
        match c.set_desired_capacity(req).await {
            Ok(r) => Ok(r.into_inner().desired_capacity),
            Err(s) => Err(format!("SetDesiredCapacity: {}", s.message())),
        }
    }

    /// Terminates the group's instances `ids`; returns the desired capacity it then holds.
    pub async fn terminate(&self, ng: &NodeGroupProvider, ids: &[String]) -> Result<u32, String> {
        let mut c = self.client(&ng.endpoint)?;
        let req = pb::TerminateInstancesRequest {
            group_id: ng.group_id.clone(),
            instance_ids: ids.to_vec(),
        };
        match c.terminate_instances(req).await {
            Ok(r) => Ok(r.into_inner().desired_capacity),
            Err(s) => Err(format!("TerminateInstances: {}", s.message())),
        }
    }

    /// Marks a registered instance DRAINING for scale-in, fenced and compared (the agent's lease
    /// kept). Losing the compare (the agent re-registered meanwhile) is fine: the next round
    /// decides again.
    pub async fn drain(
        &self,
        claim: &Claim,
        provider: &str,
        registered: &Registered,
    ) -> Result<(), StoreError> {
        let (key, doc, lease, rev) = registered;
        let mut doc = doc.clone();
        doc.status = InstanceStatus::Draining;
        doc.status_reason = Some(format!(
            "Draining for scale-in by capacity provider {provider}"
        ));
        let w = Write::new()
            .put_json_with_lease(key, &doc, *lease)
            .if_unchanged(key, *rev);
        match self.store.commit(w, Some(claim)).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Puts a status document when it changed (ignoring `updatedAt`).
    pub async fn put_status(
        &self,
        claim: &Claim,
        provider: &str,
        doc: CapacityProviderStatusDoc,
        now: f64,
    ) -> Result<(), StoreError> {
        let keys = self.store.keys();
        let old = self.caches.status_of(keys, provider);
        let key = keys.capacity_provider_status(provider);
        self.store
            .put_status_if_changed(&key, old.as_ref(), doc, now, Some(claim))
            .await?;
        Ok(())
    }

    /// Deletes the status document of a provider that no longer exists.
    pub async fn delete_status(&self, claim: &Claim, provider: &str) -> Result<(), StoreError> {
        let key = self.store.keys().capacity_provider_status(provider);
        if self.caches.status.get(&key).is_some() {
            self.store
                .commit(Write::new().delete(&key), Some(claim))
                .await?;
        }
        Ok(())
    }
}

//! Registration: the agent's container instance under `/capstan/containerinstances/<cluster>/<id>`,
//! bound to a lease it keeps alive, rewritten when its tasks change, and written again after an
//! etcd outage. A DRAINING status set by others is never overwritten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_core::instance::{Attribute, ContainerInstance, InstanceStatus, Resource, VersionInfo};
use capstan_core::task::{DesiredStatus, TaskStatus};
use capstan_store::{KeptLease, Store, StoreError, Write};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::model::{TaskRecord, now};

/// Ports ECS's agent reserves by default.
pub const RESERVED_PORTS: [u32; 5] = [22, 2375, 2376, 51678, 51679];

/// What this instance offers.
#[derive(Debug, Clone)]
pub struct Resources {
    /// CPU units.
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
    /// Attributes, by name.
    pub attributes: BTreeMap<String, String>,
}

impl Resources {
    /// Registered and remaining resources, given the tasks on this instance.
    pub fn compute(&self, tasks: &[TaskRecord]) -> (Vec<Resource>, Vec<Resource>) {
        let live: Vec<&TaskRecord> = tasks.iter().filter(|t| !t.is_stopped()).collect();
        let cpu: i64 = live
            .iter()
            .map(|t| i64::from(t.task_definition.reserved_cpu()))
            .sum();
        let mem: i64 = live
            .iter()
            .map(|t| i64::from(t.task_definition.reserved_memory()))
            .sum();
        let reserved: Vec<String> = RESERVED_PORTS.iter().map(u32::to_string).collect();
        let mut used = reserved.clone();
        for t in &live {
            for c in &t.task_definition.container_definitions {
                used.extend(
                    c.port_mappings
                        .iter()
                        .filter_map(|p| p.static_host_port())
                        .map(|p| p.to_string()),
                );
            }
        }
        let registered = vec![
            Resource::integer("CPU", self.cpu),
            Resource::integer("MEMORY", self.memory),
            Resource::string_set("PORTS", reserved),
            Resource::string_set("PORTS_UDP", Vec::new()),
        ];
        let remaining = vec![
            Resource::integer("CPU", self.cpu - cpu),
            Resource::integer("MEMORY", self.memory - mem),
            Resource::string_set("PORTS", used),
            Resource::string_set("PORTS_UDP", Vec::new()),
        ];
        (registered, remaining)
    }
}

/// Everything the registration needs.
pub struct Registration {
    /// The store.
    pub store: Store,
    /// The agent.
    pub agent: Arc<Agent>,
    /// Instance id.
    pub instance_id: String,
    /// Endpoint controllers dial.
    pub endpoint: String,
    /// Lease TTL, seconds.
    pub ttl: i64,
    /// Offered resources and attributes.
    pub resources: Arc<Resources>,
    /// Runtime version.
    pub runtime_version: String,
    /// Set to true once registered, false while not.
    pub registered: watch::Sender<bool>,
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

impl Registration {
    fn key(&self) -> String {
        self.store
            .keys()
            .container_instance(self.agent.cluster(), &self.instance_id)
    }

    fn document(
        &self,
        status: InstanceStatus,
        version: u64,
        registered_at: Option<f64>,
    ) -> ContainerInstance {
        let tasks = self.agent.records();
        let (registered, remaining) = self.resources.compute(&tasks);
        let running = tasks
            .iter()
            .filter(|t| !t.is_stopped() && t.desired_status == DesiredStatus::Running)
            .count();
        let pending = tasks
            .iter()
            .filter(|t| !t.is_stopped() && t.last_status < TaskStatus::Running)
            .count();
        ContainerInstance {
            container_instance_arn: format!(
                "arn:capstan:ecs:local:000000000000:container-instance/{}/{}",
                self.agent.cluster(),
                self.instance_id
            ),
            ec2_instance_id: hostname(),
            agent_endpoint: self.endpoint.clone(),
            capacity_provider_name: self
                .resources
                .attributes
                .get("capstan.capacity-provider")
                .cloned(),
            version,
            version_info: VersionInfo {
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                docker_version: Some(self.runtime_version.clone()),
            },
            registered_resources: registered,
            remaining_resources: remaining,
            status,
            status_reason: None,
            agent_connected: true,
            running_tasks_count: u32::try_from(running).unwrap_or(u32::MAX),
            pending_tasks_count: u32::try_from(pending).unwrap_or(u32::MAX),
            attributes: self
                .resources
                .attributes
                .iter()
                .map(|(k, v)| Attribute {
                    name: k.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
            registered_at: registered_at.or(Some(now())),
            tags: Vec::new(),
        }
    }

    /// Writes the registration bound to `lease`, keeping a status others set (DRAINING).
    async fn write(&self, lease: i64, status: &mut InstanceStatus) -> Result<(), StoreError> {
        let key = self.key();
        for _ in 0..5 {
            let existing = self.store.get(&key).await?;
            let (mod_rev, version, registered_at) = match &existing {
                Some(kv) => match kv.json::<ContainerInstance>() {
                    Ok(ci) => {
                        // The stored status wins: users and the scaler drain and re-activate.
                        *status = ci.status;
                        (kv.mod_revision, ci.version, ci.registered_at)
                    }
                    Err(_) => (kv.mod_revision, 0, None),
                },
                None => (0, 0, None),
            };
            let doc = self.document(*status, version + 1, registered_at);
            let w = Write::new()
                .put_json_with_lease(&key, &doc, lease)
                .if_unchanged(&key, mod_rev);
            match self.store.commit(w, None).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict { keys: key })
    }

    /// Registers and keeps the registration current until `cancel`. On cancel the key is left
    /// to expire with its lease, so a quick agent restart keeps the instance registered.
    pub async fn run(self, cancel: CancellationToken) {
        // Remembered across lease losses, so a drain survives an etcd outage.
        let mut status = InstanceStatus::Active;
        let pause = Duration::from_millis(500);
        while !cancel.is_cancelled() {
            let lease = match KeptLease::grant(&self.store, self.ttl, &cancel).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "registration: cannot grant a lease; retrying");
                    let _ = self.registered.send(false);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            loop {
                match self.write(lease.id, &mut status).await {
                    Ok(()) => {
                        let _ = self.registered.send(true);
                    }
                    Err(e) => tracing::warn!(error = %e, "registration: write failed; retrying"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = lease.lost.cancelled() => {
                        tracing::warn!("registration: lease lost; registering again");
                        let _ = self.registered.send(false);
                        break;
                    }
                    _ = self.agent.changed() => {
                        // Coalesce bursts of task changes into one write.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use capstan_core::taskdef::{ContainerDefinition, PortMapping};

    use super::*;

    #[test]
    fn remaining_resources_subtract_live_tasks_only() {
        let res = Resources {
            cpu: 2048,
            memory: 4096,
            attributes: BTreeMap::new(),
        };
        let td = capstan_core::TaskDefinition {
            family: "web".into(),
            container_definitions: vec![ContainerDefinition {
                name: "app".into(),
                image: "i".into(),
                cpu: Some(256),
                memory: Some(512),
                port_mappings: vec![PortMapping {
                    container_port: Some(80),
                    host_port: Some(8080),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let live = TaskRecord::new("a".into(), "c".into(), "web:1".into(), td.clone(), None);
        let mut stopped = TaskRecord::new("b".into(), "c".into(), "web:1".into(), td, None);
        stopped.last_status = TaskStatus::Stopped;
        let (_, remaining) = res.compute(&[live, stopped]);
        assert_eq!(remaining[0].integer_value, Some(1792));
        assert_eq!(remaining[1].integer_value, Some(3584));
        assert!(remaining[2].string_set_value.contains(&"8080".to_string()));
        assert!(remaining[2].string_set_value.contains(&"22".to_string()));
    }
}

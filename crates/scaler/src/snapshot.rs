//! From the watch caches (and the node group its provider describes) to the scaling planner's
//! input: reads only, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use capstan_core::capacity::CapacityProviderStatusDoc;
use capstan_core::instance::InstanceStatus;
use capstan_core::service::SchedulingStrategy;
use capstan_core::task::{DesiredStatus, TaskStatus, last_segment};
use capstan_core::{CapacityProvider, ContainerInstance, Keys, Service, Task};
use capstan_plan::scaling::{GroupInstance, Need, Scaling, ScalingInput};
use capstan_plan::scheduling::PROVIDER_ATTRIBUTE;
use capstan_proto::nodegroup::v1 as pb;
use capstan_store::Cache;

/// The scaler's caches.
#[derive(Clone)]
pub struct Caches {
    /// Capacity provider specs.
    pub providers: Cache<CapacityProvider>,
    /// Container instances of every cluster.
    pub instances: Cache<ContainerInstance>,
    /// Tasks of every cluster.
    pub tasks: Cache<Task>,
    /// Service specs, to tell daemon tasks apart.
    pub services: Cache<Service>,
    /// Its own status documents (the scale-in evaluation clock survives a leader change).
    pub status: Cache<CapacityProviderStatusDoc>,
}

impl Caches {
    /// Whether every cache has its first list.
    pub fn ready(&self) -> bool {
        self.providers.is_ready()
            && self.instances.is_ready()
            && self.tasks.is_ready()
            && self.services.is_ready()
            && self.status.is_ready()
    }

    /// A provider's last status document, if it decodes.
    pub fn status_of(&self, keys: &Keys, provider: &str) -> Option<CapacityProviderStatusDoc> {
        self.status
            .get(&keys.capacity_provider_status(provider))
            .and_then(|e| e.value.as_ref().ok().cloned())
    }
}

/// A registered instance: its key, document, lease and mod revision (to drain it fenced and
/// compared, keeping the agent's lease).
pub type Registered = (String, ContainerInstance, i64, i64);

/// Container instances of `provider`, by id.
pub fn provider_instances(caches: &Caches, provider: &str) -> HashMap<String, Registered> {
    caches
        .instances
        .list()
        .iter()
        .filter_map(|e| {
            let ci = e.value.as_ref().ok()?;
            (ci.attribute(PROVIDER_ATTRIBUTE) == Some(provider)).then(|| {
                (
                    last_segment(&e.key).to_string(),
                    (e.key.clone(), ci.clone(), e.lease, e.mod_revision),
                )
            })
        })
        .collect()
}

/// Tasks per instance (all, non-daemon) and the PROVISIONING tasks waiting for `provider`.
pub fn task_counts(
    caches: &Caches,
    keys: &capstan_core::Keys,
    provider: &str,
) -> (HashMap<String, (u32, u32)>, Vec<Need>) {
    let daemons: HashSet<(String, String)> = caches
        .services
        .list()
        .iter()
        .filter_map(|e| {
            let s = e.value.as_ref().ok()?;
            let key = keys.service_of(&e.key)?;
            (s.scheduling_strategy() == SchedulingStrategy::Daemon)
                .then(|| (key.cluster, s.task_group()))
        })
        .collect();
    let mut per_instance: HashMap<String, (u32, u32)> = HashMap::new();
    let mut waiting = Vec::new();
    for e in caches.tasks.list() {
        let Ok(t) = &e.value else { continue };
        if t.last_status == TaskStatus::Stopped {
            continue;
        }
        if t.last_status == TaskStatus::Provisioning && t.container_instance_arn.is_none() {
            if t.desired_status == DesiredStatus::Running
                && t.capacity_provider_name.as_deref() == Some(provider)
            {
                let num = |v: &Option<String>| {
                    v.as_deref()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(0)
                };
                waiting.push(Need {
                    cpu: num(&t.cpu),
                    memory: num(&t.memory),
                });
            }
            continue;
        }
        let Some(ci) = t.instance_id() else {
            continue;
        };
        let cluster = keys.cluster_of(&e.key).unwrap_or_default();
        let daemon = t
            .group
            .as_ref()
            .is_some_and(|g| daemons.contains(&(cluster, g.clone())));
        let c = per_instance.entry(ci.to_string()).or_default();
        c.0 += 1;
        if !daemon {
            c.1 += 1;
        }
    }
    (per_instance, waiting)
}

/// The scaler's input for one provider from its group (as the provider described it) and the
/// caches.
pub fn scaling_input(
    ng: &capstan_core::capacity::NodeGroupProvider,
    group: &pb::DescribeGroupResponse,
    instances: &HashMap<String, Registered>,
    per_instance: &HashMap<String, (u32, u32)>,
    provisioning: Vec<Need>,
    empty_since: BTreeMap<String, f64>,
) -> ScalingInput {
    ScalingInput {
        scaling: Scaling::of(ng),
        min_size: group.min_size,
        max_size: group.max_size,
        desired: group.desired_capacity,
        instance: Need {
            cpu: group.instance_cpu,
            memory: group.instance_memory,
        },
        instances: group
            .instances
            .iter()
            .map(|i| {
                let ci = Some(i.container_instance_id.clone())
                    .filter(|c| !c.is_empty() && instances.contains_key(c));
                let (all, busy) = ci
                    .as_ref()
                    .and_then(|c| per_instance.get(c).copied())
                    .unwrap_or((0, 0));
                GroupInstance {
                    id: i.instance_id.clone(),
                    draining: ci
                        .as_ref()
                        .and_then(|c| instances.get(c))
                        .is_some_and(|(_, d, _, _)| d.status == InstanceStatus::Draining),
                    container_instance: ci,
                    launched_at: i.launched_at_ms as f64 / 1000.0,
                    busy_tasks: busy,
                    all_tasks: all,
                    terminating: i.state == pb::InstanceState::Terminating as i32,
                }
            })
            .collect(),
        provisioning,
        empty_since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn group_instances_count_only_registered_ones_and_their_tasks() {
        let group = pb::DescribeGroupResponse {
            group_id: "g".into(),
            min_size: 0,
            max_size: 10,
            desired_capacity: 2,
            instances: vec![
                pb::Instance {
                    instance_id: "i1".into(),
                    container_instance_id: "ci1".into(),
                    state: pb::InstanceState::Running as i32,
                    launched_at_ms: 1_000,
                },
                pb::Instance {
                    instance_id: "i2".into(),
                    container_instance_id: "ci2".into(),
                    state: pb::InstanceState::Running as i32,
                    launched_at_ms: 2_000,
                },
            ],
            instance_cpu: 1024,
            instance_memory: 2048,
            capacity_provider: "cp".into(),
        };
        let mut registered = HashMap::new();
        registered.insert(
            "ci1".to_string(),
            (
                "k".to_string(),
                ContainerInstance {
                    status: InstanceStatus::Draining,
                    ..Default::default()
                },
                0,
                1,
            ),
        );
        let per = HashMap::from([("ci1".to_string(), (2, 1))]);
        let ng = capstan_core::capacity::NodeGroupProvider::default();
        let input = scaling_input(&ng, &group, &registered, &per, vec![], BTreeMap::new());
        assert_eq!(
            input.instances[0].container_instance.as_deref(),
            Some("ci1")
        );
        assert!(input.instances[0].draining);
        assert_eq!(
            (input.instances[0].all_tasks, input.instances[0].busy_tasks),
            (2, 1)
        );
        assert_eq!(
            input.instances[1].container_instance, None,
            "not registered yet"
        );
        assert!((input.instances[1].launched_at - 2.0).abs() < 1e-9);
        assert_eq!(input.scaling.target_capacity, 100);
    }
}

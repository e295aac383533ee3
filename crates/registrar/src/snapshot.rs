//! From the watch caches to the target planner's inputs: reads only, no clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use capstan_core::Keys;
use capstan_core::deployment::Deployment;
use capstan_core::instance::ContainerInstance;
use capstan_core::keys::Family;
use capstan_core::lb::{Listener, ListenerRoute, TargetGroup, TargetGroupStatusDoc};
use capstan_core::service::lb_object_name;
use capstan_core::task::Task;
use capstan_plan::targets::{self, Tracked, Wanted};
use capstan_store::Cache;

/// The caches the registrar reads.
#[derive(Clone)]
pub struct Caches {
    /// Target group specs (validated).
    pub groups: Cache<TargetGroup>,
    /// Deployments (their load balancers).
    pub deployments: Cache<Deployment>,
    /// Tasks.
    pub tasks: Cache<Task>,
    /// Container instances (their addresses).
    pub instances: Cache<ContainerInstance>,
    /// Target group status (its own).
    pub status: Cache<TargetGroupStatusDoc>,
    /// Listener specs.
    pub listeners: Cache<capstan_core::lb::Listener>,
    /// Listener routes (the deployer's).
    pub routes: Cache<capstan_core::lb::ListenerRoute>,
}

impl Caches {
    /// Whether every cache has its first list.
    pub fn ready(&self) -> bool {
        self.groups.is_ready()
            && self.deployments.is_ready()
            && self.tasks.is_ready()
            && self.instances.is_ready()
            && self.status.is_ready()
            && self.listeners.is_ready()
            && self.routes.is_ready()
    }

    /// A target group's spec, if it decodes.
    pub fn group(&self, keys: &Keys, tg: &str) -> Option<TargetGroup> {
        self.groups
            .get(&keys.target_group(tg))
            .and_then(|e| e.value.as_ref().ok().cloned())
    }

    /// A target group's last status document, if it decodes.
    pub fn status_of(&self, keys: &Keys, tg: &str) -> Option<TargetGroupStatusDoc> {
        self.status
            .get(&keys.target_group_status(tg))
            .and_then(|e| e.value.as_ref().ok().cloned())
    }
}

/// The host part of an agent endpoint (`http://10.0.0.1:7000` → `10.0.0.1`).
pub fn host_of_endpoint(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(':') || h.starts_with('[') => h,
        _ => authority,
    };
    let host = host.trim_matches(['[', ']']);
    // Only an address or a DNS name reaches HAProxy: anything else could inject.
    let dns = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (dns || host.parse::<std::net::IpAddr>().is_ok()).then(|| host.to_string())
}

/// The targets group `tg` should have: the tasks of the deployments that name it, at their
/// instances' addresses (or, while an instance is not registered, where they were served).
pub fn wanted(c: &Caches, keys: &Keys, tg: &str) -> Vec<Wanted> {
    let deployments: Vec<Deployment> = c
        .deployments
        .list()
        .iter()
        .filter_map(|e| e.value.as_ref().ok().cloned())
        .filter(|d| {
            d.load_balancers
                .iter()
                .any(|lb| lb.target_group_arn.as_deref().map(lb_object_name) == Some(tg))
        })
        .collect();
    let tasks: Vec<Task> = c
        .tasks
        .list()
        .iter()
        .filter_map(|e| e.value.as_ref().ok().cloned())
        .filter(|t| {
            deployments
                .iter()
                .any(|d| t.started_by.as_deref() == Some(d.id.as_str()))
        })
        .collect();
    let instances: HashMap<String, String> = c
        .instances
        .list()
        .iter()
        .filter_map(|e| {
            let ci = e.value.as_ref().ok()?;
            let id = e.key.rsplit('/').next()?.to_string();
            Some((id, host_of_endpoint(&ci.agent_endpoint)?))
        })
        .collect();
    let last: HashMap<String, String> = c
        .status_of(keys, tg)
        .map(|doc| {
            doc.targets
                .into_iter()
                .map(|t| (t.task_id, t.host))
                .collect()
        })
        .unwrap_or_default();
    targets::wanted(
        tg,
        &deployments,
        &tasks,
        |i| instances.get(i).cloned(),
        |t| last.get(t).cloned(),
    )
}

/// A group's targets as the leader last decided them (its status document): what every
/// load-balancer host serves, and where a new leader carries on from.
pub fn decided(c: &Caches, keys: &Keys, tg: &str) -> BTreeMap<String, Tracked> {
    c.status_of(keys, tg)
        .map(|doc| {
            doc.targets
                .into_iter()
                .map(|s| (s.task_id.clone(), Tracked::carried(s)))
                .collect()
        })
        .unwrap_or_default()
}

/// What HAProxy may be given: listeners (by name) and target group names whose specs decode
/// and whose names are valid, and the objects refused (key, why). A name that is not valid
/// never reaches HAProxy's configuration or runtime socket (a newline or `;` would inject).
pub struct Served {
    /// Listeners by name.
    pub listeners: Vec<(String, Listener)>,
    /// Target group names.
    pub groups: Vec<String>,
    /// Objects refused: (key, why).
    pub refused: Vec<(String, String)>,
    /// What to remember for the next pass.
    pub good: LastGood,
}

/// The last version of each listener and target group that decoded, by key: a document
/// overwritten with one that does not decode keeps being served as it was (static stability:
/// a bad edit is not a deletion), until it is fixed or deleted.
#[derive(Debug, Clone, Default)]
pub struct LastGood {
    /// Listeners.
    pub listeners: BTreeMap<String, Listener>,
    /// Target group keys.
    pub groups: std::collections::BTreeSet<String>,
}

fn name_problem(kind: &str, name: &str) -> Option<String> {
    (!capstan_core::lb::valid_lb_name(name)).then(|| {
        format!("{kind} name {name:?} is not valid (1-32 letters, digits and hyphens): not served")
    })
}

/// The listeners and target groups this host serves, and those it refuses; `last` is the
/// previous pass's [`Served::good`].
pub fn layout(c: &Caches, keys: &Keys, last: &LastGood) -> Served {
    let mut refused = Vec::new();
    let mut listeners = Vec::new();
    let mut good = LastGood::default();
    // The oldest listener on a port keeps it: one written later on the same port (the API
    // refuses it; etcdctl does not) would take part of its traffic.
    let mut entries = c.listeners.list();
    entries.sort_by_key(|e| e.create_revision);
    let mut taken: Vec<(Option<String>, u32, String)> = Vec::new();
    for e in entries {
        let Some(name) = keys.name_of(Family::Listeners, &e.key) else {
            continue;
        };
        if let Some(why) = name_problem("listener", &name) {
            refused.push((e.key.clone(), why));
            continue;
        }
        let l = match (&e.value, last.listeners.get(&e.key)) {
            (Ok(l), _) => l,
            (Err(why), Some(before)) => {
                refused.push((
                    e.key.clone(),
                    format!("does not decode, still served as last read: {why}"),
                ));
                before
            }
            (Err(why), None) => {
                refused.push((e.key.clone(), format!("not served: {why}")));
                continue;
            }
        };
        let bad_group = l
            .default_actions
            .iter()
            .flat_map(|a| a.weighted_target_groups())
            .find_map(|(g, _)| name_problem("target group", &g));
        if let Some(why) = bad_group {
            refused.push((e.key.clone(), format!("forwards to a {why}")));
            continue;
        }
        let holder = taken.iter().find(|(addr, port, _)| {
            *port == l.port
                && (addr.is_none() || l.bind_address.is_none() || *addr == l.bind_address)
        });
        if let Some((_, port, other)) = holder {
            refused.push((
                e.key.clone(),
                format!("port {port} is listener {other:?}'s: not served"),
            ));
            continue;
        }
        taken.push((l.bind_address.clone(), l.port, name.clone()));
        good.listeners.insert(e.key.clone(), l.clone());
        listeners.push((name, l.clone()));
    }
    listeners.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups = Vec::new();
    for e in c.groups.list() {
        let Some(name) = keys.name_of(Family::TargetGroups, &e.key) else {
            continue;
        };
        if let Some(why) = name_problem("target group", &name) {
            refused.push((e.key.clone(), why));
            continue;
        }
        if let Err(why) = &e.value {
            if !last.groups.contains(&e.key) {
                refused.push((e.key.clone(), format!("not served: {why}")));
                continue;
            }
            refused.push((
                e.key.clone(),
                format!("does not decode, still served as last read: {why}"),
            ));
        }
        good.groups.insert(e.key.clone());
        groups.push(name);
    }
    Served {
        listeners,
        groups,
        refused,
        good,
    }
}

/// The deployer's listener routes, by listener name.
pub fn routes(c: &Caches, keys: &Keys) -> BTreeMap<String, ListenerRoute> {
    c.routes
        .list()
        .iter()
        .filter_map(|e| {
            let name = keys.name_of(Family::ListenerRoutes, &e.key)?;
            Some((name, e.value.as_ref().ok()?.clone()))
        })
        .collect()
}

/// Groups named by the load balancers of `deployments`.
pub fn groups_of(deployments: &[Arc<capstan_store::Entry<Deployment>>]) -> Vec<String> {
    let mut out: Vec<String> = deployments
        .iter()
        .filter_map(|e| e.value.as_ref().ok())
        .flat_map(|d| d.load_balancers.iter())
        .filter_map(|lb| {
            lb.target_group_arn
                .as_deref()
                .map(|t| lb_object_name(t).to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_agent_endpoints() {
        assert_eq!(
            host_of_endpoint("http://10.0.0.1:7000").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            host_of_endpoint("https://node-1:7000/").as_deref(),
            Some("node-1")
        );
        assert_eq!(
            host_of_endpoint("http://[::1]:7000").as_deref(),
            Some("::1")
        );
        assert_eq!(
            host_of_endpoint("127.0.0.1:7000").as_deref(),
            Some("127.0.0.1")
        );
        for bad in [
            "http://10.0.0.1\nbackend x:7000",
            "http://a;b:7000",
            "http://a b:7000",
            "http://:7000",
        ] {
            assert_eq!(host_of_endpoint(bad), None, "{bad:?}");
        }
    }
}

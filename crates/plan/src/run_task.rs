//! RunTask's placement: where a one-off request's tasks go, once, never replaced.
//!
//! - With a capacity provider strategy, the count splits over the providers (`base`, then
//!   `weight`; [`crate::scaling::split`]) and each share is placed on its provider's instances;
//!   what does not fit waits in PROVISIONING for that provider, to be placed when the scaler adds
//!   capacity.
//! - Without one, the tasks are placed on any instance that passes the filters; those that fit
//!   nowhere fail with ECS's reason (`RESOURCE:CPU`, `RESOURCE:MEMORY`, `RESOURCE:PORTS`, `AGENT`,
//!   `MissingAttribute`) and a detail naming the closest instance.

use capstan_core::requests::RunTaskFailure;
use rand::Rng;

use crate::placement::{self, Constraint, Demand, Instance, Reason, Strategy};
use crate::scaling::{Share, split};
use crate::scheduling::place_on;

/// One RunTask request, as placement sees it.
#[derive(Debug, Clone)]
pub struct Input {
    /// Tasks asked for.
    pub count: u32,
    /// What one task needs (overrides applied).
    pub demand: Demand,
    /// Placement constraints (the request's and the task definition's).
    pub constraints: Vec<Constraint>,
    /// Placement strategies.
    pub strategies: Vec<Strategy>,
    /// Capacity provider strategy; empty: plain placement.
    pub shares: Vec<Share>,
    /// The cluster's instances with what they hold.
    pub instances: Vec<Instance>,
}

/// Where the tasks go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The instance of each task to start now, in order.
    pub placed: Vec<String>,
    /// The capacity provider of each task to record PROVISIONING.
    pub waiting: Vec<String>,
    /// A failure per task that could not be placed.
    pub failures: Vec<RunTaskFailure>,
}

/// ECS's failure reason for what stopped the closest instance.
pub fn failure_reason(r: Option<&Reason>) -> &'static str {
    match r {
        Some(Reason::Cpu) => "RESOURCE:CPU",
        Some(Reason::Memory) => "RESOURCE:MEMORY",
        Some(Reason::Ports) => "RESOURCE:PORTS",
        Some(Reason::AgentDisconnected) => "AGENT",
        Some(Reason::NotActive) => "NO ACTIVE INSTANCES",
        Some(Reason::DistinctInstance | Reason::MemberOf(_)) => "MissingAttribute",
        None => "NO ACTIVE INSTANCES",
    }
}

/// `n` failures with the same reason and detail.
pub fn failures(n: u32, reason: &str, detail: String) -> Vec<RunTaskFailure> {
    (0..n)
        .map(|_| RunTaskFailure {
            reason: reason.to_string(),
            detail: detail.clone(),
        })
        .collect()
}

/// Places one RunTask request's tasks (`now` is not needed: placement has no clock).
pub fn plan<R: Rng + ?Sized>(input: &Input, _now: f64, rng: &mut R) -> Plan {
    let mut views = input.instances.clone();
    let mut out = Plan::default();
    let rules = (&input.constraints[..], &input.strategies[..]);
    if !input.shares.is_empty() {
        for (share, n) in input.shares.iter().zip(split(input.count, &input.shares)) {
            let p = place_on(
                &mut views,
                &share.provider,
                &input.demand,
                n as usize,
                rules,
                rng,
            );
            let placed = p.placed.len() as u32;
            out.placed.extend(p.placed);
            out.waiting
                .extend((placed..n).map(|_| share.provider.clone()));
        }
        return out;
    }
    let p = placement::place(
        &mut views,
        &input.demand,
        input.count as usize,
        &input.constraints,
        &input.strategies,
        rng,
    );
    let unplaced = input.count - p.placed.len() as u32;
    if let Some(f) = &p.failure
        && unplaced > 0
    {
        let detail = match &f.closest {
            Some((inst, reason)) => format!(
                "The closest matching container-instance {inst} {}",
                reason.phrase()
            ),
            None => "No Container Instances were found in your cluster.".into(),
        };
        out.failures = failures(
            unplaced,
            failure_reason(f.closest.as_ref().map(|(_, r)| r)),
            detail,
        );
    }
    out.placed = p.placed;
    out
}

/// A one-off task waiting in PROVISIONING for its capacity provider.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Task id.
    pub task: String,
    /// The provider it waits for.
    pub provider: String,
    /// What it needs.
    pub demand: Demand,
    /// Its task definition's constraints.
    pub constraints: Vec<Constraint>,
}

/// Places the waiting one-off tasks, in order, where their providers now have room (the default
/// strategies; a request's own are not kept on the task). Returns (task, instance) for each
/// placed one; the rest keep waiting.
pub fn place_waiting<R: Rng + ?Sized>(
    waiting: &[Waiting],
    instances: &[Instance],
    _now: f64,
    rng: &mut R,
) -> Vec<(String, String)> {
    let mut views = instances.to_vec();
    let strategies = placement::default_strategies();
    waiting
        .iter()
        .filter_map(|w| {
            let p = place_on(
                &mut views,
                &w.provider,
                &w.demand,
                1,
                (&w.constraints, &strategies),
                rng,
            );
            p.placed.into_iter().next().map(|i| (w.task.clone(), i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::scheduling::PROVIDER_ATTRIBUTE;

    fn instance(id: &str, cpu: i64, provider: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            active: true,
            agent_connected: true,
            attributes: provider
                .map(|p| BTreeMap::from([(PROVIDER_ATTRIBUTE.to_string(), p.to_string())]))
                .unwrap_or_default(),
            agent_version: String::new(),
            registered_at: None,
            remaining_cpu: cpu,
            remaining_memory: 4096,
            used_ports: BTreeSet::new(),
            groups: Vec::new(),
        }
    }

    fn input(count: u32, instances: Vec<Instance>, shares: Vec<Share>) -> Input {
        Input {
            count,
            demand: Demand {
                cpu: 512,
                memory: 256,
                ports: Vec::new(),
                group: "family:job".into(),
            },
            constraints: Vec::new(),
            strategies: placement::default_strategies(),
            shares,
            instances,
        }
    }

    fn run(i: &Input) -> Plan {
        plan(i, 0.0, &mut StdRng::seed_from_u64(7))
    }

    #[test]
    fn what_fits_is_placed_and_the_rest_fails_naming_the_closest_instance() {
        let p = run(&input(3, vec![instance("i-1", 1024, None)], vec![]));
        assert_eq!(p.placed, ["i-1", "i-1"]);
        assert_eq!(p.failures.len(), 1);
        assert_eq!(p.failures[0].reason, "RESOURCE:CPU");
        assert!(p.failures[0].detail.contains("i-1"), "{:?}", p.failures);
        let none = run(&input(2, vec![], vec![]));
        assert_eq!(none.failures.len(), 2);
        assert_eq!(
            none.failures[0].detail,
            "No Container Instances were found in your cluster."
        );
        assert!(none.waiting.is_empty());
    }

    #[test]
    fn waiting_tasks_take_the_room_their_provider_now_has_in_order() {
        let demand = input(1, vec![], vec![]).demand;
        let w = |task: &str, provider: &str| Waiting {
            task: task.into(),
            provider: provider.into(),
            demand: demand.clone(),
            constraints: Vec::new(),
        };
        let instances = vec![instance("ia", 1024, Some("a")), instance("ix", 4096, None)];
        let placed = place_waiting(
            &[w("t1", "a"), w("t2", "a"), w("t3", "a"), w("t4", "b")],
            &instances,
            0.0,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(
            placed,
            [
                ("t1".to_string(), "ia".to_string()),
                ("t2".into(), "ia".into())
            ],
            "two fit on a's instance; b has none; the instance of no provider is not used"
        );
    }

    #[test]
    fn with_providers_each_share_goes_to_its_instances_and_the_rest_waits() {
        let shares = vec![
            Share {
                provider: "a".into(),
                base: 1,
                weight: 1,
            },
            Share {
                provider: "b".into(),
                base: 0,
                weight: 1,
            },
        ];
        // 5 tasks: a gets 1 + 2, b gets 2; a has room for one, b for none.
        let instances = vec![
            instance("ia", 512, Some("a")),
            instance("ib", 256, Some("b")),
        ];
        let p = run(&input(5, instances, shares));
        assert_eq!(p.placed, ["ia"]);
        assert_eq!(p.waiting, ["a", "a", "b", "b"]);
        assert!(p.failures.is_empty(), "waiting is not failing");
    }
}

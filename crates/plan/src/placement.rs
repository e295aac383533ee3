//! Task placement, as ECS does it: filter the instances (ACTIVE with a connected agent, placement
//! constraints, CPU, memory, ports), then rank the rest by the placement strategies in order —
//! each strategy breaking the ties left by the ones before it, a seeded RNG breaking the rest.
//! Every placement updates the instance's remaining resources before the next one.

use std::collections::{BTreeMap, BTreeSet};

use capstan_core::service::{
    PlacementConstraint, PlacementConstraintType, PlacementStrategy, PlacementStrategyType,
};
use capstan_core::taskdef::TaskDefinitionPlacementConstraint;
use rand::{Rng, RngExt};

use crate::query::{self, Expr, Facts, QueryError};

/// A container instance as placement sees it.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    /// Container instance id.
    pub id: String,
    /// Status is ACTIVE (not DRAINING).
    pub active: bool,
    /// Its agent is connected.
    pub agent_connected: bool,
    /// Attributes by name.
    pub attributes: BTreeMap<String, String>,
    /// Agent version.
    pub agent_version: String,
    /// Registration time, epoch seconds.
    pub registered_at: Option<f64>,
    /// CPU units not reserved.
    pub remaining_cpu: i64,
    /// MiB not reserved.
    pub remaining_memory: i64,
    /// Host ports in use (reserved and static task ports).
    pub used_ports: BTreeSet<u32>,
    /// Task group of every live task on it, one entry per task.
    pub groups: Vec<String>,
}

impl Instance {
    fn group_count(&self, group: &str) -> usize {
        self.groups.iter().filter(|g| *g == group).count()
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            instance_id: &self.id,
            attributes: &self.attributes,
            agent_connected: self.agent_connected,
            agent_version: &self.agent_version,
            registered_at: self.registered_at,
            running_tasks_count: u32::try_from(self.groups.len()).unwrap_or(u32::MAX),
            task_groups: &self.groups,
        }
    }
}

/// What one task needs.
#[derive(Debug, Clone, Default)]
pub struct Demand {
    /// CPU units.
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
    /// Static host ports.
    pub ports: Vec<u32>,
    /// Task group (`service:<name>` or `family:<family>`).
    pub group: String,
}

/// A binding placement rule.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// Each task of the group on a different instance.
    DistinctInstance,
    /// Instances matching the expression.
    MemberOf {
        /// The expression as written.
        source: String,
        /// Parsed.
        expr: Expr,
    },
}

/// A placement preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Least remaining CPU after placement first.
    BinpackCpu,
    /// Least remaining memory after placement first.
    BinpackMemory,
    /// Fewest tasks of the group on the instance first.
    SpreadInstance,
    /// Fewest tasks of the group among instances with the same attribute value first.
    SpreadAttribute(String),
    /// Random.
    Random,
}

/// Why an instance was not chosen, in filter order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// DRAINING or otherwise not ACTIVE.
    NotActive,
    /// The agent is not connected.
    AgentDisconnected,
    /// Another task of the group runs there (distinctInstance).
    DistinctInstance,
    /// It does not satisfy a memberOf expression.
    MemberOf(String),
    /// Not enough CPU.
    Cpu,
    /// Not enough memory.
    Memory,
    /// A static host port is taken.
    Ports,
}

impl Reason {
    fn stage(&self) -> u8 {
        match self {
            Reason::NotActive | Reason::AgentDisconnected => 0,
            Reason::DistinctInstance | Reason::MemberOf(_) => 1,
            Reason::Cpu => 2,
            Reason::Memory => 3,
            Reason::Ports => 4,
        }
    }

    /// ECS's wording for the closest instance.
    pub fn phrase(&self) -> String {
        match self {
            Reason::NotActive => "is not ACTIVE.".into(),
            Reason::AgentDisconnected => "encountered error \"AGENT\".".into(),
            Reason::DistinctInstance => {
                "already runs a task of this group (distinctInstance).".into()
            }
            Reason::MemberOf(e) => format!("does not match the placement constraint \"{e}\"."),
            Reason::Cpu => "has insufficient CPU units available.".into(),
            Reason::Memory => "has insufficient memory available.".into(),
            Reason::Ports => "is already using a port required by your task.".into(),
        }
    }
}

/// Why a task could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The instance that got furthest through the filters, and what stopped it.
    pub closest: Option<(String, Reason)>,
}

impl Failure {
    /// ECS's service event for it.
    pub fn message(&self, service: &str) -> String {
        let head = format!(
            "service ({service}) was unable to place a task because no container instance met all of its requirements."
        );
        match &self.closest {
            Some((id, reason)) => format!(
                "{head} The closest matching container-instance {id} {}",
                reason.phrase()
            ),
            None => format!("{head} Reason: No Container Instances were found in your cluster."),
        }
    }
}

/// Where tasks went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Instance id per placed task, in order.
    pub placed: Vec<String>,
    /// Why the rest could not be placed.
    pub failure: Option<Failure>,
}

/// Parses service/RunTask and task definition constraints; errors name the index and position.
pub fn constraints(
    runtime: &[PlacementConstraint],
    task_definition: &[TaskDefinitionPlacementConstraint],
) -> Result<Vec<Constraint>, (String, QueryError)> {
    let mut out = Vec::new();
    for (i, c) in runtime.iter().enumerate() {
        match c.kind {
            PlacementConstraintType::DistinctInstance => out.push(Constraint::DistinctInstance),
            PlacementConstraintType::MemberOf => {
                let source = c.expression.clone().unwrap_or_default();
                let expr = query::parse(&source)
                    .map_err(|e| (format!("placementConstraints[{i}].expression"), e))?;
                out.push(Constraint::MemberOf { source, expr });
            }
        }
    }
    for (i, c) in task_definition.iter().enumerate() {
        let source = c.expression.clone().unwrap_or_default();
        let expr = query::parse(&source).map_err(|e| {
            (
                format!("taskDefinition.placementConstraints[{i}].expression"),
                e,
            )
        })?;
        out.push(Constraint::MemberOf { source, expr });
    }
    Ok(out)
}

/// The strategies a service or RunTask asks for; services without any get ECS's default.
pub fn strategies(list: &[PlacementStrategy]) -> Vec<Strategy> {
    if list.is_empty() {
        return default_strategies();
    }
    list.iter()
        .map(|s| match (s.kind, s.field.as_deref()) {
            (PlacementStrategyType::Binpack, Some("memory")) => Strategy::BinpackMemory,
            (PlacementStrategyType::Binpack, _) => Strategy::BinpackCpu,
            (PlacementStrategyType::Spread, Some(f)) if f.starts_with("attribute:") => {
                Strategy::SpreadAttribute(f.trim_start_matches("attribute:").to_string())
            }
            (PlacementStrategyType::Spread, _) => Strategy::SpreadInstance,
            (PlacementStrategyType::Random, _) => Strategy::Random,
        })
        .collect()
}

/// ECS's default for services: spread over zones, then over instances.
pub fn default_strategies() -> Vec<Strategy> {
    vec![
        Strategy::SpreadAttribute("ecs.availability-zone".into()),
        Strategy::SpreadInstance,
    ]
}

/// Whether one task needing `demand` may be placed on `inst`, or the first filter it fails.
pub fn check(inst: &Instance, demand: &Demand, constraints: &[Constraint]) -> Result<(), Reason> {
    if !inst.active {
        return Err(Reason::NotActive);
    }
    if !inst.agent_connected {
        return Err(Reason::AgentDisconnected);
    }
    for c in constraints {
        match c {
            Constraint::DistinctInstance => {
                if inst.group_count(&demand.group) > 0 {
                    return Err(Reason::DistinctInstance);
                }
            }
            Constraint::MemberOf { source, expr } => {
                if !expr.eval(&inst.facts()) {
                    return Err(Reason::MemberOf(source.clone()));
                }
            }
        }
    }
    if inst.remaining_cpu < demand.cpu {
        return Err(Reason::Cpu);
    }
    if inst.remaining_memory < demand.memory {
        return Err(Reason::Memory);
    }
    if demand.ports.iter().any(|p| inst.used_ports.contains(p)) {
        return Err(Reason::Ports);
    }
    Ok(())
}

fn zone_count(instances: &[Instance], attr: &str, value: Option<&String>, group: &str) -> i64 {
    instances
        .iter()
        .filter(|i| i.attributes.get(attr) == value)
        .map(|i| i.group_count(group) as i64)
        .sum()
}

/// Tasks of the group per value of each spread attribute, kept up to date while placing so a
/// placement costs O(instances), not O(instances²): `bucket[s][i]` is instance i's value of
/// strategy s's attribute, `count[s][b]` the group's tasks in bucket b.
struct Zones {
    bucket: Vec<Vec<usize>>,
    count: Vec<Vec<i64>>,
}

impl Zones {
    fn new(instances: &[Instance], strategies: &[Strategy], group: &str) -> Self {
        let mut bucket = Vec::new();
        let mut count = Vec::new();
        for s in strategies {
            let mut ids: BTreeMap<Option<&String>, usize> = BTreeMap::new();
            let mut b = Vec::with_capacity(instances.len());
            let mut c: Vec<i64> = Vec::new();
            if let Strategy::SpreadAttribute(a) = s {
                for i in instances {
                    let next = ids.len();
                    let id = *ids.entry(i.attributes.get(a)).or_insert(next);
                    if id == c.len() {
                        c.push(0);
                    }
                    c[id] += i.group_count(group) as i64;
                    b.push(id);
                }
            }
            bucket.push(b);
            count.push(c);
        }
        Self { bucket, count }
    }

    fn get(&self, strategy: usize, instance: usize) -> i64 {
        self.bucket
            .get(strategy)
            .and_then(|b| b.get(instance))
            .and_then(|&b| self.count[strategy].get(b))
            .copied()
            .unwrap_or(0)
    }

    fn placed(&mut self, instance: usize) {
        for (s, b) in self.bucket.iter().enumerate() {
            if let Some(&b) = b.get(instance) {
                self.count[s][b] += 1;
            }
        }
    }
}

/// Most strategies a key holds (ECS allows 5), plus the random tie-breaker.
const KEY_LEN: usize = 6;

/// Ranking key of placing on `inst` (lower is better); a fixed array, so ranking thousands of
/// instances allocates nothing.
fn key(
    instances: &[Instance],
    i: usize,
    zones: &Zones,
    demand: &Demand,
    strategies: &[Strategy],
    tie: u64,
) -> [i64; KEY_LEN] {
    let inst = &instances[i];
    let mut k = [0i64; KEY_LEN];
    for (n, (slot, s)) in k
        .iter_mut()
        .zip(strategies.iter().take(KEY_LEN - 1))
        .enumerate()
    {
        *slot = match s {
            Strategy::BinpackCpu => inst.remaining_cpu - demand.cpu,
            Strategy::BinpackMemory => inst.remaining_memory - demand.memory,
            Strategy::SpreadInstance => inst.group_count(&demand.group) as i64,
            Strategy::SpreadAttribute(_) => zones.get(n, i),
            Strategy::Random => 0,
        };
    }
    // `random`, and any tie left by the strategies, is broken by the seeded RNG.
    k[KEY_LEN - 1] = (tie >> 1) as i64;
    k
}

/// Records one task needing `demand` as placed on `inst`.
pub fn reserve(inst: &mut Instance, demand: &Demand) {
    inst.remaining_cpu -= demand.cpu;
    inst.remaining_memory -= demand.memory;
    inst.used_ports.extend(demand.ports.iter().copied());
    inst.groups.push(demand.group.clone());
}

/// Places `count` tasks needing `demand`; `instances` are updated as tasks are placed.
pub fn place<R: Rng + ?Sized>(
    instances: &mut [Instance],
    demand: &Demand,
    count: usize,
    constraints: &[Constraint],
    strategies: &[Strategy],
    rng: &mut R,
) -> Placement {
    let mut out = Placement::default();
    let mut zones = Zones::new(instances, strategies, &demand.group);
    for _ in 0..count {
        let mut candidates = Vec::new();
        let mut closest: Option<(u8, usize, Reason)> = None;
        for (i, inst) in instances.iter().enumerate() {
            match check(inst, demand, constraints) {
                Ok(()) => candidates.push(i),
                Err(r) => {
                    let better = closest.as_ref().is_none_or(|(s, _, _)| r.stage() > *s);
                    if better {
                        closest = Some((r.stage(), i, r));
                    }
                }
            }
        }
        if candidates.is_empty() {
            out.failure = Some(Failure {
                closest: closest.map(|(_, i, r)| (instances[i].id.clone(), r)),
            });
            break;
        }
        let best = candidates
            .iter()
            .map(|&i| {
                (
                    key(
                        instances,
                        i,
                        &zones,
                        demand,
                        strategies,
                        rng.random::<u64>(),
                    ),
                    i,
                )
            })
            .min()
            .map(|(_, i)| i)
            .unwrap_or(candidates[0]);
        let inst = &mut instances[best];
        reserve(inst, demand);
        zones.placed(best);
        out.placed.push(inst.id.clone());
    }
    out
}

/// A task that may be stopped on scale-in.
#[derive(Debug, Clone)]
pub struct Victim {
    /// Task id.
    pub task_id: String,
    /// Instance it runs on.
    pub instance: String,
    /// Lower goes first: e.g. 0 = not yet running or unhealthy, 1 = healthy.
    pub preference: u8,
}

/// Picks `count` tasks of `group` to stop: least preferred first, then the placement strategies
/// in reverse (ECS §3.8: from the zone and instance with the most tasks; binpack: where the most
/// resources remain).
pub fn choose_victims<R: Rng + ?Sized>(
    tasks: &[Victim],
    count: usize,
    instances: &[Instance],
    group: &str,
    strategies: &[Strategy],
    rng: &mut R,
) -> Vec<String> {
    let mut instances: Vec<Instance> = instances.to_vec();
    let mut left: Vec<&Victim> = tasks.iter().collect();
    let mut out = Vec::new();
    while out.len() < count && !left.is_empty() {
        let pick = left
            .iter()
            .enumerate()
            .map(|(pos, t)| {
                let inst = instances.iter().find(|i| i.id == t.instance);
                let mut k = vec![i64::from(t.preference)];
                for s in strategies {
                    k.push(match (s, inst) {
                        (Strategy::SpreadInstance, Some(i)) => -(i.group_count(group) as i64),
                        (Strategy::SpreadAttribute(a), Some(i)) => {
                            -zone_count(&instances, a, i.attributes.get(a), group)
                        }
                        (Strategy::BinpackCpu, Some(i)) => -i.remaining_cpu,
                        (Strategy::BinpackMemory, Some(i)) => -i.remaining_memory,
                        _ => 0,
                    });
                }
                k.push((rng.random::<u64>() >> 1) as i64);
                (k, pos)
            })
            .min()
            .map(|(_, pos)| pos);
        let Some(pos) = pick else { break };
        let victim = left.remove(pos);
        if let Some(i) = instances.iter_mut().find(|i| i.id == victim.instance)
            && let Some(g) = i.groups.iter().position(|g| g == group)
        {
            i.groups.remove(g);
        }
        out.push(victim.task_id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn inst(id: &str, zone: &str, cpu: i64, mem: i64) -> Instance {
        Instance {
            id: id.into(),
            active: true,
            agent_connected: true,
            attributes: BTreeMap::from([("ecs.availability-zone".to_string(), zone.to_string())]),
            agent_version: "0.1.0".into(),
            remaining_cpu: cpu,
            remaining_memory: mem,
            ..Default::default()
        }
    }

    fn demand(cpu: i64, mem: i64) -> Demand {
        Demand {
            cpu,
            memory: mem,
            ports: vec![],
            group: "service:web".into(),
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn default_strategy_spreads_over_zones_then_instances() {
        let mut is = vec![
            inst("a1", "a", 4096, 4096),
            inst("a2", "a", 4096, 4096),
            inst("b1", "b", 4096, 4096),
            inst("c1", "c", 4096, 4096),
        ];
        let p = place(
            &mut is,
            &demand(128, 128),
            6,
            &[],
            &default_strategies(),
            &mut rng(),
        );
        assert!(p.failure.is_none());
        let mut per_zone = BTreeMap::new();
        for id in &p.placed {
            *per_zone.entry(&id[..1]).or_insert(0) += 1;
        }
        assert_eq!(
            per_zone.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
        // Within zone a, one task per instance.
        assert_eq!(is[0].groups.len(), 1);
        assert_eq!(is[1].groups.len(), 1);
    }

    #[test]
    fn binpack_fills_the_fullest_instance_first() {
        let mut is = vec![inst("big", "a", 4096, 4096), inst("small", "a", 1024, 1024)];
        let p = place(
            &mut is,
            &demand(512, 256),
            3,
            &[],
            &[Strategy::BinpackCpu],
            &mut rng(),
        );
        assert_eq!(p.placed, vec!["small", "small", "big"]);
        let p2 = place(
            &mut is,
            &demand(0, 512),
            1,
            &[],
            &[Strategy::BinpackMemory],
            &mut rng(),
        );
        assert_eq!(p2.placed, vec!["small"]);
    }

    #[test]
    fn filters_say_why_the_closest_instance_did_not_fit() {
        let mut draining = inst("d", "a", 4096, 4096);
        draining.active = false;
        let mut is = vec![draining.clone(), inst("m", "a", 4096, 100)];
        let p = place(
            &mut is,
            &demand(128, 512),
            1,
            &[],
            &default_strategies(),
            &mut rng(),
        );
        assert_eq!(p.placed, Vec::<String>::new());
        let f = p.failure.expect("failure");
        assert_eq!(f.closest, Some(("m".to_string(), Reason::Memory)));
        assert_eq!(
            f.message("web"),
            "service (web) was unable to place a task because no container instance met all of its requirements. The closest matching container-instance m has insufficient memory available."
        );
        let mut none: Vec<Instance> = vec![];
        let p = place(&mut none, &demand(1, 1), 1, &[], &[], &mut rng());
        assert!(
            p.failure
                .expect("failure")
                .message("web")
                .ends_with("No Container Instances were found in your cluster.")
        );

        let mut is = vec![draining, inst("c", "a", 64, 4096)];
        let f = place(&mut is, &demand(128, 1), 1, &[], &[], &mut rng())
            .failure
            .expect("failure");
        assert_eq!(f.closest, Some(("c".to_string(), Reason::Cpu)));
    }

    #[test]
    fn static_ports_and_distinct_instance_and_member_of_filter() {
        let mut is = vec![
            inst("a", "a", 4096, 4096),
            inst("b", "b", 4096, 4096),
            inst("c", "c", 4096, 4096),
        ];
        is[0].used_ports.insert(8080);
        let mut d = demand(1, 1);
        d.ports = vec![8080];
        let cons = constraints(
            &[
                PlacementConstraint {
                    kind: PlacementConstraintType::DistinctInstance,
                    expression: None,
                },
                PlacementConstraint {
                    kind: PlacementConstraintType::MemberOf,
                    expression: Some("attribute:ecs.availability-zone != c".into()),
                },
            ],
            &[],
        )
        .expect("parses");
        let p = place(&mut is, &d, 3, &cons, &[Strategy::Random], &mut rng());
        assert_eq!(p.placed, vec!["b"]);
        let f = p.failure.expect("no room for the other two");
        assert!(matches!(
            f.closest,
            Some((
                _,
                Reason::Ports | Reason::DistinctInstance | Reason::MemberOf(_)
            ))
        ));
    }

    #[test]
    fn bad_expressions_are_reported_with_their_field_and_position() {
        let err = constraints(
            &[PlacementConstraint {
                kind: PlacementConstraintType::MemberOf,
                expression: Some("attribute:x ==".into()),
            }],
            &[],
        )
        .expect_err("invalid");
        assert_eq!(err.0, "placementConstraints[0].expression");
        assert_eq!(err.1.position, 14);
    }

    #[test]
    fn scale_in_takes_from_the_fullest_zone_and_the_least_healthy_first() {
        let mut is = vec![inst("a1", "a", 4096, 4096), inst("b1", "b", 4096, 4096)];
        is[0].groups = vec!["service:web".into(); 3];
        is[1].groups = vec!["service:web".into(); 1];
        let tasks: Vec<Victim> = (0..3)
            .map(|n| Victim {
                task_id: format!("a{n}"),
                instance: "a1".into(),
                preference: 1,
            })
            .chain([Victim {
                task_id: "b0".into(),
                instance: "b1".into(),
                preference: 1,
            }])
            .collect();
        let v = choose_victims(
            &tasks,
            2,
            &is,
            "service:web",
            &default_strategies(),
            &mut rng(),
        );
        assert!(v.iter().all(|t| t.starts_with('a')), "{v:?}");
        let mut tasks = tasks;
        tasks[3].preference = 0;
        let v = choose_victims(
            &tasks,
            1,
            &is,
            "service:web",
            &default_strategies(),
            &mut rng(),
        );
        assert_eq!(v, vec!["b0"], "an unhealthy task goes first");
    }

    #[test]
    fn the_same_seed_gives_the_same_placement() {
        let make = || {
            (0..10)
                .map(|n| inst(&format!("i{n}"), "a", 4096, 4096))
                .collect::<Vec<_>>()
        };
        let (mut x, mut y) = (make(), make());
        let a = place(
            &mut x,
            &demand(1, 1),
            5,
            &[],
            &[Strategy::Random],
            &mut StdRng::seed_from_u64(42),
        );
        let b = place(
            &mut y,
            &demand(1, 1),
            5,
            &[],
            &[Strategy::Random],
            &mut StdRng::seed_from_u64(42),
        );
        assert_eq!(a, b);
    }
}

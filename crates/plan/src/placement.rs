//! Task placement, as ECS does it: filter the instances (ACTIVE with a connected agent, placement
//! constraints, CPU, memory, ports), then rank the rest by the placement strategies in order —
//! each strategy breaking the ties left by the ones before it, a seeded RNG breaking the rest.
//! Every placement updates the instance's remaining resources before the next one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    /// A registered container instance `id` as placement sees it, before any task is held.
    pub fn registered(id: &str, ci: &capstan_core::ContainerInstance) -> Self {
        let ports = ci
            .registered_resources
            .iter()
            .find(|r| r.name == "PORTS")
            .map(|r| {
                r.string_set_value
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Instance {
            id: id.to_string(),
            active: ci.status == capstan_core::instance::InstanceStatus::Active,
            agent_connected: ci.agent_connected,
            attributes: ci
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
                .collect(),
            agent_version: ci.version_info.agent_version.clone(),
            registered_at: ci.registered_at,
            remaining_cpu: ci.registered("CPU").unwrap_or(0),
            remaining_memory: ci.registered("MEMORY").unwrap_or(0),
            used_ports: ports,
            groups: Vec::new(),
        }
    }

    /// Holds what task `t` reserves here (its cpu, memory, group and static `ports`), unless
    /// it has stopped: a task counts against its instance until then.
    pub fn hold(&mut self, t: &capstan_core::Task, ports: &BTreeSet<u32>) {
        if t.last_status == capstan_core::task::TaskStatus::Stopped {
            return;
        }
        let quantity = |q: &Option<String>| q.as_deref().and_then(|c| c.parse::<i64>().ok());
        self.remaining_cpu -= quantity(&t.cpu).unwrap_or(0);
        self.remaining_memory -= quantity(&t.memory).unwrap_or(0);
        if let Some(g) = &t.group {
            self.groups.push(g.clone());
        }
        self.used_ports.extend(ports);
    }

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

/// What a task of `td` in task group `group` needs from an instance.
pub fn demand(td: &capstan_core::TaskDefinition, group: &str) -> Demand {
    Demand {
        cpu: i64::from(td.reserved_cpu()),
        memory: i64::from(td.reserved_memory()),
        // An awsvpc task has a network namespace of its own: it holds no host port.
        ports: if td.network_mode() == capstan_core::taskdef::NetworkMode::Awsvpc {
            Vec::new()
        } else {
            td.container_definitions
                .iter()
                .flat_map(|c| c.port_mappings.iter().filter_map(|p| p.static_host_port()))
                .collect()
        },
        group: group.to_string(),
    }
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

/// Tasks of the group per value of each spread attribute, and per instance, kept up to date
/// while placing or choosing victims so one step costs O(instances), not O(instances²):
/// `bucket[s][i]` is instance i's value of strategy s's attribute, `count[s][b]` the group's tasks
/// in bucket b, `mine[i]` the group's tasks on instance i.
struct Zones {
    bucket: Vec<Vec<usize>>,
    count: Vec<Vec<i64>>,
    mine: Vec<i64>,
}

impl Zones {
    fn new(instances: &[Instance], strategies: &[Strategy], group: &str) -> Self {
        let mine: Vec<i64> = instances
            .iter()
            .map(|i| i.group_count(group) as i64)
            .collect();
        let mut bucket = Vec::new();
        let mut count = Vec::new();
        for s in strategies {
            let mut ids: BTreeMap<Option<&String>, usize> = BTreeMap::new();
            let mut b = Vec::with_capacity(instances.len());
            let mut c: Vec<i64> = Vec::new();
            if let Strategy::SpreadAttribute(a) = s {
                for (n, i) in instances.iter().enumerate() {
                    let next = ids.len();
                    let id = *ids.entry(i.attributes.get(a)).or_insert(next);
                    if id == c.len() {
                        c.push(0);
                    }
                    c[id] += mine[n];
                    b.push(id);
                }
            }
            bucket.push(b);
            count.push(c);
        }
        Self {
            bucket,
            count,
            mine,
        }
    }

    fn get(&self, strategy: usize, instance: usize) -> i64 {
        self.bucket
            .get(strategy)
            .and_then(|b| b.get(instance))
            .and_then(|&b| self.count[strategy].get(b))
            .copied()
            .unwrap_or(0)
    }

    /// One task of the group more (`delta` 1) or less (-1) on `instance`.
    fn add(&mut self, instance: usize, delta: i64) {
        for (s, b) in self.bucket.iter().enumerate() {
            if let Some(&b) = b.get(instance) {
                self.count[s][b] += delta;
            }
        }
        if let Some(m) = self.mine.get_mut(instance) {
            *m += delta;
        }
    }
}

/// Most strategies a key holds (ECS allows 5), plus the random tie-breaker.
const KEY_LEN: usize = 6;

/// The instance-level component of the ranking key of placing on instance `i` for strategy
/// `n` (lower is better); spread-attribute slots are filled from the zone counts by the caller.
fn component(
    inst: &Instance,
    i: usize,
    n: usize,
    zones: &Zones,
    demand: &Demand,
    strategies: &[Strategy],
) -> i64 {
    match strategies.get(n) {
        Some(Strategy::BinpackCpu) => inst.remaining_cpu - demand.cpu,
        Some(Strategy::BinpackMemory) => inst.remaining_memory - demand.memory,
        Some(Strategy::SpreadInstance) => zones.mine[i],
        Some(Strategy::SpreadAttribute(_)) => zones.get(n, i),
        Some(Strategy::Random) | None => 0,
    }
}

/// Records one task needing `demand` as placed on `inst`.
pub fn reserve(inst: &mut Instance, demand: &Demand) {
    inst.remaining_cpu -= demand.cpu;
    inst.remaining_memory -= demand.memory;
    inst.used_ports.extend(demand.ports.iter().copied());
    inst.groups.push(demand.group.clone());
}

/// Instances grouped into cells that share their value of every spread attribute: within a cell
/// only instance-level components (binpack, spread by instance, the tie) order the instances, so
/// each cell keeps its fitting instances sorted and a placement compares one head per cell instead
/// of ranking every instance. After a placement only the chosen instance moves.
struct Cells {
    /// Fitting instances of each cell by their instance-level key (spread-attribute slots 0).
    sets: Vec<BTreeSet<([i64; KEY_LEN], usize)>>,
    /// Each instance's cell.
    cell: Vec<usize>,
    /// Each instance's key in its cell's set, while it is there.
    key: Vec<Option<[i64; KEY_LEN]>>,
    /// Each instance's tie-breaker: a random order, and an instance that takes a task goes to
    /// the back of it.
    tie: Vec<i64>,
    /// The next back of the order.
    next_tie: i64,
}

fn is_attribute(strategies: &[Strategy], n: usize) -> bool {
    matches!(strategies.get(n), Some(Strategy::SpreadAttribute(_)))
}

impl Cells {
    fn new<R: Rng + ?Sized>(zones: &Zones, strategies: &[Strategy], n: usize, rng: &mut R) -> Self {
        let mut ids: HashMap<Vec<usize>, usize> = HashMap::new();
        let cell = (0..n)
            .map(|i| {
                let coords: Vec<usize> = (0..KEY_LEN - 1)
                    .filter(|&s| is_attribute(strategies, s))
                    .map(|s| zones.bucket[s][i])
                    .collect();
                let next = ids.len();
                *ids.entry(coords).or_insert(next)
            })
            .collect();
        Self {
            sets: vec![BTreeSet::new(); ids.len()],
            cell,
            key: vec![None; n],
            tie: (0..n).map(|_| (rng.random::<u64>() >> 24) as i64).collect(),
            next_tie: 1 << 40,
        }
    }

    /// Puts instance `i` in (`fits`) or takes it out of its cell, with its current key.
    fn update(
        &mut self,
        i: usize,
        fits: bool,
        inst: &Instance,
        zones: &Zones,
        demand: &Demand,
        strategies: &[Strategy],
    ) {
        let set = &mut self.sets[self.cell[i]];
        if let Some(old) = self.key[i].take() {
            set.remove(&(old, i));
        }
        if fits {
            let mut k = [0i64; KEY_LEN];
            for (n, slot) in k.iter_mut().enumerate().take(KEY_LEN - 1) {
                if !is_attribute(strategies, n) {
                    *slot = component(inst, i, n, zones, demand, strategies);
                }
            }
            k[KEY_LEN - 1] = self.tie[i];
            set.insert((k, i));
            self.key[i] = Some(k);
        }
    }

    /// The instance with the lowest full key: each cell's head with its spread counts filled in.
    fn best(&self, zones: &Zones, strategies: &[Strategy]) -> Option<usize> {
        let mut best: Option<([i64; KEY_LEN], usize)> = None;
        for set in &self.sets {
            let Some(&(mut k, i)) = set.first() else {
                continue;
            };
            for (n, slot) in k.iter_mut().enumerate().take(KEY_LEN - 1) {
                if is_attribute(strategies, n) {
                    *slot = zones.get(n, i);
                }
            }
            if best.as_ref().is_none_or(|(b, _)| k < *b) {
                best = Some((k, i));
            }
        }
        best.map(|(_, i)| i)
    }
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
    // Every filter looks at the instance alone, so after a placement only the instance that took
    // the task is checked again.
    let mut fits: Vec<Result<(), Reason>> = instances
        .iter()
        .map(|i| check(i, demand, constraints))
        .collect();
    let mut cells = Cells::new(&zones, strategies, instances.len(), rng);
    for (i, inst) in instances.iter().enumerate() {
        cells.update(i, fits[i].is_ok(), inst, &zones, demand, strategies);
    }
    for _ in 0..count {
        let Some(best) = cells.best(&zones, strategies) else {
            // The closest instance is the first that got furthest through the filters.
            let mut closest: Option<(u8, usize)> = None;
            for (i, f) in fits.iter().enumerate() {
                if let Err(r) = f
                    && closest.is_none_or(|(s, _)| r.stage() > s)
                {
                    closest = Some((r.stage(), i));
                }
            }
            out.failure = Some(Failure {
                closest: closest.and_then(|(_, i)| {
                    let reason = fits[i].clone().err()?;
                    Some((instances[i].id.clone(), reason))
                }),
            });
            break;
        };
        let inst = &mut instances[best];
        reserve(inst, demand);
        zones.add(best, 1);
        fits[best] = check(inst, demand, constraints);
        // Among instances the strategies rank equal (all of them for `random`), each takes a task
        // in turn, in an order drawn at random for this plan.
        cells.tie[best] = cells.next_tie;
        cells.next_tie += 1;
        cells.update(best, fits[best].is_ok(), inst, &zones, demand, strategies);
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
    const VKEY: usize = KEY_LEN + 1;
    let index: HashMap<&str, usize> = instances
        .iter()
        .enumerate()
        .map(|(n, i)| (i.id.as_str(), n))
        .collect();
    let mut zones = Zones::new(instances, strategies, group);
    let inst: Vec<Option<usize>> = tasks
        .iter()
        .map(|t| index.get(t.instance.as_str()).copied())
        .collect();
    let tie: Vec<i64> = tasks
        .iter()
        .map(|_| (rng.random::<u64>() >> 1) as i64)
        .collect();
    // The key of a victim: its preference, the strategies reversed (slot 1 + n for strategy n),
    // its tie. Victims whose instances share every spread-attribute value form a cell ordered by
    // the other slots; the cell heads are compared with their spread counts filled in.
    let local = |v: usize, zones: &Zones| -> [i64; VKEY] {
        let mut k = [0i64; VKEY];
        k[0] = i64::from(tasks[v].preference);
        if let Some(i) = inst[v] {
            for (n, s) in strategies.iter().take(KEY_LEN - 1).enumerate() {
                k[1 + n] = match s {
                    Strategy::SpreadInstance => -zones.mine[i],
                    Strategy::BinpackCpu => -instances[i].remaining_cpu,
                    Strategy::BinpackMemory => -instances[i].remaining_memory,
                    Strategy::SpreadAttribute(_) | Strategy::Random => 0,
                };
            }
        }
        k[VKEY - 1] = tie[v];
        k
    };
    let mut ids: HashMap<Option<Vec<usize>>, usize> = HashMap::new();
    let cell: Vec<usize> = inst
        .iter()
        .map(|i| {
            let coords = i.map(|i| {
                (0..KEY_LEN - 1)
                    .filter(|&s| is_attribute(strategies, s))
                    .map(|s| zones.bucket[s][i])
                    .collect::<Vec<_>>()
            });
            let next = ids.len();
            *ids.entry(coords).or_insert(next)
        })
        .collect();
    let mut on: HashMap<usize, Vec<usize>> = HashMap::new();
    for (v, i) in inst.iter().enumerate() {
        if let Some(i) = i {
            on.entry(*i).or_default().push(v);
        }
    }
    let mut sets: Vec<BTreeSet<([i64; VKEY], usize)>> = vec![BTreeSet::new(); ids.len()];
    let mut keys: Vec<[i64; VKEY]> = (0..tasks.len()).map(|v| local(v, &zones)).collect();
    for (v, k) in keys.iter().enumerate() {
        sets[cell[v]].insert((*k, v));
    }
    let mut out = Vec::new();
    while out.len() < count {
        let mut best: Option<([i64; VKEY], usize)> = None;
        for set in &sets {
            let Some(&(mut k, v)) = set.first() else {
                continue;
            };
            if let Some(i) = inst[v] {
                for n in 0..KEY_LEN - 1 {
                    if is_attribute(strategies, n) {
                        k[1 + n] = -zones.get(n, i);
                    }
                }
            }
            if best.as_ref().is_none_or(|(b, _)| k < *b) {
                best = Some((k, v));
            }
        }
        let Some((_, v)) = best else { break };
        sets[cell[v]].remove(&(keys[v], v));
        out.push(tasks[v].task_id.clone());
        let Some(i) = inst[v] else { continue };
        if zones.mine[i] > 0 {
            zones.add(i, -1);
        }
        // The instance has one task fewer: its other victims' keys move with it.
        if let Some(list) = on.get_mut(&i) {
            list.retain(|&w| w != v);
            for &w in list.iter() {
                sets[cell[w]].remove(&(keys[w], w));
                keys[w] = local(w, &zones);
                sets[cell[w]].insert((keys[w], w));
            }
        }
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
    fn an_awsvpc_task_holds_no_host_port_a_bridge_task_holds_its_static_ones() {
        let td = |mode: &str| -> capstan_core::TaskDefinition {
            serde_json::from_value(serde_json::json!({"family": "w", "networkMode": mode,
                "containerDefinitions": [{"name": "c", "image": "i", "memory": 64,
                    "portMappings": [{"containerPort": 80, "hostPort": 80}]}]}))
            .expect("task definition")
        };
        assert_eq!(super::demand(&td("bridge"), "g").ports, vec![80]);
        assert!(super::demand(&td("awsvpc"), "g").ports.is_empty());
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
    fn random_uses_every_instance_about_equally() {
        let mut is: Vec<Instance> = (0..10)
            .map(|n| inst(&format!("i{n}"), "a", 1_000_000, 1_000_000))
            .collect();
        let p = place(
            &mut is,
            &demand(1, 1),
            1000,
            &[],
            &[Strategy::Random],
            &mut rng(),
        );
        assert_eq!(p.placed.len(), 1000);
        for i in &is {
            let n = i.groups.len();
            assert!((50..=150).contains(&n), "{} took {n} of 1000", i.id);
        }
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

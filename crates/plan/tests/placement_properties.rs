//! Invariants of placement, checked over generated clusters.

use std::collections::{BTreeMap, BTreeSet};

use capstan_plan::placement::{
    Constraint, Demand, Instance, Strategy as Placement, Victim, check, choose_victims,
    default_strategies, place,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn instance(
    n: usize,
    zone: u8,
    cpu: i64,
    mem: i64,
    ports: BTreeSet<u32>,
    existing: usize,
) -> Instance {
    Instance {
        id: format!("i{n:03}"),
        active: true,
        agent_connected: true,
        attributes: BTreeMap::from([("ecs.availability-zone".to_string(), format!("zone-{zone}"))]),
        agent_version: "0.1.0".into(),
        registered_at: None,
        remaining_cpu: cpu,
        remaining_memory: mem,
        used_ports: ports,
        groups: vec!["service:web".to_string(); existing],
    }
}

fn cluster() -> impl Strategy<Value = Vec<Instance>> {
    prop::collection::vec(
        (
            0u8..3,
            0i64..4096,
            0i64..8192,
            prop::collection::btree_set(8000u32..8004, 0..3),
            0usize..3,
        ),
        0..12,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(n, (z, c, m, p, e))| instance(n, z, c, m, p, e))
            .collect()
    })
}

fn strategies() -> impl Strategy<Value = Vec<Placement>> {
    prop::sample::select(vec![
        default_strategies(),
        vec![Placement::BinpackCpu],
        vec![Placement::BinpackMemory, Placement::SpreadInstance],
        vec![Placement::Random],
        vec![
            Placement::SpreadAttribute("ecs.availability-zone".into()),
            Placement::BinpackMemory,
        ],
    ])
}

proptest! {
    #[test]
    fn every_placed_task_fits_its_instance(
        mut is in cluster(),
        cpu in 0i64..1024,
        mem in 0i64..2048,
        port in prop::option::of(8000u32..8004),
        count in 0usize..20,
        strats in strategies(),
        seed in any::<u64>(),
    ) {
        let before = is.clone();
        let demand = Demand { cpu, memory: mem, ports: port.into_iter().collect(), group: "service:web".into() };
        let p = place(&mut is, &demand, count, &[], &strats, &mut StdRng::seed_from_u64(seed));
        prop_assert!(p.placed.len() <= count);
        prop_assert_eq!(p.placed.len() < count, p.failure.is_some());
        for (b, a) in before.iter().zip(&is) {
            let n = p.placed.iter().filter(|id| **id == b.id).count() as i64;
            prop_assert_eq!(a.remaining_cpu, b.remaining_cpu - n * cpu);
            prop_assert_eq!(a.remaining_memory, b.remaining_memory - n * mem);
            prop_assert!(a.remaining_cpu >= 0 && a.remaining_memory >= 0, "overcommitted {}", a.id);
            if port.is_some() {
                prop_assert!(n <= 1, "static port {port:?} placed twice on {}", a.id);
                if n == 1 {
                    prop_assert!(!b.used_ports.contains(&port.unwrap_or(0)));
                }
            }
        }
    }

    #[test]
    fn distinct_instance_never_doubles_up(
        mut is in cluster(),
        count in 0usize..20,
        strats in strategies(),
        seed in any::<u64>(),
    ) {
        let before = is.clone();
        let demand = Demand { cpu: 1, memory: 1, ports: vec![], group: "service:web".into() };
        let p = place(&mut is, &demand, count, &[Constraint::DistinctInstance], &strats, &mut StdRng::seed_from_u64(seed));
        let unique: BTreeSet<&String> = p.placed.iter().collect();
        prop_assert_eq!(unique.len(), p.placed.len());
        for id in &p.placed {
            let b = before.iter().find(|i| &i.id == id).expect("placed on a known instance");
            prop_assert!(b.groups.is_empty(), "{} already ran a task of the group", id);
        }
    }

    #[test]
    fn spread_keeps_zones_within_one_when_capacity_allows(
        zones in prop::collection::vec(0u8..4, 1..10),
        count in 0usize..40,
        seed in any::<u64>(),
    ) {
        let mut is: Vec<Instance> = zones.iter().enumerate()
            .map(|(n, z)| instance(n, *z, 1_000_000, 1_000_000, BTreeSet::new(), 0))
            .collect();
        let demand = Demand { cpu: 1, memory: 1, ports: vec![], group: "service:web".into() };
        let p = place(&mut is, &demand, count, &[], &default_strategies(), &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(p.placed.len(), count);
        let mut per_zone: BTreeMap<&String, usize> = BTreeMap::new();
        for i in &is {
            *per_zone.entry(&i.attributes["ecs.availability-zone"]).or_default() += i.groups.len();
        }
        let max = per_zone.values().max().copied().unwrap_or(0);
        let min = per_zone.values().min().copied().unwrap_or(0);
        prop_assert!(max - min <= 1, "zones {per_zone:?}");
        // And within each zone, instances stay within one of each other.
        let mut per_instance: BTreeMap<&String, Vec<usize>> = BTreeMap::new();
        for i in &is {
            per_instance.entry(&i.attributes["ecs.availability-zone"]).or_default().push(i.groups.len());
        }
        for counts in per_instance.values() {
            let hi = counts.iter().max().copied().unwrap_or(0);
            let lo = counts.iter().min().copied().unwrap_or(0);
            prop_assert!(hi - lo <= 1, "instances {counts:?}");
        }
    }

    #[test]
    fn each_task_goes_where_the_strategies_rank_lowest(
        is in cluster(),
        strategy in strategies(),
        count in 1usize..15,
        seed in any::<u64>(),
    ) {
        let mut is = is;
        let demand = Demand { cpu: 100, memory: 100, ports: vec![], group: "service:web".into() };
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..count {
            let before = is.clone();
            let p = place(&mut is, &demand, 1, &[], &strategy, &mut rng);
            let Some(chosen) = p.placed.first() else {
                prop_assert!(before.iter().all(|i| check(i, &demand, &[]).is_err()));
                break;
            };
            let keys: Vec<(Vec<i64>, &String)> = before
                .iter()
                .filter(|i| check(i, &demand, &[]).is_ok())
                .map(|i| (reference_key(&before, i, &demand, &strategy), &i.id))
                .collect();
            let lowest = keys.iter().map(|(k, _)| k).min();
            let mine = keys.iter().find(|(_, id)| *id == chosen).map(|(k, _)| k);
            prop_assert!(mine.is_some() && mine == lowest, "chose {chosen} with {mine:?}; lowest {lowest:?}");
        }
    }

    #[test]
    fn each_victim_comes_from_where_the_reversed_strategies_rank_lowest(
        per_instance in prop::collection::vec((0u8..3, 0usize..4), 1..8),
        count in 0usize..20,
        seed in any::<u64>(),
    ) {
        let is: Vec<Instance> = per_instance
            .iter()
            .enumerate()
            .map(|(n, (z, k))| instance(n, *z, 4096, 4096, BTreeSet::new(), *k))
            .collect();
        let victims: Vec<Victim> = is
            .iter()
            .flat_map(|i| (0..i.groups.len()).map(move |k| Victim {
                task_id: format!("{}-{k}", i.id),
                instance: i.id.clone(),
                preference: u8::from(k % 2 == 0),
            }))
            .collect();
        let strategy = default_strategies();
        let chosen = choose_victims(&victims, count, &is, "service:web", &strategy, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(chosen.len(), count.min(victims.len()));
        // Replay: every victim ranks lowest among those left, on the cluster as it then was.
        let mut left = victims.clone();
        let mut now = is.clone();
        let demand = Demand { cpu: 0, memory: 0, ports: vec![], group: "service:web".into() };
        for id in &chosen {
            let rank = |v: &Victim| {
                let inst = now.iter().find(|i| i.id == v.instance).cloned().unwrap_or_default();
                let mut k = vec![i64::from(v.preference)];
                k.extend(reference_key(&now, &inst, &demand, &strategy).iter().map(|x| -x));
                k
            };
            let lowest = left.iter().map(rank).min();
            let pos = left.iter().position(|v| &v.task_id == id);
            prop_assert!(pos.is_some(), "{id} chosen twice or unknown");
            let v = left.remove(pos.unwrap_or_default());
            prop_assert_eq!(Some(rank(&v)), lowest, "victim {}", id);
            if let Some(i) = now.iter_mut().find(|i| i.id == v.instance) {
                i.groups.pop();
            }
        }
    }
}

/// The strategies' key for placing on `inst`, computed from scratch (no tie-breaker).
fn reference_key(
    all: &[Instance],
    inst: &Instance,
    demand: &Demand,
    strategy: &[Placement],
) -> Vec<i64> {
    let mine = |i: &Instance| i.groups.iter().filter(|g| **g == demand.group).count() as i64;
    strategy
        .iter()
        .map(|s| match s {
            Placement::BinpackCpu => inst.remaining_cpu - demand.cpu,
            Placement::BinpackMemory => inst.remaining_memory - demand.memory,
            Placement::SpreadInstance => mine(inst),
            Placement::SpreadAttribute(a) => all
                .iter()
                .filter(|i| i.attributes.get(a) == inst.attributes.get(a))
                .map(mine)
                .sum(),
            Placement::Random => 0,
        })
        .collect()
}

//! The placement planner alone (no IO): placements and scale-in victims per second over a large
//! cluster, with ECS's default service strategy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capstan_plan::placement::{self, Demand, Instance, Victim};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// What one run measured.
#[derive(Debug)]
pub struct PlacementFigures {
    /// Instances in the cluster.
    pub instances: usize,
    /// Tasks placed.
    pub tasks: usize,
    /// Time to place them all (one `place` call).
    pub place: Duration,
    /// Victims chosen.
    pub victims: usize,
    /// Time to choose them (one `choose_victims` call).
    pub victims_time: Duration,
}

/// Places `tasks` on `instances` instances over ten zones, then picks half of them as victims.
pub fn measure(instances: usize, tasks: usize) -> PlacementFigures {
    let mut pool: Vec<Instance> = (0..instances)
        .map(|n| Instance {
            id: format!("i{n:05}"),
            active: true,
            agent_connected: true,
            attributes: BTreeMap::from([(
                "ecs.availability-zone".to_string(),
                format!("zone-{}", n % 10),
            )]),
            remaining_cpu: 1_000_000,
            remaining_memory: 1_000_000,
            ..Default::default()
        })
        .collect();
    let demand = Demand {
        cpu: 1,
        memory: 6,
        ports: vec![],
        group: "service:bench".into(),
    };
    let strategies = placement::default_strategies();
    let mut rng = StdRng::seed_from_u64(7);
    let t = Instant::now();
    let placed = placement::place(&mut pool, &demand, tasks, &[], &strategies, &mut rng);
    let place = t.elapsed();
    let victims: Vec<Victim> = placed
        .placed
        .iter()
        .enumerate()
        .map(|(n, i)| Victim {
            task_id: format!("t{n}"),
            instance: i.clone(),
            preference: 1,
        })
        .collect();
    let t = Instant::now();
    let chosen = placement::choose_victims(
        &victims,
        tasks / 2,
        &pool,
        &demand.group,
        &strategies,
        &mut rng,
    );
    PlacementFigures {
        instances,
        tasks: placed.placed.len(),
        place,
        victims: chosen.len(),
        victims_time: t.elapsed(),
    }
}

/// Prints the figures.
pub fn print(f: &PlacementFigures) {
    println!(
        "placement planner: {} instances over 10 zones, spread(zone) then spread(instance)",
        f.instances
    );
    println!(
        "  place {} tasks: {:.1} ms ({:.0} placements/s)",
        f.tasks,
        f.place.as_secs_f64() * 1e3,
        f.tasks as f64 / f.place.as_secs_f64()
    );
    println!(
        "  choose {} scale-in victims among {}: {:.1} ms ({:.0} victims/s)",
        f.victims,
        f.tasks,
        f.victims_time.as_secs_f64() * 1e3,
        f.victims as f64 / f.victims_time.as_secs_f64()
    );
}

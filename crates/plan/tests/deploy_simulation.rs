//! Rolling deployments driven by the deployer's planner against a simulated scheduler that
//! converges every deployment to its count at once (stopping unhealthy tasks first) and whose new
//! tasks turn healthy one tick later: the bounds hold on every tick, and every rollout either
//! completes or is stuck exactly when ECS says it must be.

use std::collections::HashMap;

use capstan_core::deployment::{Deployment, DeploymentStatus, RolloutState};
use capstan_core::service::DeploymentStrategy;
use capstan_plan::deploy::{Config, Hooks, View, plan};
use capstan_plan::health::Tally;
use capstan_plan::rollout::Bounds;
use proptest::prelude::*;

fn config(d: u32, min: u32, max: u32) -> Config {
    Config {
        desired: d,
        min_healthy_percent: min,
        max_percent: max,
        strategy: DeploymentStrategy::Rolling,
        breaker: None,
        bake_secs: 0.0,
        fingerprint: "new".into(),
        task_definition: "web:2".into(),
        capacity_provider_strategy: Vec::new(),
        load_balancers: Vec::new(),
        daemon: false,
        history: 10,
    }
}

proptest! {
    #[test]
    fn rolling_holds_the_bounds_and_finishes(d in 1u32..30, min in 0u32..=100, max in 100u32..=200) {
        let c = config(d, min, max);
        let bounds = Bounds { desired: d, min_healthy_percent: min, max_percent: max };
        let (ceiling, floor) = (bounds.ceiling(), bounds.floor());
        let mut deps = vec![Deployment {
            id: "old".into(),
            status: DeploymentStatus::Primary,
            task_definition: "web:1".into(),
            desired_count: d,
            created_at: Some(1.0),
            rollout_state: RolloutState::Completed,
            spec_fingerprint: Some("old".into()),
            ..Deployment::default()
        }];
        // Tasks per deployment: true = healthy.
        let mut tasks: HashMap<String, Vec<bool>> = HashMap::from([("old".to_string(), vec![true; d as usize])]);
        let mut outcome = None;
        for tick in 0..(4 * d + 10) {
            let tallies: HashMap<String, Tally> = tasks
                .iter()
                .map(|(id, ts)| {
                    let healthy = ts.iter().filter(|h| **h).count() as u32;
                    (id.clone(), Tally { live: ts.len() as u32, running: ts.len() as u32, healthy, ..Tally::default() })
                })
                .collect();
            let decision = plan(&View {
                service: "web",
                config: Some(&c),
                deployments: &deps,
                tallies: &tallies,
                hooks: Hooks::Done,
                stop: false,
                new_id: "ecs-svc/new",
                routed: capstan_plan::deploy::Routed::default(),
            }, f64::from(tick), &mut rand::rng());
            for p in &decision.put {
                deps.retain(|x| x.id != p.id);
                deps.push(p.clone());
            }
            if decision.events.iter().any(|e| e.contains("unable to stop or start tasks")) {
                outcome = Some("stuck");
                break;
            }
            if deps.iter().any(|x| x.id == "ecs-svc/new" && x.rollout_state == RolloutState::Completed) {
                outcome = Some("completed");
                break;
            }
            // The scheduler: stop extras (unhealthy first), then start the missing ones.
            for x in &deps {
                let ts = tasks.entry(x.id.clone()).or_default();
                ts.sort();
                while ts.len() > x.desired_count as usize {
                    ts.remove(0);
                }
            }
            let healthy: usize = tasks.values().flatten().filter(|h| **h).count();
            prop_assert!(healthy as u32 >= floor.min(d), "tick {tick}: {healthy} healthy < {floor}");
            for x in &deps {
                let ts = tasks.entry(x.id.clone()).or_default();
                while ts.len() < x.desired_count as usize {
                    ts.push(false);
                }
            }
            let live: usize = tasks.values().map(Vec::len).sum();
            prop_assert!(live as u32 <= ceiling, "tick {tick}: {live} live > {ceiling}");
            // A tick later the new tasks are healthy.
            for ts in tasks.values_mut() {
                ts.iter_mut().for_each(|h| *h = true);
            }
        }
        match outcome {
            Some("completed") => {
                prop_assert_eq!(tasks.get("old").map_or(0, Vec::len), 0);
                prop_assert_eq!(tasks.get("ecs-svc/new").map_or(0, Vec::len) as u32, d);
            }
            Some(_) => prop_assert!(ceiling <= d && floor >= d, "stuck although {ceiling} > {d} or {floor} < {d}"),
            None => prop_assert!(false, "no progress with d={d} min={min} max={max}"),
        }
    }
}

//! The rolling planner against a model scheduler: tasks start at once and turn healthy one step
//! later; old tasks stop at once. The bounds hold at every step and the rollout always finishes
//! or reports itself stuck.

use capstan_plan::rollout::{Bounds, DeploymentState, step};
use proptest::prelude::*;

proptest! {
    #[test]
    fn bounds_hold_and_rollouts_finish(
        desired in 0u32..30,
        min in 0u32..=100,
        max in 100u32..=200,
    ) {
        let bounds = Bounds { desired, min_healthy_percent: min, max_percent: max };
        let ceiling = bounds.ceiling();
        let floor = bounds.floor();
        // The old revision runs whole and healthy.
        let mut primary = DeploymentState::default();
        let mut old = DeploymentState { desired, live: desired, healthy: desired };
        let mut done = false;
        for _ in 0..(4 * desired as usize + 8) {
            let s = step(bounds, primary, &[old]);
            if s.completed {
                done = true;
                break;
            }
            if s.stuck {
                // Stuck only when the configuration really allows neither.
                prop_assert!(old.live + primary.live >= ceiling && primary.healthy + old.healthy <= floor);
                done = true;
                break;
            }
            // Progress: unless everything is already asked for (the rollout then waits for the
            // new tasks to turn healthy), a step that is neither done nor stuck changes something.
            let waiting = primary.desired == desired && (old.desired == 0 || primary.healthy < primary.live);
            prop_assert!(waiting || s.primary != primary.desired || s.old[0] != old.desired, "no progress: {s:?} from {primary:?} {old:?}");
            // Apply: stops happen at once, starts at once, new tasks healthy next step.
            let was_live = primary.live;
            old.desired = s.old[0];
            old.live = old.live.min(old.desired);
            old.healthy = old.healthy.min(old.live);
            primary.healthy = was_live.min(s.primary);
            primary.desired = s.primary;
            primary.live = s.primary;
            let live = primary.live + old.live;
            let healthy = primary.healthy + old.healthy;
            prop_assert!(live <= ceiling, "{live} live > ceiling {ceiling}");
            prop_assert!(healthy >= floor, "{healthy} healthy < floor {floor}");
        }
        prop_assert!(done, "rollout neither finished nor reported stuck");
    }
}

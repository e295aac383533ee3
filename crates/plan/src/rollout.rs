//! The rolling-update planner (ECS §3.2): each step sets the per-deployment desired counts so
//! that, with D = the service's desiredCount, tasks PENDING or RUNNING over all deployments never
//! exceed `floor(D × maximumPercent / 100)` and healthy tasks never drop below
//! `ceil(D × minimumHealthyPercent / 100)`.
//!
//! One step both starts (raises the PRIMARY deployment's count into the room left under the
//! ceiling) and stops (lowers the older deployments' counts, oldest first, as far as the healthy
//! tasks above the floor allow). The scheduler converges each deployment to its count.

/// What the planner sees of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeploymentState {
    /// The count the scheduler converges it to now.
    pub desired: u32,
    /// Its tasks PENDING or RUNNING.
    pub live: u32,
    /// Its tasks counted healthy (HEALTHY, healthy target, or RUNNING past the grace time).
    pub healthy: u32,
}

/// The service's rollout parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The service's desiredCount.
    pub desired: u32,
    /// minimumHealthyPercent.
    pub min_healthy_percent: u32,
    /// maximumPercent.
    pub max_percent: u32,
}

impl Bounds {
    /// Most tasks PENDING or RUNNING: floor(D × max / 100).
    pub fn ceiling(&self) -> u32 {
        (u64::from(self.desired) * u64::from(self.max_percent) / 100) as u32
    }

    /// Fewest healthy tasks: ceil(D × min / 100).
    pub fn floor(&self) -> u32 {
        (u64::from(self.desired) * u64::from(self.min_healthy_percent)).div_ceil(100) as u32
    }
}

/// One step of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The PRIMARY deployment's new count.
    pub primary: u32,
    /// The older deployments' new counts, in input order.
    pub old: Vec<u32>,
    /// Neither starting nor stopping is allowed: ECS's "unable to stop or start tasks" event.
    pub stuck: bool,
    /// The rollout is done: PRIMARY has D healthy tasks and the others none.
    pub completed: bool,
}

/// Plans one step. `old` lists the older deployments, oldest first.
pub fn step(bounds: Bounds, primary: DeploymentState, old: &[DeploymentState]) -> Step {
    let d = bounds.desired;
    let ceiling = bounds.ceiling();
    let floor = bounds.floor();
    let live: u32 = primary.live + old.iter().map(|o| o.live).sum::<u32>();
    let healthy: u32 = primary.healthy + old.iter().map(|o| o.healthy).sum::<u32>();
    let old_live: u32 = old.iter().map(|o| o.live).sum();

    // Start: raise PRIMARY into the room under the ceiling (never above D, never below what it
    // already asks for).
    let room = ceiling.saturating_sub(live);
    let new_primary = primary.desired.max(primary.live + room).min(d);

    // Stop: older deployments keep only as many healthy tasks as the floor still needs beyond
    // PRIMARY's healthy ones; their unhealthy tasks can always go.
    let mut keep_healthy = floor.saturating_sub(primary.healthy);
    let mut new_old = Vec::with_capacity(old.len());
    // The newest old deployments keep their tasks longest: walk from newest to oldest.
    for o in old.iter().rev() {
        let keep = o.healthy.min(keep_healthy);
        keep_healthy -= keep;
        new_old.push(keep.min(o.desired));
    }
    new_old.reverse();

    let can_start = new_primary > primary.desired;
    let can_stop = new_old.iter().zip(old).any(|(n, o)| *n < o.desired);
    let completed = primary.healthy >= d && primary.live == d && old_live == 0;
    // Stuck: PRIMARY still short of D, yet nothing may start or stop. (PRIMARY at D with its
    // tasks still starting is waiting, not stuck.)
    let stuck = !completed
        && !can_start
        && !can_stop
        && new_primary < d
        && old_live > 0
        && room == 0
        && healthy <= floor;
    Step {
        primary: new_primary,
        old: new_old,
        stuck,
        completed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(d: u32, min: u32, max: u32) -> Bounds {
        Bounds {
            desired: d,
            min_healthy_percent: min,
            max_percent: max,
        }
    }

    fn dep(desired: u32, live: u32, healthy: u32) -> DeploymentState {
        DeploymentState {
            desired,
            live,
            healthy,
        }
    }

    #[test]
    fn ecs_worked_examples() {
        // desired 4, min 50: may stop 2 before starting 2.
        let s = step(b(4, 50, 100), dep(0, 0, 0), &[dep(4, 4, 4)]);
        assert_eq!((s.primary, s.old.clone()), (0, vec![2]));
        // desired 4, max 200: may start 4 new before stopping any.
        let s = step(b(4, 100, 200), dep(0, 0, 0), &[dep(4, 4, 4)]);
        assert_eq!((s.primary, s.old.clone()), (4, vec![4]));
        // desired 2, min 75 → ceil(1.5) = 2, max 100: stuck.
        let s = step(b(2, 75, 100), dep(0, 0, 0), &[dep(2, 2, 2)]);
        assert!(s.stuck);
        // desired 3, max 125 → floor(3.75) = 3 and min 100: stuck.
        let s = step(b(3, 100, 125), dep(0, 0, 0), &[dep(3, 3, 3)]);
        assert!(s.stuck);
    }

    #[test]
    fn completes_when_primary_is_whole_and_healthy() {
        let s = step(b(3, 100, 200), dep(3, 3, 3), &[dep(0, 0, 0)]);
        assert!(s.completed);
        let s = step(b(3, 100, 200), dep(3, 3, 2), &[dep(0, 0, 0)]);
        assert!(!s.completed);
    }

    #[test]
    fn waiting_for_new_tasks_to_turn_healthy_is_not_stuck() {
        // D 3, 100/200: PRIMARY already at 3 (starting), the old 3 healthy: wait, do not cry.
        let s = step(b(3, 100, 200), dep(3, 3, 0), &[dep(3, 3, 3)]);
        assert!(!s.stuck);
        assert_eq!(s.old, [3]);
    }
}

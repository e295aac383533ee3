//! Capacity providers: the `base`/`weight` split of a capacity provider strategy, and the
//! scaler's plan — CapacityProviderReservation (CPR = M / N × 100), target tracking of
//! `targetCapacity`, and scale-in of empty instances only.

use std::collections::BTreeMap;

/// One item of a capacity provider strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Capacity provider name.
    pub provider: String,
    /// Tasks this provider gets first (only one item may have a base).
    pub base: u32,
    /// Relative share of the rest.
    pub weight: u32,
}

/// A capacity provider strategy as shares (a missing base or weight is 0).
pub fn shares(strategy: Vec<capstan_core::CapacityProviderStrategyItem>) -> Vec<Share> {
    strategy
        .into_iter()
        .map(|i| Share {
            provider: i.capacity_provider,
            base: i.base.unwrap_or(0),
            weight: i.weight.unwrap_or(0),
        })
        .collect()
}

/// How `count` tasks split over `strategy`, in the strategy's order: each item's `base` first
/// (in order, until the count runs out), then the rest in proportion to `weight`, rounded by the
/// largest remainder with ties going to the earlier item. Weight-0 items get only their base.
pub fn split(count: u32, strategy: &[Share]) -> Vec<u32> {
    let mut out = vec![0u32; strategy.len()];
    let mut left = count;
    for (i, s) in strategy.iter().enumerate() {
        let b = s.base.min(left);
        out[i] += b;
        left -= b;
    }
    let total: u64 = strategy.iter().map(|s| u64::from(s.weight)).sum();
    if left == 0 || total == 0 {
        return out;
    }
    let mut given = 0u32;
    let mut remainders: Vec<(u64, usize)> = Vec::new();
    for (i, s) in strategy.iter().enumerate() {
        let exact = u64::from(left) * u64::from(s.weight);
        let whole = (exact / total) as u32;
        out[i] += whole;
        given += whole;
        if s.weight > 0 {
            remainders.push((exact % total, i));
        }
    }
    // Largest remainder first; equal remainders keep strategy order (stable sort).
    remainders.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (_, i) in remainders.into_iter().take((left - given) as usize) {
        out[i] += 1;
    }
    out
}

/// Managed scaling settings with ECS's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// Target CPR, 1–100.
    pub target_capacity: u32,
    /// Fewest instances a scale-out adds.
    pub min_step: u32,
    /// Most instances one scale-out adds (and one scale-in removes).
    pub max_step: u32,
    /// Seconds a new instance warms up; no scale-out meanwhile.
    pub warmup_secs: f64,
    /// Seconds an instance must be empty before it is scaled in.
    pub scale_in_after_secs: f64,
    /// Drain instances before terminating them.
    pub managed_draining: bool,
}

impl Scaling {
    /// A provider's settings with ECS's defaults (targetCapacity 100, steps 1 and 10000, warm-up
    /// 300 s, managed draining on) and Capstan's 15-minute scale-in evaluation period.
    pub fn of(ng: &capstan_core::capacity::NodeGroupProvider) -> Self {
        let ms = ng.managed_scaling.clone().unwrap_or_default();
        Self {
            target_capacity: ms.target_capacity.unwrap_or(100).clamp(1, 100),
            min_step: ms.minimum_scaling_step_size.unwrap_or(1).max(1),
            max_step: ms.maximum_scaling_step_size.unwrap_or(10_000).max(1),
            warmup_secs: f64::from(ms.instance_warmup_period.unwrap_or(300)),
            scale_in_after_secs: 60.0
                * f64::from(ms.scale_in_evaluation_period_minutes.unwrap_or(15)),
            managed_draining: ng.managed_draining.as_deref() != Some("DISABLED"),
        }
    }

    /// Whether managed scaling is on (ENABLED unless DISABLED).
    pub fn enabled(ng: &capstan_core::capacity::NodeGroupProvider) -> bool {
        ng.managed_scaling
            .as_ref()
            .and_then(|m| m.status.as_deref())
            != Some("DISABLED")
    }
}

/// One instance of the node group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInstance {
    /// The provider's instance id.
    pub id: String,
    /// The container instance its agent registered, once it has.
    pub container_instance: Option<String>,
    /// When it was launched (epoch seconds).
    pub launched_at: f64,
    /// Non-daemon tasks on it that are not STOPPED.
    pub busy_tasks: u32,
    /// All tasks on it that are not STOPPED (daemon ones included).
    pub all_tasks: u32,
    /// Its container instance is DRAINING.
    pub draining: bool,
    /// The provider is terminating it.
    pub terminating: bool,
}

/// What one PROVISIONING task needs (CPU units, MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// CPU units.
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
}

/// Everything the scaler knows about one capacity provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingInput {
    /// Settings.
    pub scaling: Scaling,
    /// Group bounds and its desired capacity now.
    pub min_size: u32,
    /// Most instances.
    pub max_size: u32,
    /// Desired capacity the provider holds now.
    pub desired: u32,
    /// One instance's CPU units and MiB (the group's instance shape).
    pub instance: Need,
    /// The group's instances.
    pub instances: Vec<GroupInstance>,
    /// PROVISIONING tasks waiting for this provider.
    pub provisioning: Vec<Need>,
    /// Since when each registered instance has been empty (container instance id → epoch s).
    pub empty_since: BTreeMap<String, f64>,
}

/// The scaler's decision for one provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScalingPlan {
    /// M: instances needed (busy instances plus the estimate for PROVISIONING tasks).
    pub needed: u32,
    /// N: instances running (registered, not terminating).
    pub running: u32,
    /// CapacityProviderReservation, percent.
    pub reservation: f64,
    /// Desired capacity to set (scale-out); `None` to leave it.
    pub set_desired: Option<u32>,
    /// Container instances to mark DRAINING.
    pub drain: Vec<String>,
    /// Provider instance ids to terminate.
    pub terminate: Vec<String>,
    /// Since when each registered instance has been empty, to keep for the next round.
    pub empty_since: BTreeMap<String, f64>,
    /// Why nothing happened, when a scale-out was held back.
    pub held: Option<String>,
    /// PROVISIONING tasks that fit no instance of the group's shape (never scaled for).
    pub unfit: u32,
}

impl ScalingPlan {
    /// The provider's status document for this plan: the group's bounds, the desired capacity
    /// it holds after the round, and the PROVISIONING tasks counted. Unstamped.
    pub fn status(
        &self,
        min_size: u32,
        max_size: u32,
        desired: u32,
        provisioning: u32,
    ) -> capstan_core::capacity::CapacityProviderStatusDoc {
        capstan_core::capacity::CapacityProviderStatusDoc {
            capacity_provider_reservation: (self.reservation * 100.0).round() / 100.0,
            instances_needed: self.needed,
            running_instances: self.running,
            desired_capacity: desired,
            min_size,
            max_size,
            provisioning_tasks: provisioning,
            empty_since: self.empty_since.clone(),
            message: self.held.clone().or_else(|| {
                (self.unfit > 0).then(|| {
                    format!(
                        "{} PROVISIONING tasks need more than one instance of the group holds",
                        self.unfit
                    )
                })
            }),
            updated_at: None,
        }
    }
}

/// Instances of `shape` needed to hold `tasks`, first-fit decreasing; tasks bigger than one
/// instance are left out and counted separately.
pub fn binpack(tasks: &[Need], shape: Need) -> (u32, u32) {
    let mut sorted: Vec<Need> = tasks.to_vec();
    sorted.sort_by_key(|t| std::cmp::Reverse((t.cpu, t.memory)));
    let mut bins: Vec<Need> = Vec::new();
    let mut unfit = 0;
    for t in sorted {
        if t.cpu > shape.cpu || t.memory > shape.memory {
            unfit += 1;
            continue;
        }
        match bins
            .iter_mut()
            .find(|b| b.cpu >= t.cpu && b.memory >= t.memory)
        {
            Some(b) => {
                b.cpu -= t.cpu;
                b.memory -= t.memory;
            }
            None => bins.push(Need {
                cpu: shape.cpu - t.cpu,
                memory: shape.memory - t.memory,
            }),
        }
    }
    (bins.len() as u32, unfit)
}

/// CPR with ECS's special cases: M = N = 0 → 100; N = 0 < M → 200.
pub fn reservation(needed: u32, running: u32) -> f64 {
    match (needed, running) {
        (0, 0) => 100.0,
        (_, 0) => 200.0,
        (m, n) => f64::from(m) * 100.0 / f64::from(n),
    }
}

/// Plans one round for one provider. Scale-out sets the desired capacity to a value computed from
/// the state (never an increment), so a new leader repeating the round sets the same value.
pub fn plan<R: rand::Rng + ?Sized>(input: &ScalingInput, now: f64, _rng: &mut R) -> ScalingPlan {
    let s = &input.scaling;
    let live: Vec<&GroupInstance> = input.instances.iter().filter(|i| !i.terminating).collect();
    let registered: Vec<&&GroupInstance> = live
        .iter()
        .filter(|i| i.container_instance.is_some())
        .collect();
    let busy = registered.iter().filter(|i| i.busy_tasks > 0).count() as u32;
    let (extra, unfit) = binpack(&input.provisioning, input.instance);
    let needed = busy + extra;
    let running = registered.len() as u32;
    let mut out = ScalingPlan {
        needed,
        running,
        reservation: reservation(needed, running),
        unfit,
        ..Default::default()
    };

    // Emptiness, for the scale-in evaluation period.
    for i in &registered {
        if let Some(ci) = &i.container_instance
            && i.busy_tasks == 0
        {
            let since = input.empty_since.get(ci).copied().unwrap_or(now);
            out.empty_since.insert(ci.clone(), since);
        }
    }

    // Target tracking: the capacity that puts CPR at targetCapacity.
    let target = (u64::from(needed) * 100).div_ceil(u64::from(s.target_capacity.max(1))) as u32;
    let target = target.clamp(input.min_size, input.max_size.max(input.min_size));
    let current = input.desired.max(live.len() as u32);
    if target > current {
        let warming = live.iter().any(|i| i.launched_at + s.warmup_secs > now);
        if warming {
            out.held = Some("an instance is within its warm-up period".into());
        } else {
            let step = (target - current).clamp(s.min_step.max(1), s.max_step.max(1));
            out.set_desired = Some((current + step).min(input.max_size));
        }
        return out;
    }

    // Scale-in: only empty instances, only after the evaluation period, never below the target
    // or the group's minimum; instances already drained are terminated.
    if !input.provisioning.is_empty() {
        return out;
    }
    let keep = target.max(input.min_size);
    let mut removable = (live.len() as u32)
        .saturating_sub(keep)
        .min(s.max_step.max(1));
    // Finish what an earlier round began: drained, empty instances go first.
    let mut candidates: Vec<&&&GroupInstance> = registered
        .iter()
        .filter(|i| i.busy_tasks == 0)
        .filter(|i| {
            i.container_instance
                .as_ref()
                .and_then(|ci| out.empty_since.get(ci))
                .is_some_and(|since| now - since >= s.scale_in_after_secs)
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.draining
            .cmp(&a.draining)
            .then(b.launched_at.total_cmp(&a.launched_at))
    });
    for i in candidates {
        if removable == 0 {
            break;
        }
        removable -= 1;
        let ci = i.container_instance.clone().unwrap_or_default();
        if s.managed_draining && !i.draining {
            out.drain.push(ci);
        } else if i.all_tasks == 0 {
            out.terminate.push(i.id.clone());
        }
        // A drained instance whose daemon tasks are still stopping waits a round.
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn share(p: &str, base: u32, weight: u32) -> Share {
        Share {
            provider: p.into(),
            base,
            weight,
        }
    }

    #[test]
    fn base_first_then_weights() {
        let s = [share("A", 2, 1), share("B", 0, 3)];
        assert_eq!(split(10, &s), [4, 6], "ECS's worked example");
        assert_eq!(split(1, &s), [1, 0], "base first");
        assert_eq!(split(2, &s), [2, 0]);
        assert_eq!(split(3, &s), [2, 1], "remainder 1 split 1:3 goes to B");
        assert_eq!(split(0, &s), [0, 0]);
        // Equal remainders go to the earlier item.
        assert_eq!(split(1, &[share("A", 0, 1), share("B", 0, 1)]), [1, 0]);
        assert_eq!(split(3, &[share("A", 0, 1), share("B", 0, 1)]), [2, 1]);
        // Weight 0 gets only its base.
        assert_eq!(split(5, &[share("A", 1, 0), share("B", 0, 1)]), [1, 4]);
    }

    proptest! {
        #[test]
        fn split_hands_out_exactly_count(count in 0u32..500, w in proptest::collection::vec((0u32..5, 0u32..10), 1..5)) {
            let mut s: Vec<Share> = w.iter().enumerate().map(|(i, (b, w))| share(&i.to_string(), if i == 0 { *b } else { 0 }, *w)).collect();
            if s.iter().all(|x| x.weight == 0) { s[0].weight = 1; }
            let out = split(count, &s);
            prop_assert_eq!(out.iter().sum::<u32>(), count);
            // Beyond the base, each share is within one task of its exact proportion.
            let base = s[0].base.min(count);
            let rest = f64::from(count - base);
            let total: f64 = s.iter().map(|x| f64::from(x.weight)).sum();
            for (i, x) in s.iter().enumerate() {
                let mine = f64::from(out[i]) - if i == 0 { f64::from(base) } else { 0.0 };
                let exact = rest * f64::from(x.weight) / total;
                prop_assert!((mine - exact).abs() < 1.0 + 1e-9, "{i}: {mine} vs {exact}");
            }
        }
    }

    fn settings() -> Scaling {
        Scaling {
            target_capacity: 100,
            min_step: 1,
            max_step: 10_000,
            warmup_secs: 300.0,
            scale_in_after_secs: 900.0,
            managed_draining: true,
        }
    }

    fn inst(i: usize, busy: u32) -> GroupInstance {
        GroupInstance {
            id: format!("i{i}"),
            container_instance: Some(format!("ci{i}")),
            launched_at: 0.0,
            busy_tasks: busy,
            all_tasks: busy,
            draining: false,
            terminating: false,
        }
    }

    fn input(instances: Vec<GroupInstance>, provisioning: usize) -> ScalingInput {
        ScalingInput {
            scaling: settings(),
            min_size: 0,
            max_size: 100,
            desired: instances.len() as u32,
            instance: Need {
                cpu: 1024,
                memory: 2048,
            },
            instances,
            provisioning: vec![
                Need {
                    cpu: 1024,
                    memory: 512
                };
                provisioning
            ],
            empty_since: BTreeMap::new(),
        }
    }

    /// The tables' clock, epoch seconds.
    const NOW: f64 = 10_000.0;

    /// The planner at [`NOW`] (the scaler draws nothing at random).
    fn plan(i: &ScalingInput) -> ScalingPlan {
        plan_at(i, NOW)
    }

    fn plan_at(i: &ScalingInput, now: f64) -> ScalingPlan {
        super::plan(i, now, &mut rand::rng())
    }

    #[test]
    fn ecs_worked_numbers() {
        // N=10, 8 busy, nothing provisioning → M=8, CPR 80.
        let mut v: Vec<GroupInstance> = (0..8).map(|i| inst(i, 1)).collect();
        v.extend((8..10).map(|i| inst(i, 0)));
        let p = plan(&input(v, 0));
        assert_eq!((p.needed, p.running), (8, 10));
        assert!((p.reservation - 80.0).abs() < 1e-9);
        assert_eq!(p.set_desired, None);
        // N=10 all busy + tasks needing 3 more instances → M=13, CPR 130, scale out by 3.
        let p = plan(&input((0..10).map(|i| inst(i, 2)).collect(), 3));
        assert_eq!(p.needed, 13);
        assert!((p.reservation - 130.0).abs() < 1e-9);
        assert_eq!(p.set_desired, Some(13));
        // targetCapacity 90, N=10, M=9 → CPR 90: steady, one spare instance kept.
        let mut v: Vec<GroupInstance> = (0..9).map(|i| inst(i, 1)).collect();
        v.push(inst(9, 0));
        let mut i = input(v, 0);
        i.scaling.target_capacity = 90;
        i.empty_since.insert("ci9".into(), 0.0);
        let p = plan(&i);
        assert!((p.reservation - 90.0).abs() < 1e-9);
        assert_eq!(p.set_desired, None);
        assert!(p.drain.is_empty() && p.terminate.is_empty(), "{p:?}");
    }

    #[test]
    fn special_cases_and_steps() {
        assert!((reservation(0, 0) - 100.0).abs() < 1e-9);
        assert!((reservation(3, 0) - 200.0).abs() < 1e-9);
        // From zero: 10 tasks of 512 on 1024-CPU instances → 5 instances at once.
        let mut i = input(vec![], 0);
        i.provisioning = vec![
            Need {
                cpu: 512,
                memory: 256
            };
            10
        ];
        let p = plan(&i);
        assert_eq!(p.set_desired, Some(5));
        // The step bounds apply.
        i.scaling.max_step = 2;
        assert_eq!(plan(&i).set_desired, Some(2));
        i.scaling.max_step = 10_000;
        i.scaling.min_step = 7;
        assert_eq!(plan(&i).set_desired, Some(7));
        // Never beyond the group's maximum.
        i.max_size = 3;
        assert_eq!(plan(&i).set_desired, Some(3));
        // Tasks bigger than an instance are never scaled for.
        let mut i = input(vec![], 0);
        i.provisioning = vec![Need {
            cpu: 4096,
            memory: 1,
        }];
        let p = plan(&i);
        assert_eq!((p.unfit, p.set_desired), (1, None));
    }

    #[test]
    fn no_scale_out_while_an_instance_warms_up() {
        let mut v: Vec<GroupInstance> = (0..2).map(|i| inst(i, 1)).collect();
        v[1].launched_at = 9_900.0;
        let p = plan(&input(v, 4));
        assert_eq!(p.set_desired, None);
        assert!(p.held.is_some());
    }

    #[test]
    fn the_same_state_gives_the_same_desired_capacity() {
        // A new leader repeating a round after the provider already raised desired capacity
        // does not add again: the value comes from the state.
        let mut i = input((0..2).map(|i| inst(i, 1)).collect(), 4);
        let first = plan(&i).set_desired.expect("scale out");
        i.desired = first;
        assert_eq!(plan(&i).set_desired, None);
    }

    #[test]
    fn scale_in_drains_then_terminates_only_empty_instances_after_the_period() {
        let v = vec![inst(0, 1), inst(1, 0), inst(2, 0)];
        let mut i = input(v, 0);
        i.min_size = 1;
        // Just became empty: nothing yet.
        let p = plan(&i);
        assert!(p.drain.is_empty());
        assert_eq!(p.empty_since.get("ci1"), Some(&10_000.0));
        // After the evaluation period: drain both empty ones (target 1 = the busy one).
        i.empty_since = p.empty_since;
        let p = plan_at(&i, NOW + 900.0);
        assert_eq!(p.drain, ["ci1", "ci2"]);
        assert!(p.terminate.is_empty());
        // Drained and empty: terminate.
        i.instances[1].draining = true;
        i.instances[2].draining = true;
        let p = plan_at(&i, NOW + 900.0);
        assert_eq!(p.terminate.len(), 2);
        // A busy instance is never a candidate, and the minimum holds.
        i.instances[0].busy_tasks = 0;
        i.instances[0].all_tasks = 0;
        i.empty_since.insert("ci0".into(), 0.0);
        i.instances[0].draining = true;
        let p = plan_at(&i, NOW + 900.0);
        assert_eq!(p.terminate.len(), 2, "min_size 1 keeps one: {p:?}");
        // A drained instance with a daemon task still stopping waits.
        i.instances[1].all_tasks = 1;
        let p = plan_at(&i, NOW + 900.0);
        assert!(!p.terminate.contains(&"i1".to_string()));
    }
}

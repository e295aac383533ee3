//! Node loss: a task whose container instance has been missing (its registration expired with
//! the agent's lease) for longer than the grace period is recorded STOPPED with stop code
//! `InfrastructureHealth`, and the service plan replaces it.
//!
//! The grace is the election TTL by default: an agent that restarts or loses etcd for a moment
//! re-registers well within it. The clock starts when the scheduler first sees the instance
//! missing, and is forgotten once it is back.

use std::collections::{BTreeMap, BTreeSet};

/// One task that still counts as running, and the instance it is placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Task id.
    pub task: String,
    /// Container instance id.
    pub instance: String,
}

/// What the node-loss rule looks at.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Tasks not yet STOPPED, with their instance.
    pub tasks: Vec<Placed>,
    /// Instances registered now.
    pub present: BTreeSet<String>,
    /// When each missing instance was first seen missing (epoch seconds), from the last plan.
    pub missing_since: BTreeMap<String, f64>,
    /// Seconds an instance may be missing before its tasks are lost.
    pub grace: f64,
}

/// The decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Tasks to record STOPPED: their host is lost.
    pub lost: Vec<Placed>,
    /// The clocks to keep for the next plan.
    pub missing_since: BTreeMap<String, f64>,
    /// Seconds until a task still within its grace should be looked at again.
    pub recheck: Option<f64>,
}

/// Applies the node-loss rule at `now` (nothing is drawn at random).
pub fn plan<R: rand::Rng + ?Sized>(input: &Input, now: f64, _rng: &mut R) -> Plan {
    let mut since = input.missing_since.clone();
    since.retain(|id, _| !input.present.contains(id));
    let mut out = Plan::default();
    for t in &input.tasks {
        if input.present.contains(&t.instance) {
            continue;
        }
        let first = *since.entry(t.instance.clone()).or_insert(now);
        let missing = now - first;
        if missing >= input.grace {
            out.lost.push(t.clone());
        } else {
            let left = input.grace - missing;
            out.recheck = Some(out.recheck.map_or(left, |r: f64| r.min(left)));
        }
    }
    out.missing_since = since;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(task: &str, instance: &str) -> Placed {
        Placed {
            task: task.into(),
            instance: instance.into(),
        }
    }

    #[test]
    fn tasks_are_lost_only_after_their_instance_was_missing_for_the_grace() {
        let mut input = Input {
            tasks: vec![placed("t1", "i-gone"), placed("t2", "i-here")],
            present: ["i-here".to_string()].into(),
            grace: 5.0,
            ..Default::default()
        };
        // First seen missing: the clock starts, look again when the grace is over.
        let p = plan(&input, 100.0, &mut rand::rng());
        assert!(p.lost.is_empty());
        assert_eq!(p.recheck, Some(5.0));
        assert_eq!(p.missing_since.get("i-gone"), Some(&100.0));

        input.missing_since = p.missing_since;
        let p = plan(&input, 103.0, &mut rand::rng());
        assert!(p.lost.is_empty());
        assert_eq!(p.recheck, Some(2.0));

        input.missing_since = p.missing_since;
        let p = plan(&input, 105.0, &mut rand::rng());
        assert_eq!(p.lost, vec![placed("t1", "i-gone")]);
        assert_eq!(p.recheck, None);
    }

    #[test]
    fn an_instance_that_comes_back_restarts_its_clock() {
        let mut input = Input {
            tasks: vec![placed("t1", "i-1")],
            grace: 5.0,
            missing_since: [("i-1".to_string(), 100.0)].into(),
            ..Default::default()
        };
        input.present.insert("i-1".into());
        let p = plan(&input, 200.0, &mut rand::rng());
        assert!(p.lost.is_empty() && p.missing_since.is_empty());

        // Gone again later: a fresh grace, not the old clock.
        input.present.clear();
        input.missing_since = p.missing_since;
        let p = plan(&input, 300.0, &mut rand::rng());
        assert!(p.lost.is_empty());
        assert_eq!(p.missing_since.get("i-1"), Some(&300.0));
    }

    #[test]
    fn the_recheck_is_the_soonest_of_several_missing_instances() {
        let input = Input {
            tasks: vec![placed("t1", "i-1"), placed("t2", "i-2")],
            grace: 10.0,
            missing_since: [("i-1".to_string(), 95.0)].into(),
            ..Default::default()
        };
        let p = plan(&input, 100.0, &mut rand::rng());
        assert_eq!(p.recheck, Some(5.0));
        assert_eq!(p.missing_since.len(), 2);
    }
}

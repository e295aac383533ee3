//! The faults and their seeded schedule (pure: the same seed gives the same schedule, so a run
//! that found a violation can be replayed).
//!
//! Short mode injects every kind once, in a seeded order; a soak of a given duration draws kinds
//! at random until the faults' holds, recoveries and gaps would pass it. Each fault is injected,
//! held for its kind's hold time, healed, and then the soak waits until the system serves again
//! before the next gap begins, so the recovery time of each fault is its own.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A controller that runs as leader-elected replicas on their own hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// capstan-scheduler.
    Scheduler,
    /// capstan-deployer.
    Deployer,
    /// capstan-scaler.
    Scaler,
}

impl Role {
    /// Its election name (and the prefix of its hosts' names).
    pub fn name(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Deployer => "deployer",
            Role::Scaler => "scaler",
        }
    }
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL of the role's leader host; started again after the hold.
    KillLeader(Role),
    /// SIGSTOP of the role's leader for longer than its lease, then SIGCONT: fenced, it must
    /// not act on what it believed before.
    StopLeader(Role),
    /// SIGKILL of an agent host (its tasks die with it); started again after the hold.
    KillAgent,
    /// An agent host off the network for longer than the node-loss grace, then back.
    DisconnectAgent,
    /// A controller leader's host off the network, then back.
    DisconnectController(Role),
    /// One etcd member stopped, then started.
    StopEtcdMember,
    /// Two of the three etcd members paused (no quorum) for 20 s.
    PauseEtcdMajority,
    /// SIGKILL of an LB host (registrar and HAProxy); started again after the hold.
    KillLb,
}

impl Kind {
    /// Every kind, in a fixed order (short mode shuffles it).
    pub const ALL: [Kind; 12] = [
        Kind::KillLeader(Role::Scheduler),
        Kind::KillLeader(Role::Deployer),
        Kind::KillLeader(Role::Scaler),
        Kind::StopLeader(Role::Scheduler),
        Kind::StopLeader(Role::Deployer),
        Kind::KillAgent,
        Kind::DisconnectAgent,
        Kind::DisconnectController(Role::Scheduler),
        Kind::DisconnectController(Role::Deployer),
        Kind::StopEtcdMember,
        Kind::PauseEtcdMajority,
        Kind::KillLb,
    ];

    /// Its row in the report.
    pub fn label(self) -> String {
        match self {
            Kind::KillLeader(r) => format!("SIGKILL {} leader", r.name()),
            Kind::StopLeader(r) => format!("SIGSTOP {} leader", r.name()),
            Kind::KillAgent => "SIGKILL agent host".into(),
            Kind::DisconnectAgent => "disconnect agent host".into(),
            Kind::DisconnectController(r) => format!("disconnect {} leader host", r.name()),
            Kind::StopEtcdMember => "stop one etcd member".into(),
            Kind::PauseEtcdMajority => "pause etcd majority".into(),
            Kind::KillLb => "SIGKILL LB host".into(),
        }
    }

    /// How long the fault lasts before it is healed. A stopped leader is held past its lease
    /// (3 s in the compose deployment) several times over; a disconnected agent past the
    /// node-loss grace (its lease, 5 s, and the scheduler's grace, 3 s), so its tasks are lost.
    pub fn hold(self) -> Duration {
        Duration::from_secs(match self {
            Kind::KillLeader(_) | Kind::KillLb => 5,
            Kind::StopLeader(_) => 12,
            Kind::KillAgent => 8,
            Kind::DisconnectAgent => 20,
            Kind::DisconnectController(_) => 12,
            Kind::StopEtcdMember => 10,
            Kind::PauseEtcdMajority => 20,
        })
    }

    /// Whether tasks can be lost to it (their hosts die or are cut off): the healthy floor is
    /// not checked while it lasts and until the system recovers from it.
    pub fn loses_tasks(self) -> bool {
        matches!(self, Kind::KillAgent | Kind::DisconnectAgent)
    }

    /// Whether it hits LB hosts, so requests through them may fail while it lasts.
    pub fn hits_lb(self) -> bool {
        matches!(self, Kind::KillLb)
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Its kind.
    pub kind: Kind,
    /// Which of the kind's candidate hosts it hits (an index, taken modulo their number).
    pub pick: usize,
    /// The quiet time before it is injected.
    pub gap: Duration,
}

/// Longest the soak waits for the system to serve again after a fault.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// The schedule for `seed`: every kind once (`short`), or kinds drawn at random until their
/// holds and gaps, with `typical_recovery` for each, would pass `duration`.
pub fn schedule(
    seed: u64,
    short: bool,
    duration: Duration,
    typical_recovery: Duration,
) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let gap = |rng: &mut StdRng| Duration::from_millis(rng.random_range(2_000..8_000));
    if short {
        let mut kinds = Kind::ALL.to_vec();
        // Fisher–Yates, from the seed.
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.random_range(0..=i));
        }
        return kinds
            .into_iter()
            .map(|kind| Fault {
                kind,
                pick: rng.random_range(0..64),
                gap: gap(&mut rng),
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut spent = Duration::ZERO;
    loop {
        let kind = Kind::ALL[rng.random_range(0..Kind::ALL.len())];
        let f = Fault {
            kind,
            pick: rng.random_range(0..64),
            gap: gap(&mut rng),
        };
        spent += f.gap + kind.hold() + typical_recovery;
        if spent > duration && !out.is_empty() {
            return out;
        }
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_mode_has_every_kind_once_and_a_seed_replays_it() {
        let a = schedule(7, true, Duration::ZERO, Duration::ZERO);
        let mut kinds: Vec<Kind> = a.iter().map(|f| f.kind).collect();
        kinds.sort();
        let mut all = Kind::ALL.to_vec();
        all.sort();
        assert_eq!(kinds, all);
        assert_eq!(a, schedule(7, true, Duration::ZERO, Duration::ZERO));
        assert_ne!(
            a.iter().map(|f| f.kind).collect::<Vec<_>>(),
            schedule(8, true, Duration::ZERO, Duration::ZERO)
                .iter()
                .map(|f| f.kind)
                .collect::<Vec<_>>(),
            "another seed, another order"
        );
    }

    #[test]
    fn a_soak_fills_its_duration_and_no_more() {
        let rec = Duration::from_secs(15);
        let d = Duration::from_secs(30 * 60);
        let s = schedule(1, false, d, rec);
        let total: Duration = s.iter().map(|f| f.gap + f.kind.hold() + rec).sum();
        assert!(total <= d, "{total:?}");
        let one_more = Kind::PauseEtcdMajority.hold() + Duration::from_secs(8) + rec;
        assert!(total + one_more > d, "{total:?} leaves room for more");
        assert!(s.len() > 30, "{} faults in 30 minutes", s.len());
        // A zero duration still injects one fault.
        assert_eq!(schedule(1, false, Duration::ZERO, rec).len(), 1);
    }

    #[test]
    fn only_host_losses_lose_tasks_and_only_lb_kills_hit_lb_hosts() {
        let losing: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.loses_tasks()).collect();
        assert_eq!(losing, vec![Kind::KillAgent, Kind::DisconnectAgent]);
        let lb: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.hits_lb()).collect();
        assert_eq!(lb, vec![Kind::KillLb]);
    }
}

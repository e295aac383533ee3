//! The faults and their seeded schedule (pure: the same seed gives the same schedule, so a run
//! that found a violation can be replayed).
//!
//! Short mode injects every kind once, in a seeded order; a soak of a given duration draws kinds
//! at random and keeps injecting until that much time has passed since the first fault (the
//! clock is the caller's: the schedule is asked for the next fault with the time spent so far).
//! Each fault is injected, held for its kind's hold time, healed, and then the soak waits until
//! the system serves again before the next gap begins, so the recovery time of each fault is its
//! own.

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

/// How long before the end the workload stops starting deployments, so the one in progress
/// finishes (about two fault cycles) and the end converges within its limit.
pub const WIND_DOWN: Duration = Duration::from_secs(90);

/// The seeded sequence of faults of one soak.
#[derive(Debug)]
pub struct Schedule {
    rng: StdRng,
    /// Short mode: the kinds still to inject, last first.
    short: Option<Vec<Kind>>,
    /// A soak's length, counted from the first fault.
    duration: Duration,
    /// Faults handed out so far.
    given: usize,
}

impl Schedule {
    /// The schedule for `seed`: every kind once (`short`), or random kinds for `duration`.
    pub fn new(seed: u64, short: bool, duration: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let short = short.then(|| {
            let mut kinds = Kind::ALL.to_vec();
            // Fisher–Yates, from the seed.
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.random_range(0..=i));
            }
            kinds.reverse();
            kinds
        });
        Self {
            rng,
            short,
            duration,
            given: 0,
        }
    }

    /// The next fault once `elapsed` has passed since the first began; none when the soak is
    /// over. A soak always injects at least one fault.
    pub fn next(&mut self, elapsed: Duration) -> Option<Fault> {
        let kind = match &mut self.short {
            Some(kinds) => kinds.pop()?,
            None if self.given > 0 && elapsed >= self.duration => return None,
            None => Kind::ALL[self.rng.random_range(0..Kind::ALL.len())],
        };
        self.given += 1;
        Some(Fault {
            kind,
            pick: self.rng.random_range(0..64),
            gap: Duration::from_millis(self.rng.random_range(2_000..8_000)),
        })
    }

    /// Whether the soak is about to end at `elapsed`, with the fault just handed out: short
    /// mode's last two faults, or a soak's last [`WIND_DOWN`].
    pub fn winding_down(&self, elapsed: Duration) -> bool {
        match &self.short {
            Some(kinds) => kinds.len() <= 1,
            None => elapsed + WIND_DOWN >= self.duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fault of a schedule, with `step` of time passing per fault.
    fn all(mut s: Schedule, step: Duration) -> Vec<Fault> {
        let mut out = Vec::new();
        let mut elapsed = Duration::ZERO;
        while let Some(f) = s.next(elapsed) {
            out.push(f);
            elapsed += step;
        }
        out
    }

    #[test]
    fn short_mode_has_every_kind_once_and_a_seed_replays_it() {
        let a = all(Schedule::new(7, true, Duration::ZERO), Duration::ZERO);
        let mut kinds: Vec<Kind> = a.iter().map(|f| f.kind).collect();
        kinds.sort();
        let mut all_kinds = Kind::ALL.to_vec();
        all_kinds.sort();
        assert_eq!(kinds, all_kinds);
        assert_eq!(
            a,
            all(Schedule::new(7, true, Duration::ZERO), Duration::ZERO)
        );
        let b = all(Schedule::new(8, true, Duration::ZERO), Duration::ZERO);
        assert_ne!(
            a.iter().map(|f| f.kind).collect::<Vec<_>>(),
            b.iter().map(|f| f.kind).collect::<Vec<_>>(),
            "another seed, another order"
        );
    }

    #[test]
    fn short_mode_winds_down_for_its_last_two_faults() {
        let mut s = Schedule::new(3, true, Duration::ZERO);
        let mut winding = Vec::new();
        while s.next(Duration::ZERO).is_some() {
            winding.push(s.winding_down(Duration::ZERO));
        }
        let n = Kind::ALL.len();
        assert_eq!(winding.len(), n);
        assert!(winding[..n - 2].iter().all(|w| !w), "{winding:?}");
        assert!(winding[n - 2..].iter().all(|w| *w), "{winding:?}");
    }

    #[test]
    fn a_soak_lasts_its_duration_whatever_each_fault_takes() {
        let d = Duration::from_secs(30 * 60);
        // Faults that take a minute each: 30 of them. Ones that take 20 s: 90.
        assert_eq!(
            all(Schedule::new(1, false, d), Duration::from_secs(60)).len(),
            30
        );
        assert_eq!(
            all(Schedule::new(1, false, d), Duration::from_secs(20)).len(),
            90
        );
        // The same seed draws the same faults, however long each took.
        let slow = all(Schedule::new(1, false, d), Duration::from_secs(60));
        let fast = all(Schedule::new(1, false, d), Duration::from_secs(20));
        assert_eq!(slow[..], fast[..slow.len()]);
        // A long soak draws every kind.
        let kinds: std::collections::BTreeSet<Kind> = fast.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), Kind::ALL.len());
        // A zero duration still injects one fault.
        assert_eq!(
            all(Schedule::new(1, false, Duration::ZERO), Duration::ZERO).len(),
            1
        );
    }

    #[test]
    fn a_soak_winds_down_in_its_last_stretch() {
        let d = Duration::from_secs(600);
        let s = Schedule::new(1, false, d);
        assert!(!s.winding_down(Duration::from_secs(0)));
        assert!(!s.winding_down(d - WIND_DOWN - Duration::from_secs(1)));
        assert!(s.winding_down(d - WIND_DOWN));
        assert!(s.winding_down(d));
    }

    #[test]
    fn only_host_losses_lose_tasks_and_only_lb_kills_hit_lb_hosts() {
        let losing: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.loses_tasks()).collect();
        assert_eq!(losing, vec![Kind::KillAgent, Kind::DisconnectAgent]);
        let lb: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.hits_lb()).collect();
        assert_eq!(lb, vec![Kind::KillLb]);
    }
}

//! The recorded history: what the agents said about their tasks, every change of the records the
//! invariants are about (etcd watch), every request the workload made and every HTTP request
//! through an LB host, each with the time it was seen (seconds since the soak began).
//!
//! Recording is cheap and never blocks the recorders on each other: one mutex around one vector.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Kind {
    /// An agent's whole task list (the first message of each WatchTasks stream): tasks it runs
    /// (lastStatus RUNNING), by id.
    AgentSnapshot {
        /// The agent host.
        agent: String,
        /// The ids it runs.
        running: Vec<String>,
    },
    /// One task's new state on an agent.
    AgentTask {
        /// The agent host.
        agent: String,
        /// The task id.
        task: String,
        /// Its lastStatus (`RUNNING`, `STOPPED`, …).
        status: String,
    },
    /// The WatchTasks stream of an agent broke (it is unreachable, or stopped).
    AgentLost {
        /// The agent host.
        agent: String,
        /// Why.
        error: String,
    },
    /// A record changed in etcd (`value` none: deleted). `initial`: seen in the first listing.
    Record {
        /// The key.
        key: String,
        /// The document, or none when deleted or undecodable.
        value: Option<serde_json::Value>,
        /// The etcd revision of the change.
        revision: i64,
        /// Part of the listing the history began with.
        initial: bool,
    },
    /// A workload request ended.
    Request {
        /// What it was (`deploy roll roll:4`, …).
        what: String,
        /// The key prefixes it may write.
        writes: Vec<String>,
        /// When it began.
        started: f64,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// An HTTP request through an LB host ended.
    Http {
        /// The LB host.
        lb: String,
        /// The listener port.
        port: u16,
        /// Whether it was answered with 200.
        ok: bool,
        /// When it began.
        started: f64,
        /// What went wrong, when it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A fault was injected.
    FaultStart {
        /// Its number in the schedule.
        id: usize,
        /// Its kind (the report's row).
        fault: String,
        /// The hosts it hit.
        targets: Vec<String>,
        /// Tasks can be lost to it (see [`crate::faults::Kind::loses_tasks`]).
        loses_tasks: bool,
        /// It hits LB hosts: requests through its targets may fail.
        hits_lb: bool,
    },
    /// A fault was healed (the host restarted, reconnected, resumed).
    FaultHealed {
        /// Its number.
        id: usize,
    },
    /// After a fault, the system served again: every service had its desired count running,
    /// every controller a leader and every LB host answered (`recovered` false: it did not
    /// within the limit).
    FaultRecovered {
        /// Its number.
        id: usize,
        /// Whether it recovered within the limit.
        recovered: bool,
    },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the soak began.
    pub at: f64,
    /// What happened.
    #[serde(flatten)]
    pub kind: Kind,
}

/// The shared recorder.
#[derive(Clone)]
pub struct History {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Seconds since the history began.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records `kind` as happening now.
    pub fn record(&self, kind: Kind) {
        let at = self.now();
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Event { at, kind });
    }

    /// Every event so far, in the order recorded.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A fault's start, for the checks' and the report's tests.
#[cfg(test)]
pub(crate) fn fault_start(at: f64, id: usize, fault: &str, target: &str, hits_lb: bool) -> Event {
    Event {
        at,
        kind: Kind::FaultStart {
            id,
            fault: fault.into(),
            targets: vec![target.into()],
            loses_tasks: !hits_lb,
            hits_lb,
        },
    }
}

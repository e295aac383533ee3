//! Capstan's pure planners: functions from a snapshot (and `now`, and a seeded RNG) to a plan.
//! No async, no IO: the controllers gather snapshots and execute plans; the logic and most of
//! the tests live here.

pub mod deploy;
pub mod health;
pub mod hooks;
pub mod node_loss;
pub mod placement;
pub mod query;
pub mod rollout;
pub mod run_task;
pub mod scaling;
pub mod scheduling;
pub mod service;
pub mod targets;
pub mod tasks;

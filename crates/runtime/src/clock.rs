//! The one clock of the controllers: reconcile reads it once per key and passes `now` to the
//! snapshot and the planners, which never read a clock themselves.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, epoch seconds (ECS's timestamps are epoch seconds too).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

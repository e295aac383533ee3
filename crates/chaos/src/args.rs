//! Command-line arguments of `capstan-chaos`.

use std::path::PathBuf;

/// A chaos soak of the compose deployment: a workload, seeded faults, a recorded history, the
/// invariants checked over it and a report. Exits 1 when an invariant was violated.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "capstan-chaos", version)]
pub struct Args {
    /// The compose project to drive (`deploy/compose`, brought up by its up.sh).
    #[arg(long, env = "COMPOSE_PROJECT_NAME", default_value = "capstan")]
    pub project: String,
    /// The first three octets of the project's /24 (up.sh's CAPSTAN_NET).
    #[arg(long, env = "CAPSTAN_NET", default_value = "10.213.0")]
    pub net: String,
    /// The `deploy/compose` directory.
    #[arg(long, default_value = "deploy/compose")]
    pub compose_dir: PathBuf,
    /// The capstan CLI (default: `capstan` next to this binary).
    #[arg(long)]
    pub capstan: Option<PathBuf>,
    /// The seed of the fault schedule and the workload (default: from the clock; the report
    /// prints it, so a run can be replayed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Every fault kind once, in the seed's order (CI's mode: about 5 minutes of faults).
    #[arg(long)]
    pub short: bool,
    /// How long to keep injecting faults, from the first, without --short (a soak: `--duration
    /// 30m`); the fault in progress then finishes and the end converges.
    #[arg(long, default_value = "30m")]
    pub duration: humantime::Duration,
    /// Bring the deployment up first (`up.sh`, which builds nothing with CAPSTAN_SKIP_CARGO).
    #[arg(long)]
    pub up: bool,
    /// Tear the deployment down at the end (`down.sh`, volumes too).
    #[arg(long)]
    pub down: bool,
    /// Write the whole history here, one JSON event per line.
    #[arg(long)]
    pub history: Option<PathBuf>,
}

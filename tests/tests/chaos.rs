//! `capstan-chaos --short` on the compose deployment: every fault kind once while the workload
//! runs, and zero violations of the invariants over the recorded history. Needs the images
//! (`deploy/images/build.sh`, which `scripts/test.sh` runs first), docker and docker-compose;
//! with `CI=true` a missing tool fails the test.
//!
//! The seed is fixed (1) so a failure replays; `CAPSTAN_CHAOS_SEED` picks another.

use std::path::Path;
use std::process::Command;

use capstan_e2e::{binary, tools_or_not_in_ci};

#[test]
fn the_short_soak_passes_every_fault_kind_with_zero_violations() {
    if !tools_or_not_in_ci(&[&["docker", "version"], &["docker-compose", "version"]]) {
        return;
    }
    let seed = std::env::var("CAPSTAN_CHAOS_SEED").unwrap_or_else(|_| "1".into());
    let compose = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose");
    let history = tempfile::NamedTempFile::new().expect("tmp");
    let out = Command::new(binary("capstan-chaos"))
        .args(["--short", "--up", "--down", "--seed", &seed])
        .args(["--project", "capstan-chaos", "--net", "10.215.0"])
        .arg("--compose-dir")
        .arg(&compose)
        .arg("--capstan")
        .arg(binary("capstan"))
        .arg("--history")
        .arg(history.path())
        .output()
        .expect("capstan-chaos runs");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}\n{report}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "capstan-chaos found violations or could not run (exit {:?})",
        out.status.code()
    );
    assert!(report.contains("violations: none"), "{report}");
    // The history holds what the invariants were checked over: every recorder contributed.
    let h = std::fs::read_to_string(history.path()).expect("history");
    for kind in [
        "\"kind\":\"agentSnapshot\"",
        "\"kind\":\"record\"",
        "\"kind\":\"http\"",
        "\"kind\":\"request\"",
        "\"kind\":\"faultRecovered\"",
    ] {
        assert!(h.contains(kind), "no {kind} in the history");
    }
}

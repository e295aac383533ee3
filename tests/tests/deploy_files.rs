//! The deployment files are valid as their tools read them: every systemd unit in
//! `deploy/systemd` passes `systemd-analyze verify` without a warning, and is hardened as
//! docs/operations.md says. With `CI=true` a missing systemd-analyze fails the test.

use std::path::Path;
use std::process::Command;

const COMPONENTS: [&str; 6] = [
    "api",
    "scheduler",
    "deployer",
    "scaler",
    "registrar",
    "agent",
];

#[test]
fn every_systemd_unit_verifies_cleanly_and_is_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is needed (CI=true)"
        );
        eprintln!("systemd-analyze not found: this test did not run");
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    // A root with systemd's own units, the binaries where the units expect them, env files.
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    let units = r.join("etc/systemd/system");
    for d in [
        "usr/local/bin",
        "etc/capstan",
        "etc/systemd/system",
        "usr/lib/systemd",
    ] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(copied.success());
    let mut names = Vec::new();
    for c in COMPONENTS {
        let unit = format!("capstan-{c}.service");
        std::fs::copy(src.join(&unit), units.join(&unit)).expect("unit");
        std::fs::copy(
            src.join(format!("env/{c}.env")),
            r.join(format!("etc/capstan/{c}.env")),
        )
        .expect("env file");
        std::fs::copy("/bin/true", r.join(format!("usr/local/bin/capstan-{c}"))).expect("bin");
        let text = std::fs::read_to_string(src.join(&unit)).expect("read unit");
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "Restart=on-failure",
        ] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
        // A dedicated user for every component but the agent.
        assert_eq!(
            text.contains(&format!("User=capstan-{c}")),
            c != "agent",
            "{unit}: its user"
        );
        names.push(unit);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args(&names)
        .current_dir(&units)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

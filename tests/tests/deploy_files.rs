//! The deployment files are valid as their tools read them: every systemd unit in
//! `deploy/systemd` passes `systemd-analyze verify` without a warning and is hardened as
//! docs/operations.md says; the Helm chart passes `helm lint --strict` and renders the default
//! and the HA release as documented. With `CI=true` a missing tool fails the test.

use std::path::Path;
use std::process::Command;

use capstan_e2e::tools_or_not_in_ci;

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
    if !tools_or_not_in_ci(&[&["systemd-analyze", "--version"]]) {
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
        // The API and the agents get the encryption key as a credential, nobody else.
        assert_eq!(
            text.contains("LoadCredential=encryption-key:/etc/capstan/encryption.key"),
            c == "api" || c == "agent",
            "{unit}: the encryption key"
        );
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

/// `helm` with `args`: its stdout, or the failure with what it said.
fn helm(args: &[&str]) -> String {
    let out = Command::new("helm").args(args).output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_helm_chart_lints_and_renders_a_default_and_an_ha_release() {
    if !tools_or_not_in_ci(&[&["helm", "version"]]) {
        return;
    }
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/capstan");
    let chart = chart.display().to_string();
    let ha = format!("{chart}/values-ha.yaml");
    helm(&["lint", "--strict", &chart]);
    helm(&["lint", "--strict", &chart, "-f", &ha]);
    let count = |text: &str, needle: &str| text.matches(needle).count();
    // Default: one of each, external etcd, agents on every node.
    let one = helm(&["template", "r1", &chart]);
    assert_eq!(
        count(&one, "\nkind: Deployment\n"),
        5,
        "api and 4 controllers"
    );
    assert_eq!(count(&one, "\nkind: DaemonSet\n"), 1, "agents");
    assert_eq!(count(&one, "\nkind: PodDisruptionBudget\n"), 4);
    assert_eq!(count(&one, "\nkind: StatefulSet\n"), 0, "etcd is external");
    assert!(one.contains("https://etcd-0.etcd.example:2379"));
    // The API seals secrets and the agents open them with the key from its own Secret.
    assert_eq!(
        count(
            &one,
            "{name: CAPSTAN_ENCRYPTION_KEY_FILE, value: /encryption/encryption.key}"
        ),
        2,
        "the API and the agents get the encryption key"
    );
    assert_eq!(count(&one, "secretName: capstan-encryption-key"), 2);
    // HA: bundled 3-member etcd, 2 of every controller kept 1 available, probes everywhere.
    let two = helm(&["template", "r1", &chart, "-f", &ha]);
    assert_eq!(
        count(&two, "\n  replicas: 2\n"),
        5,
        "2 APIs, 2 of each controller"
    );
    assert_eq!(count(&two, "minAvailable: 1"), 4);
    assert_eq!(count(&two, "\nkind: StatefulSet\n"), 1);
    assert!(two.contains("r1-capstan-etcd-2=https://r1-capstan-etcd-2.r1-capstan-etcd:2380"));
    let containers = 5 + 1; // api, 4 controllers, agent (etcd is probed by its peers)
    assert_eq!(count(&two, "path: /readyz"), containers);
    assert_eq!(count(&two, "path: /healthz"), containers);
    // Least privilege: every container's root is read-only and cannot escalate; all but the
    // agent run as uid 10001 with no capabilities; TLS material mounted from Secrets.
    assert_eq!(count(&two, "readOnlyRootFilesystem: true"), containers + 1);
    assert_eq!(
        count(&two, "allowPrivilegeEscalation: false"),
        containers + 1
    );
    assert_eq!(count(&two, "runAsUser: 10001"), containers - 1 + 1);
    assert_eq!(
        count(&two, "capabilities: {drop: [ALL]}"),
        containers - 1 + 1
    );
    assert!(count(&two, "CAPSTAN_TLS_CERT") >= containers);
    assert!(!two.contains("http://"), "nothing in plain text");
}

//! What a task definition asks of a node beyond a process: volumes and mounts, Linux
//! parameters, limits, names and the restart policy, in ECS's shapes, with ECS's rules.
//!
//! The agent acts on all of them with the docker runtime; what the process runtime can do is
//! in `docs/agent.md`. Each validator adds errors to a [`Report`] at the field's JSON path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::{Report, index, join};

/// ECS's bounds for `restartAttemptPeriod`, seconds.
pub const RESTART_ATTEMPT_PERIOD: (u32, u32) = (60, 1800);
/// ECS's default `restartAttemptPeriod`, seconds.
pub const DEFAULT_RESTART_ATTEMPT_PERIOD: u32 = 300;
/// The `ulimits` names ECS accepts.
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// A task-level data volume (ECS `Volume`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Volume {
    /// Referenced by `mountPoints[].sourceVolume`.
    pub name: String,
    /// A bind mount of a host path; without `sourcePath`, a scratch volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
    /// A Docker volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
    /// Set at launch by the service or RunTask (EBS); not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured_at_launch: Option<bool>,
    /// Amazon EFS; not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efs_volume_configuration: Option<Value>,
    /// Amazon FSx; not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsx_windows_file_server_volume_configuration: Option<Value>,
}

/// `host` of a volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HostVolume {
    /// Absolute path on the node; none for a scratch volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

/// Whether a Docker volume lives with its task or is shared by every task on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    /// Created for the task and removed with it.
    #[default]
    Task,
    /// Kept after the task; later tasks see the same volume.
    Shared,
}

/// `dockerVolumeConfiguration` of a volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DockerVolumeConfiguration {
    /// `task` (default) or `shared`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<VolumeScope>,
    /// Shared scope only: create the volume when it does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoprovision: Option<bool>,
    /// Volume driver (`local` by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels of the volume.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl DockerVolumeConfiguration {
    /// The scope, `task` by default.
    pub fn scope(&self) -> VolumeScope {
        self.scope.unwrap_or_default()
    }
}

/// Where a volume appears in a container (ECS `MountPoint`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MountPoint {
    /// A volume of the task definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_volume: Option<String>,
    /// Absolute path in the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// Mounted read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Another container's volumes mounted in this one (ECS `VolumeFrom`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VolumeFrom {
    /// A container of the same task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_container: Option<String>,
    /// Mounted read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// `linuxParameters` of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LinuxParameters {
    /// Capabilities added to and dropped from Docker's default set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Host devices exposed to the container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Run an init process (tini) as pid 1 that reaps zombies and forwards signals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_process_enabled: Option<bool>,
    /// `/dev/shm` size, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_memory_size: Option<u32>,
    /// tmpfs mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// Swap the container may use, MiB (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_swap: Option<u32>,
    /// 0-100: how readily the container's memory is swapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u32>,
}

/// `linuxParameters.capabilities`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Capabilities {
    /// Added, e.g. `NET_ADMIN`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Dropped, e.g. `ALL`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// A host device (`linuxParameters.devices`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Device {
    /// Path on the node.
    pub host_path: String,
    /// Path in the container; `hostPath` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// `read`, `write`, `mknod`; all three when absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

/// A tmpfs mount (`linuxParameters.tmpfs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tmpfs {
    /// Absolute path in the container.
    pub container_path: String,
    /// Size, MiB.
    pub size: u32,
    /// Mount options (`noexec`, `mode=1777`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

/// A resource limit (ECS `Ulimit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Ulimit {
    /// One of [`ULIMIT_NAMES`].
    pub name: String,
    /// Soft limit.
    pub soft_limit: i64,
    /// Hard limit.
    pub hard_limit: i64,
}

/// A kernel parameter in the container's namespaces (ECS `SystemControl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SystemControl {
    /// e.g. `net.ipv4.tcp_keepalive_time`.
    pub namespace: String,
    /// Its value.
    pub value: String,
}

/// An `/etc/hosts` entry (ECS `HostEntry`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HostEntry {
    /// The name.
    pub hostname: String,
    /// Its address.
    pub ip_address: String,
}

/// A container's restart policy (ECS `ContainerRestartPolicy`): the agent restarts an exited
/// container in place instead of stopping the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Whether it applies.
    pub enabled: bool,
    /// Exit codes that end the container for good (up to 50).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_exit_codes: Vec<i32>,
    /// Seconds a container must have run before it is restarted; an earlier exit is final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_attempt_period: Option<u32>,
}

impl RestartPolicy {
    /// Whether a container that ran for `ran_secs` and exited with `code` is restarted.
    pub fn restarts(&self, code: Option<i32>, ran_secs: f64) -> bool {
        let period = self
            .restart_attempt_period
            .unwrap_or(DEFAULT_RESTART_ATTEMPT_PERIOD);
        self.enabled
            && !code.is_some_and(|c| self.ignored_exit_codes.contains(&c))
            && ran_secs >= f64::from(period)
    }
}

/// A resource a container needs (ECS `ResourceRequirement`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceRequirement {
    /// `GPU` or `InferenceAccelerator`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For GPU, how many.
    pub value: String,
}

impl ResourceRequirement {
    /// GPUs asked for, if this is a GPU requirement.
    pub fn gpus(&self) -> Option<u32> {
        (self.kind == "GPU")
            .then(|| self.value.parse().ok())
            .flatten()
    }
}

/// A task's `pidMode` or `ipcMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// The node's namespace.
    Host,
    /// One namespace shared by the task's containers.
    Task,
    /// `ipcMode` only: a private namespace that cannot be shared.
    None,
}

fn absolute(r: &mut Report, path: &str, p: &str) {
    if !p.starts_with('/') || p.contains('\0') {
        r.error(path, format!("must be an absolute path, got {p:?}"));
    }
}

/// Checks a task definition's volumes; returns their names.
pub fn validate_volumes<'a>(r: &mut Report, volumes: &'a [Volume]) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = index("", "volumes", i);
        if v.name.is_empty()
            || v.name.len() > 255
            || !v
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            r.error(
                join(&p, "name"),
                "must be 1-255 letters, digits, hyphens or underscores",
            );
        } else if !names.insert(v.name.as_str()) {
            r.error(
                join(&p, "name"),
                format!("volume name {:?} is used twice", v.name),
            );
        }
        if v.host.is_some() && v.docker_volume_configuration.is_some() {
            r.error(
                &p,
                "a volume is either host or dockerVolumeConfiguration, not both",
            );
        }
        if let Some(src) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            absolute(r, &join(&p, "host.sourcePath"), src);
        }
        if let Some(d) = &v.docker_volume_configuration {
            if d.autoprovision == Some(true) && d.scope() == VolumeScope::Task {
                r.error(
                    join(&p, "dockerVolumeConfiguration.autoprovision"),
                    "autoprovision is only for shared volumes (task volumes are always created)",
                );
            }
            if d.driver.as_deref().is_some_and(str::is_empty) {
                r.error(
                    join(&p, "dockerVolumeConfiguration.driver"),
                    "must not be empty",
                );
            }
        }
        r.ignored(
            join(&p, "efsVolumeConfiguration"),
            v.efs_volume_configuration.is_some(),
        );
        r.ignored(
            join(&p, "fsxWindowsFileServerVolumeConfiguration"),
            v.fsx_windows_file_server_volume_configuration.is_some(),
        );
        r.ignored(
            join(&p, "configuredAtLaunch"),
            v.configured_at_launch.is_some(),
        );
    }
    names
}

/// Checks a container's mount points against the task's `volumes`.
pub fn validate_mount_points(
    r: &mut Report,
    path: &str,
    mounts: &[MountPoint],
    volumes: &BTreeSet<&str>,
) {
    let mut targets = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = index(path, "mountPoints", i);
        match m.source_volume.as_deref() {
            Some(v) if volumes.contains(v) => {}
            Some(v) => r.error(
                join(&p, "sourceVolume"),
                format!("no volume named {v:?} in this task definition's volumes"),
            ),
            None => r.error(join(&p, "sourceVolume"), "sourceVolume is required"),
        }
        match m.container_path.as_deref() {
            Some(c) => {
                absolute(r, &join(&p, "containerPath"), c);
                if !targets.insert(c) {
                    r.error(join(&p, "containerPath"), format!("{c:?} is mounted twice"));
                }
            }
            None => r.error(join(&p, "containerPath"), "containerPath is required"),
        }
    }
}

/// Checks a container's `volumesFrom` against the task's containers.
pub fn validate_volumes_from(
    r: &mut Report,
    path: &str,
    own: &str,
    from: &[VolumeFrom],
    containers: &BTreeSet<&str>,
) {
    for (i, f) in from.iter().enumerate() {
        let p = join(&index(path, "volumesFrom", i), "sourceContainer");
        match f.source_container.as_deref() {
            Some(c) if c == own => r.error(p, "a container cannot take volumes from itself"),
            Some(c) if containers.contains(c) => {}
            Some(c) => r.error(
                p,
                format!("no container named {c:?} in this task definition"),
            ),
            None => r.error(p, "sourceContainer is required"),
        }
    }
}

fn capability(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks `linuxParameters`.
pub fn validate_linux_parameters(r: &mut Report, path: &str, lp: &LinuxParameters) {
    let p = join(path, "linuxParameters");
    if let Some(caps) = &lp.capabilities {
        for (field, list) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (i, c) in list.iter().enumerate() {
                if !capability(c) {
                    r.error(
                        index(&join(&p, "capabilities"), field, i),
                        format!("{c:?} is not a capability name (e.g. NET_ADMIN, ALL)"),
                    );
                }
            }
        }
    }
    for (i, d) in lp.devices.iter().enumerate() {
        let dp = index(&p, "devices", i);
        absolute(r, &join(&dp, "hostPath"), &d.host_path);
        if let Some(c) = &d.container_path {
            absolute(r, &join(&dp, "containerPath"), c);
        }
        for (j, perm) in d.permissions.iter().enumerate() {
            if !["read", "write", "mknod"].contains(&perm.as_str()) {
                r.error(index(&dp, "permissions", j), "must be read, write or mknod");
            }
        }
    }
    for (i, t) in lp.tmpfs.iter().enumerate() {
        let tp = index(&p, "tmpfs", i);
        absolute(r, &join(&tp, "containerPath"), &t.container_path);
        if t.size == 0 {
            r.error(join(&tp, "size"), "must be at least 1 MiB");
        }
        for (j, o) in t.mount_options.iter().enumerate() {
            if o.is_empty() || o.contains(',') {
                r.error(
                    index(&tp, "mountOptions", j),
                    "must be one option, without commas",
                );
            }
        }
    }
    if lp.shared_memory_size == Some(0) {
        r.error(join(&p, "sharedMemorySize"), "must be at least 1 MiB");
    }
    if let Some(s) = lp.swappiness {
        r.range(&join(&p, "swappiness"), s, 0, 100);
    }
}

/// Checks `ulimits`.
pub fn validate_ulimits(r: &mut Report, path: &str, ulimits: &[Ulimit]) {
    let mut seen = BTreeSet::new();
    for (i, u) in ulimits.iter().enumerate() {
        let p = index(path, "ulimits", i);
        if !ULIMIT_NAMES.contains(&u.name.as_str()) {
            r.error(
                join(&p, "name"),
                format!("must be one of {}", ULIMIT_NAMES.join(", ")),
            );
        } else if !seen.insert(u.name.as_str()) {
            r.error(join(&p, "name"), format!("{} is set twice", u.name));
        }
        if u.soft_limit > u.hard_limit {
            r.error(
                join(&p, "softLimit"),
                format!("must not exceed hardLimit ({})", u.hard_limit),
            );
        }
    }
}

/// Checks `systemControls`.
pub fn validate_system_controls(r: &mut Report, path: &str, controls: &[SystemControl]) {
    for (i, s) in controls.iter().enumerate() {
        let p = index(path, "systemControls", i);
        let ok = (s.namespace.starts_with("net.")
            || s.namespace.starts_with("kernel.")
            || s.namespace.starts_with("fs.mqueue."))
            && s.namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !ok {
            r.error(
                join(&p, "namespace"),
                "must be a namespaced kernel parameter (net.*, kernel.*, fs.mqueue.*)",
            );
        }
    }
}

/// Checks `dnsServers` and `extraHosts`.
pub fn validate_names(r: &mut Report, path: &str, dns: &[String], hosts: &[HostEntry]) {
    for (i, d) in dns.iter().enumerate() {
        if d.parse::<IpAddr>().is_err() {
            r.error(index(path, "dnsServers", i), "must be an IP address");
        }
    }
    for (i, h) in hosts.iter().enumerate() {
        let p = index(path, "extraHosts", i);
        if h.hostname.is_empty()
            || h.hostname.contains(char::is_whitespace)
            || h.hostname.contains(':')
        {
            r.error(join(&p, "hostname"), "must be a host name");
        }
        if h.ip_address.parse::<IpAddr>().is_err() {
            r.error(join(&p, "ipAddress"), "must be an IP address");
        }
    }
}

/// Checks a `restartPolicy`.
pub fn validate_restart_policy(r: &mut Report, path: &str, rp: &RestartPolicy) {
    let p = join(path, "restartPolicy");
    if rp.ignored_exit_codes.len() > 50 {
        r.error(join(&p, "ignoredExitCodes"), "at most 50 exit codes");
    }
    if let Some(s) = rp.restart_attempt_period {
        r.range(
            &join(&p, "restartAttemptPeriod"),
            s,
            RESTART_ATTEMPT_PERIOD.0,
            RESTART_ATTEMPT_PERIOD.1,
        );
    }
}

/// Checks `resourceRequirements`.
pub fn validate_resource_requirements(r: &mut Report, path: &str, reqs: &[ResourceRequirement]) {
    for (i, q) in reqs.iter().enumerate() {
        let p = index(path, "resourceRequirements", i);
        match q.kind.as_str() {
            "GPU" if q.gpus().is_some_and(|n| n >= 1) => {}
            "GPU" => r.error(join(&p, "value"), "must be a number of GPUs, at least 1"),
            "InferenceAccelerator" => r.ignored(join(&p, "type"), true),
            _ => r.error(join(&p, "type"), "must be GPU or InferenceAccelerator"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(f: impl FnOnce(&mut Report)) -> Vec<String> {
        let mut r = Report::default();
        f(&mut r);
        match r.finish() {
            Ok(_) => vec![],
            Err(e) => e.issues.into_iter().map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn restart_policy_follows_ecs() {
        let rp = RestartPolicy {
            enabled: true,
            ignored_exit_codes: vec![0],
            restart_attempt_period: Some(60),
        };
        let cases = [
            (Some(1), 61.0, true),
            (Some(1), 59.9, false),  // exited before the period: final
            (Some(0), 600.0, false), // an ignored code
            (None, 60.0, true),      // unknown code: not an ignored one
        ];
        for (code, ran, want) in cases {
            assert_eq!(rp.restarts(code, ran), want, "{code:?} after {ran}s");
        }
        let off = RestartPolicy {
            enabled: false,
            ..rp.clone()
        };
        assert!(!off.restarts(Some(1), 1000.0));
        let default = RestartPolicy {
            enabled: true,
            ..Default::default()
        };
        assert!(!default.restarts(Some(1), 299.0));
        assert!(default.restarts(Some(1), 300.0));
    }

    #[test]
    fn volumes_and_mount_points_are_checked_against_each_other() {
        let vols: Vec<Volume> = serde_json::from_value(serde_json::json!([
            {"name": "data", "host": {"sourcePath": "/srv/data"}},
            {"name": "scratch"},
            {"name": "cache", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true}},
            {"name": "bad", "host": {"sourcePath": "relative"}},
            {"name": "data"},
            {"name": "t", "dockerVolumeConfiguration": {"autoprovision": true}},
        ]))
        .expect("shape");
        let mut names = BTreeSet::new();
        let errs = errors(|r| {
            names = validate_volumes(r, &vols)
                .into_iter()
                .map(str::to_string)
                .collect()
        });
        assert_eq!(
            errs,
            [
                "volumes[3].host.sourcePath: must be an absolute path, got \"relative\"",
                "volumes[4].name: volume name \"data\" is used twice",
                "volumes[5].dockerVolumeConfiguration.autoprovision: autoprovision is only for shared volumes (task volumes are always created)",
            ]
        );
        let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mounts: Vec<MountPoint> = serde_json::from_value(serde_json::json!([
            {"sourceVolume": "data", "containerPath": "/data", "readOnly": true},
            {"sourceVolume": "nope", "containerPath": "/x"},
            {"sourceVolume": "scratch", "containerPath": "/data"},
        ]))
        .expect("shape");
        assert_eq!(
            errors(|r| validate_mount_points(r, "c", &mounts, &names)),
            [
                "c.mountPoints[1].sourceVolume: no volume named \"nope\" in this task definition's volumes",
                "c.mountPoints[2].containerPath: \"/data\" is mounted twice",
            ]
        );
    }

    #[test]
    fn linux_parameters_ulimits_and_names_follow_ecs_rules() {
        let lp: LinuxParameters = serde_json::from_value(serde_json::json!({
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["all"]},
            "tmpfs": [{"containerPath": "/run", "size": 0}],
            "swappiness": 101,
        }))
        .expect("shape");
        assert_eq!(
            errors(|r| validate_linux_parameters(r, "c", &lp)),
            [
                "c.linuxParameters.capabilities.drop[0]: \"all\" is not a capability name (e.g. NET_ADMIN, ALL)",
                "c.linuxParameters.tmpfs[0].size: must be at least 1 MiB",
                "c.linuxParameters.swappiness: must be between 0 and 100, got 101",
            ]
        );
        let ul = [
            Ulimit {
                name: "nofile".into(),
                soft_limit: 2048,
                hard_limit: 1024,
            },
            Ulimit {
                name: "files".into(),
                soft_limit: 1,
                hard_limit: 1,
            },
        ];
        assert_eq!(
            errors(|r| validate_ulimits(r, "c", &ul)),
            [
                "c.ulimits[0].softLimit: must not exceed hardLimit (1024)",
                &format!(
                    "c.ulimits[1].name: must be one of {}",
                    ULIMIT_NAMES.join(", ")
                ),
            ]
        );
        let hosts = [HostEntry {
            hostname: "db".into(),
            ip_address: "10.0.0.300".into(),
        }];
        assert_eq!(
            errors(|r| validate_names(r, "c", &["8.8.8.8".into(), "dns".into()], &hosts)),
            [
                "c.dnsServers[1]: must be an IP address",
                "c.extraHosts[0].ipAddress: must be an IP address",
            ]
        );
        let gpu = [ResourceRequirement {
            kind: "GPU".into(),
            value: "two".into(),
        }];
        assert_eq!(
            errors(|r| validate_resource_requirements(r, "c", &gpu)),
            ["c.resourceRequirements[0].value: must be a number of GPUs, at least 1"]
        );
    }
}

//! Load balancing specs in ELBv2's shapes (camelCase): target groups and listeners.

use serde::{Deserialize, Serialize};

use crate::validate::{Issue, Report, ValidationError, index, join};

/// Default `deregistration_delay.timeout_seconds` (ELBv2).
pub const DEFAULT_DEREGISTRATION_DELAY_SECS: u32 = 300;

/// Listener / target group protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LbProtocol {
    /// HTTP (layer 7).
    #[default]
    Http,
    /// TCP (layer 4).
    Tcp,
}

/// A target group spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TargetGroup {
    /// Name; the key's name when absent, and must equal it when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_name: Option<String>,
    /// HTTP (default) or TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<LbProtocol>,
    /// Port targets receive traffic on when a target names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// `instance` (default: host address and host port) or `ip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    /// Health check settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<TargetGroupHealthCheck>,
    /// `deregistration_delay.timeout_seconds`, `slow_start.duration_seconds`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<TargetGroupAttribute>,
}

/// A `{key, value}` target group attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupAttribute {
    /// Attribute name.
    pub key: String,
    /// Its value, as a string.
    pub value: String,
}

/// Target group health check (ELBv2 defaults apply to absent fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TargetGroupHealthCheck {
    /// HTTP or TCP; the group's protocol when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<LbProtocol>,
    /// HTTP path, default `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `traffic-port` (default) or a port number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// 5–300, default 30.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    /// 2–120, default 6 (HTTP) or 10 (TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// 2–10, default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold_count: Option<u32>,
    /// 2–10, default 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold_count: Option<u32>,
    /// HTTP codes that count as healthy, default `200`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
}

/// `matcher {httpCode}`: `200`, `200,202` or `200-299`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Matcher {
    /// Codes or ranges, comma-separated.
    pub http_code: String,
}

impl Matcher {
    /// The inclusive code ranges, or `None` if malformed.
    pub fn ranges(&self) -> Option<Vec<(u16, u16)>> {
        self.http_code
            .split(',')
            .map(|part| {
                let part = part.trim();
                match part.split_once('-') {
                    Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                    None => {
                        let c = part.parse().ok()?;
                        Some((c, c))
                    }
                }
            })
            .collect()
    }

    /// Whether `code` matches.
    pub fn matches(&self, code: u16) -> bool {
        self.ranges()
            .is_some_and(|rs| rs.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code)))
    }
}

/// ELBv2's rule for target group and listener names: 1–32 alphanumerics and hyphens, no hyphen
/// at either end.
pub fn check_lb_name(r: &mut Report, path: &str, name: &str) {
    if !valid_lb_name(name) {
        r.error(
            path,
            format!("{name:?} is not a valid name: use 1-32 letters, digits and hyphens, not starting or ending with a hyphen"),
        );
    }
}

/// Whether `name` is a valid target group or listener name (ELBv2's rule: 1-32 letters, digits
/// and hyphens, no hyphen at either end). Names reach HAProxy's configuration and runtime
/// socket, so nothing else may.
pub fn valid_lb_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl TargetGroup {
    /// The protocol, HTTP by default.
    pub fn protocol(&self) -> LbProtocol {
        self.protocol.unwrap_or_default()
    }

    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.value.as_str())
    }

    /// Deregistration delay in seconds (default 300).
    pub fn deregistration_delay_secs(&self) -> u32 {
        self.attribute("deregistration_delay.timeout_seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_DEREGISTRATION_DELAY_SECS)
    }

    /// The health check with ELBv2's defaults filled in.
    pub fn effective_health_check(&self) -> TargetGroupHealthCheck {
        let hc = self.health_check.clone().unwrap_or_default();
        let protocol = hc.protocol.unwrap_or(self.protocol());
        TargetGroupHealthCheck {
            protocol: Some(protocol),
            path: Some(hc.path.unwrap_or_else(|| "/".into())),
            port: Some(hc.port.unwrap_or_else(|| "traffic-port".into())),
            interval_seconds: Some(hc.interval_seconds.unwrap_or(30)),
            timeout_seconds: Some(hc.timeout_seconds.unwrap_or(match protocol {
                LbProtocol::Http => 6,
                LbProtocol::Tcp => 10,
            })),
            healthy_threshold_count: Some(hc.healthy_threshold_count.unwrap_or(5)),
            unhealthy_threshold_count: Some(hc.unhealthy_threshold_count.unwrap_or(2)),
            matcher: Some(hc.matcher.unwrap_or(Matcher {
                http_code: "200".into(),
            })),
        }
    }

    /// Validates against ELBv2's ranges.
    pub fn validate(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        if let Some(n) = &self.target_group_name {
            check_lb_name(&mut r, "targetGroupName", n);
        }
        if let Some(p) = self.port {
            r.range("port", p, 1, 65535);
        }
        if let Some(t) = &self.target_type
            && t != "instance"
            && t != "ip"
        {
            r.error("targetType", format!("must be instance or ip, got {t:?}"));
        }
        if let Some(hc) = &self.health_check {
            let b = "healthCheck";
            if let Some(p) = &hc.path
                && (p.is_empty() || p.len() > 1024 || !p.starts_with('/'))
            {
                r.error(
                    join(b, "path"),
                    "must start with / and have at most 1024 characters",
                );
            }
            if let Some(p) = &hc.port
                && p != "traffic-port"
                && p.parse::<u16>().map_or(true, |n| n == 0)
            {
                r.error(
                    join(b, "port"),
                    "must be traffic-port or a port number 1-65535",
                );
            }
            if let Some(v) = hc.interval_seconds {
                r.range(&join(b, "intervalSeconds"), v, 5, 300);
            }
            if let Some(v) = hc.timeout_seconds {
                r.range(&join(b, "timeoutSeconds"), v, 2, 120);
            }
            if let (Some(t), Some(i)) = (hc.timeout_seconds, hc.interval_seconds)
                && t >= i
            {
                r.error(
                    join(b, "timeoutSeconds"),
                    "must be less than intervalSeconds",
                );
            }
            if let Some(v) = hc.healthy_threshold_count {
                r.range(&join(b, "healthyThresholdCount"), v, 2, 10);
            }
            if let Some(v) = hc.unhealthy_threshold_count {
                r.range(&join(b, "unhealthyThresholdCount"), v, 2, 10);
            }
            if let Some(m) = &hc.matcher {
                match m.ranges() {
                    Some(rs)
                        if rs
                            .iter()
                            .all(|(lo, hi)| lo <= hi && *lo >= 200 && *hi <= 499) => {}
                    _ => r.error(
                        join(b, "matcher.httpCode"),
                        "use codes 200-499 as 200, 200,202 or 200-299",
                    ),
                }
            }
        }
        for (i, a) in self.attributes.iter().enumerate() {
            let p = index("", "attributes", i);
            let n: Option<u32> = a.value.parse().ok();
            match (a.key.as_str(), n) {
                ("deregistration_delay.timeout_seconds", Some(v)) => {
                    r.range(&join(&p, "value"), v, 0, 3600)
                }
                ("slow_start.duration_seconds", Some(v)) => {
                    if v != 0 {
                        r.range(&join(&p, "value"), v, 30, 900)
                    }
                }
                ("deregistration_delay.timeout_seconds" | "slow_start.duration_seconds", None) => r
                    .error(
                        join(&p, "value"),
                        format!("{:?} is not a number of seconds", a.value),
                    ),
                (k, _) => r.error(
                    join(&p, "key"),
                    format!("unknown target group attribute {k:?}"),
                ),
            }
        }
        r.finish()
    }
}

/// A target group and its weight in a forward action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetGroupTuple {
    /// Target group name.
    pub target_group_arn: String,
    /// Relative weight 0–999 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `forwardConfig` of an action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Weighted target groups.
    pub target_groups: Vec<TargetGroupTuple>,
}

/// A listener action (`forward` only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Action {
    /// `forward`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Single target group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// Weighted target groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_config: Option<ForwardConfig>,
}

impl Action {
    /// The target groups and weights this action forwards to.
    pub fn weighted_target_groups(&self) -> Vec<(String, u32)> {
        match (&self.target_group_arn, &self.forward_config) {
            (Some(tg), _) => vec![(crate::service::lb_object_name(tg).to_string(), 1)],
            (None, Some(fc)) => fc
                .target_groups
                .iter()
                .map(|t| {
                    (
                        crate::service::lb_object_name(&t.target_group_arn).to_string(),
                        t.weight.unwrap_or(1),
                    )
                })
                .collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// A listener spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Listener {
    /// Name; the key's name when absent, and must equal it when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_name: Option<String>,
    /// Address to bind; `127.0.0.1` unless asked (nothing public by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    /// Port to bind.
    pub port: u32,
    /// HTTP (default) or TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<LbProtocol>,
    /// Exactly one `forward` action.
    pub default_actions: Vec<Action>,
}

impl Listener {
    /// The bind address, loopback by default (the API checks port conflicts on it; a registrar
    /// binds a listener without one on its own host address, `--listen-address`).
    pub fn bind_address(&self) -> &str {
        self.bind_address.as_deref().unwrap_or("127.0.0.1")
    }

    /// Validates against ELBv2's rules.
    pub fn validate(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        if let Some(n) = &self.listener_name {
            check_lb_name(&mut r, "listenerName", n);
        }
        if let Some(a) = &self.bind_address
            && a.parse::<std::net::IpAddr>().is_err()
        {
            r.error("bindAddress", format!("{a:?} is not an IP address"));
        }
        r.range("port", self.port, 1, 65535);
        if self.default_actions.len() != 1 {
            r.error("defaultActions", "give exactly one forward action");
        }
        for (i, a) in self.default_actions.iter().enumerate() {
            let p = index("", "defaultActions", i);
            if a.kind != "forward" {
                r.error(
                    join(&p, "type"),
                    format!("only forward actions are supported, got {:?}", a.kind),
                );
            }
            match (&a.target_group_arn, &a.forward_config) {
                (Some(_), Some(_)) => r.error(&p, "give targetGroupArn or forwardConfig, not both"),
                (None, None) => r.error(&p, "give targetGroupArn or forwardConfig"),
                (None, Some(fc)) => {
                    if fc.target_groups.is_empty() || fc.target_groups.len() > 5 {
                        r.error(
                            join(&p, "forwardConfig.targetGroups"),
                            "give 1 to 5 target groups",
                        );
                    }
                    for (j, t) in fc.target_groups.iter().enumerate() {
                        let tp = index(&join(&p, "forwardConfig"), "targetGroups", j);
                        check_lb_name(
                            &mut r,
                            &join(&tp, "targetGroupArn"),
                            crate::service::lb_object_name(&t.target_group_arn),
                        );
                        if let Some(w) = t.weight {
                            r.range(&join(&tp, "weight"), w, 0, 999);
                        }
                    }
                }
                (Some(tg), None) => check_lb_name(
                    &mut r,
                    &join(&p, "targetGroupArn"),
                    crate::service::lb_object_name(tg),
                ),
            }
        }
        r.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_accepts_lists_and_ranges() {
        let m = Matcher {
            http_code: "200,202-204".into(),
        };
        assert!(m.matches(200));
        assert!(m.matches(203));
        assert!(!m.matches(201));
        assert!(!m.matches(500));
    }

    #[test]
    fn target_group_defaults_are_elbv2s() {
        let tg = TargetGroup::default();
        let hc = tg.effective_health_check();
        assert_eq!(hc.interval_seconds, Some(30));
        assert_eq!(hc.timeout_seconds, Some(6));
        assert_eq!(hc.healthy_threshold_count, Some(5));
        assert_eq!(hc.unhealthy_threshold_count, Some(2));
        assert_eq!(tg.deregistration_delay_secs(), 300);
    }

    #[test]
    fn deregistration_delay_out_of_range_is_rejected() {
        let tg = TargetGroup {
            attributes: vec![TargetGroupAttribute {
                key: "deregistration_delay.timeout_seconds".into(),
                value: "4000".into(),
            }],
            ..Default::default()
        };
        let err = tg.validate().expect_err("4000 > 3600");
        assert!(err.to_string().contains("attributes[0].value"), "{err}");
    }
}

/// State of a registered target (ELBv2 `TargetHealth.State`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Registered, not yet passed its health checks.
    #[default]
    Initial,
    /// Passing health checks; receives traffic.
    Healthy,
    /// Failing health checks.
    Unhealthy,
    /// Deregistering: finishing in-flight requests for the deregistration delay.
    Draining,
    /// Not used by any listener.
    Unused,
}

/// One target of a target group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetStatus {
    /// Task id the target belongs to.
    pub task_id: String,
    /// Host (the instance's address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Health state.
    pub state: TargetState,
    /// ELBv2 reason code (`Target.FailedHealthChecks`, `Target.DeregistrationInProgress`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Draining has finished: the scheduler may stop the task (set with state `draining`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// When it last turned healthy (epoch seconds): slow start ramps its weight from then, on
    /// every load-balancer host alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<crate::Timestamp>,
}

/// A listener whose traffic a target group takes, and since when (the registrar applied it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServingListener {
    /// Listener name.
    pub listener: String,
    /// When the data plane started routing it here (epoch seconds).
    pub since: crate::Timestamp,
}

/// `/capstan/status/targetgroups/<name>` (registrar): the targets and their health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetGroupStatusDoc {
    /// Targets.
    pub targets: Vec<TargetStatus>,
    /// Listeners routed to this group in the data plane (blue/green shifts show up here once
    /// they took effect).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ServingListener>,
    /// Last update (epoch seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<crate::Timestamp>,
    /// Why the registrar cannot act on the group's spec (it does not decode); its targets are
    /// then kept as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl TargetGroupStatusDoc {
    /// Whether the task has a healthy target here.
    pub fn is_healthy(&self, task_id: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t.task_id == task_id && t.state == TargetState::Healthy)
    }
}

/// `/capstan/routes/<listener>` (deployer): where a listener forwards while a blue/green
/// deployment owns it; the registrar prefers it to the listener's default action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerRoute {
    /// Weighted target groups.
    pub target_groups: Vec<TargetGroupTuple>,
    /// `<cluster>/<service>` that owns the route.
    pub service: String,
    /// Deployment that last wrote it.
    pub deployment: String,
}

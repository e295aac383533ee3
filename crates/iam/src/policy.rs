//! Policy documents in IAM's JSON shape, and how one statement matches a request.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wildmatch::WildMatch;

use crate::IamError;

/// Policy language versions IAM accepts.
pub const VERSIONS: [&str; 2] = ["2012-10-17", "2008-10-17"];

/// Services whose actions a policy may name.
pub const SERVICES: [&str; 3] = ["ecs", "elasticloadbalancing", "capstan"];

/// Statement keys IAM has and Capstan refuses rather than ignores.
const UNSUPPORTED: [&str; 5] = [
    "Condition",
    "NotAction",
    "NotResource",
    "Principal",
    "NotPrincipal",
];

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Grants the actions.
    Allow,
    /// Refuses them, whatever else allows them.
    Deny,
}

/// A string or a list of strings, as IAM writes `Action` and `Resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RawStatement {
    #[serde(default)]
    sid: Option<String>,
    effect: Effect,
    action: OneOrMany,
    resource: OneOrMany,
}

/// Top-level keys of a policy document.
const TOP_LEVEL: [&str; 3] = ["Version", "Id", "Statement"];

/// One statement: an effect on actions over resources.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Its id, for messages.
    pub sid: Option<String>,
    /// Allow or Deny.
    pub effect: Effect,
    actions: Vec<WildMatch>,
    resources: Vec<WildMatch>,
}

impl Statement {
    /// Whether it covers `action` (any case) on `resource` (exactly, wildcards aside).
    pub fn matches(&self, action: &str, resource: &str) -> bool {
        self.actions.iter().any(|a| a.matches(action))
            && self.resources.iter().any(|r| r.matches(resource))
    }
}

/// A validated policy document.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    /// Its statements, in order.
    pub statements: Vec<Statement>,
}

fn check_action(a: &str) -> Result<(), String> {
    if a == "*" {
        return Ok(());
    }
    let (service, name) = a.split_once(':').ok_or_else(|| {
        format!("Action {a:?} must be \"*\" or SERVICE:NAME, for example \"ecs:CreateService\"")
    })?;
    if !SERVICES.iter().any(|s| s.eq_ignore_ascii_case(service)) {
        return Err(format!(
            "Action {a:?} names service {service:?}; Capstan's are {}",
            SERVICES.join(", ")
        ));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '?'))
    {
        return Err(format!(
            "Action {a:?}: the name after ':' is letters and digits, with * and ? wildcards"
        ));
    }
    Ok(())
}

fn check_resource(r: &str) -> Result<(), String> {
    if r == "*" || (r.starts_with("arn:") && !r.chars().any(char::is_control)) {
        Ok(())
    } else {
        Err(format!(
            "Resource {r:?} must be \"*\" or an ARN such as \"arn:capstan:ecs:local:000000000000:service/prod/*\""
        ))
    }
}

impl PolicyDocument {
    /// Parses and validates a policy document; the error says what to fix.
    pub fn parse(json: &[u8]) -> Result<Self, IamError> {
        let bad = |m: String| IamError::BadDocument(format!("policy document: {m}"));
        let value: Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        let Value::Object(top) = &value else {
            return Err(bad("it must be a JSON object with a Statement".into()));
        };
        if let Some(k) = top.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown field `{k}`, expected one of {}",
                TOP_LEVEL.join(", ")
            )));
        }
        match top.get("Version") {
            None => {}
            Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => {}
            Some(v) => {
                return Err(bad(format!(
                    "Version {v} is not one of {}",
                    VERSIONS.join(", ")
                )));
            }
        }
        let listed: Vec<&Value> = match top.get("Statement") {
            Some(Value::Array(v)) => v.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            Some(_) => return Err(bad("Statement must be an object or a list of them".into())),
            None => return Err(bad("missing field `Statement`".into())),
        };
        if listed.is_empty() {
            return Err(bad("Statement is empty: a policy needs one".into()));
        }
        let mut raw = Vec::with_capacity(listed.len());
        for (i, s) in listed.into_iter().enumerate() {
            if let Some(k) = UNSUPPORTED.iter().find(|k| s.get(**k).is_some()) {
                return Err(bad(format!(
                    "Statement[{i}] uses {k}, which Capstan does not support; it refuses the policy rather than grant more than it says"
                )));
            }
            let st: RawStatement = serde_json::from_value(s.clone())
                .map_err(|e| bad(format!("Statement[{i}]: {e}")))?;
            raw.push(st);
        }
        let mut statements = Vec::with_capacity(raw.len());
        for (i, s) in raw.into_iter().enumerate() {
            let actions = s.action.into_vec();
            let resources = s.resource.into_vec();
            if actions.is_empty() || resources.is_empty() {
                return Err(bad(format!(
                    "Statement[{i}] needs at least one Action and one Resource"
                )));
            }
            for a in &actions {
                check_action(a).map_err(|m| bad(format!("Statement[{i}]: {m}")))?;
            }
            for r in &resources {
                check_resource(r).map_err(|m| bad(format!("Statement[{i}]: {m}")))?;
            }
            statements.push(Statement {
                sid: s.sid,
                effect: s.effect,
                actions: actions
                    .iter()
                    .map(|a| WildMatch::new_case_insensitive(a))
                    .collect(),
                resources: resources.iter().map(|r| WildMatch::new(r)).collect(),
            });
        }
        Ok(Self { statements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Result<PolicyDocument, IamError> {
        PolicyDocument::parse(json.as_bytes())
    }

    #[test]
    fn documents_parse_in_iams_shapes() {
        let one = doc(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*"}}"#,
        )
        .expect("one statement object");
        assert_eq!(one.statements.len(), 1);
        let many = doc(
            r#"{"Statement":[{"Sid":"a","Effect":"Deny","Action":["ecs:DeleteService"],"Resource":["arn:capstan:ecs:local:000000000000:service/prod/*"]}]}"#,
        )
        .expect("a list");
        assert_eq!(many.statements[0].sid.as_deref(), Some("a"));
        assert_eq!(many.statements[0].effect, Effect::Deny);
    }

    #[test]
    fn bad_documents_say_what_to_fix() {
        let table = [
            ("{", "EOF"),
            (r#"{"Statement":[]}"#, "Statement is empty"),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{}}}"#,
                "uses Condition",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","NotAction":"ecs:*","Resource":"*"}}"#,
                "uses NotAction",
            ),
            (
                r#"{"Statement":{"Effect":"Maybe","Action":"ecs:*","Resource":"*"}}"#,
                "Maybe",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
                "names service \"s3\"",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"CreateService","Resource":"*"}}"#,
                "SERVICE:NAME",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"service/*"}}"#,
                "must be \"*\" or an ARN",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":[],"Resource":"*"}}"#,
                "at least one Action",
            ),
            (
                r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
                "Version",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"},"Extra":1}"#,
                "unknown field `Extra`",
            ),
            (
                r#"{"Statement":{"Effect":"Allow","Action":7,"Resource":"*"}}"#,
                "a string or a list of strings",
            ),
        ];
        for (json, want) in table {
            let e = doc(json).expect_err(json).to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn actions_match_in_any_case_resources_exactly() {
        let d = doc(
            r#"{"Statement":{"Effect":"Allow","Action":["ecs:Describe*","ecs:ListServices"],"Resource":"arn:capstan:ecs:local:000000000000:service/prod/*"}}"#,
        )
        .expect("valid");
        let s = &d.statements[0];
        let prod = "arn:capstan:ecs:local:000000000000:service/prod/web";
        assert!(s.matches("ecs:DescribeServices", prod));
        assert!(s.matches("ECS:describeservices", prod));
        assert!(s.matches("ecs:ListServices", prod));
        assert!(!s.matches("ecs:CreateService", prod));
        assert!(!s.matches(
            "ecs:DescribeServices",
            "arn:capstan:ecs:local:000000000000:service/staging/web"
        ));
        assert!(!s.matches(
            "ecs:DescribeServices",
            "arn:capstan:ecs:local:000000000000:service/PROD/web"
        ));
    }
}

//! Everything under `/capstan/iam/` decoded, and the one authorization decision.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::accesskey::AccessKeyRecord;
use crate::policy::{Effect, PolicyDocument};
use crate::principal::Principal;
use crate::token::{Bearer, TokenRecord};
use crate::{IamError, check_name};

/// A group: policies its members get.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Group {
    /// Policy names.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// What is attached to one principal, at `/capstan/iam/principals/<kind>/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachments {
    /// Policy names.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Group {
    /// Parses and validates a group document.
    pub fn parse(json: &[u8]) -> Result<Self, IamError> {
        let g: Self = serde_json::from_slice(json)
            .map_err(|e| IamError::BadDocument(format!("group document: {e}")))?;
        for p in &g.policies {
            check_name("policy", p)?;
        }
        Ok(g)
    }
}

impl Attachments {
    /// Parses and validates a principal's attachments.
    pub fn parse(json: &[u8]) -> Result<Self, IamError> {
        let a: Self = serde_json::from_slice(json)
            .map_err(|e| IamError::BadDocument(format!("principal document: {e}")))?;
        for p in &a.policies {
            check_name("policy", p)?;
        }
        for g in &a.groups {
            check_name("group", g)?;
        }
        Ok(a)
    }
}

/// Allowed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may go ahead.
    Allow,
    /// It may not.
    Deny,
}

/// A decision and why, in words for the caller and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub decision: Decision,
    /// Why: the policy that allowed or denied, or what is missing.
    pub reason: String,
}

impl Verdict {
    fn allow(reason: String) -> Self {
        Self {
            decision: Decision::Allow,
            reason,
        }
    }

    fn deny(reason: String) -> Self {
        Self {
            decision: Decision::Deny,
            reason,
        }
    }

    /// Whether it allows.
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// The key (relative to `/capstan/iam/`) that records the one bootstrap.
pub const BOOTSTRAP_KEY: &str = "bootstrap";

type Decoded<T> = Result<T, String>;

/// The IAM state: policies, groups, attachments, tokens, and the break-glass administrators.
#[derive(Debug, Default)]
pub struct Directory {
    policies: BTreeMap<String, Decoded<PolicyDocument>>,
    groups: BTreeMap<String, Decoded<Group>>,
    principals: BTreeMap<Principal, Decoded<Attachments>>,
    tokens: BTreeMap<String, Decoded<TokenRecord>>,
    access_keys: BTreeMap<String, Decoded<AccessKeyRecord>>,
    problems: BTreeMap<String, String>,
    admins: BTreeSet<Principal>,
}

impl Directory {
    /// Decodes `entries` (keys relative to `/capstan/iam/`, values as stored). A value that
    /// cannot be decoded is kept as an error on its object, never dropped: a broken policy
    /// denies, a broken token authenticates no one. Keys that are not IAM keys are reported in
    /// [`Directory::problems`].
    pub fn load<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        admins: impl IntoIterator<Item = Principal>,
    ) -> Self {
        let mut d = Directory {
            admins: admins.into_iter().collect(),
            ..Directory::default()
        };
        for (key, value) in entries {
            if key == BOOTSTRAP_KEY {
                continue;
            }
            let err = |e: IamError| e.to_string();
            match key.split_once('/') {
                Some(("policies", name)) if crate::valid_name(name) => {
                    let doc = PolicyDocument::parse(value).map_err(err);
                    d.policies.insert(name.to_string(), doc);
                }
                Some(("groups", name)) if crate::valid_name(name) => {
                    d.groups
                        .insert(name.to_string(), Group::parse(value).map_err(err));
                }
                Some(("principals", suffix)) => match Principal::from_key_suffix(suffix) {
                    Ok(p) => {
                        d.principals
                            .insert(p, Attachments::parse(value).map_err(err));
                    }
                    Err(e) => {
                        d.problems.insert(key.to_string(), e.to_string());
                    }
                },
                Some(("tokens", id)) => {
                    let rec = serde_json::from_slice::<TokenRecord>(value)
                        .map_err(|e| format!("token record: {e}"))
                        .and_then(|r| {
                            if r.token_id == id {
                                Ok(r)
                            } else {
                                Err(format!(
                                    "token record: tokenId {:?} is not its key's id {id:?}",
                                    r.token_id
                                ))
                            }
                        });
                    if let Err(e) = &rec {
                        d.problems.insert(key.to_string(), e.clone());
                    }
                    d.tokens.insert(id.to_string(), rec);
                }
                Some(("access-keys", id)) if crate::accesskey::valid_key_id(id) => {
                    let rec = serde_json::from_slice::<AccessKeyRecord>(value)
                        .map_err(|e| format!("access key record: {e}"))
                        .and_then(|r| {
                            if r.access_key_id == id {
                                Ok(r)
                            } else {
                                Err(format!(
                                    "access key record: accessKeyId {:?} is not its key's id {id:?}",
                                    r.access_key_id
                                ))
                            }
                        });
                    if let Err(e) = &rec {
                        d.problems.insert(key.to_string(), e.clone());
                    }
                    d.access_keys.insert(id.to_string(), rec);
                }
                _ => {
                    d.problems.insert(
                        key.to_string(),
                        "not an IAM key: policies/NAME, groups/NAME, principals/KIND/NAME, tokens/ID or access-keys/ID"
                            .into(),
                    );
                }
            }
        }
        for (name, p) in &d.policies {
            if let Err(e) = p {
                d.problems.insert(format!("policies/{name}"), e.clone());
            }
        }
        for (name, g) in &d.groups {
            if let Err(e) = g {
                d.problems.insert(format!("groups/{name}"), e.clone());
            }
        }
        for (p, a) in &d.principals {
            if let Err(e) = a {
                d.problems
                    .insert(format!("principals/{}", p.key_suffix()), e.clone());
            }
        }
        d
    }

    /// Keys that could not be used, and why.
    pub fn problems(&self) -> &BTreeMap<String, String> {
        &self.problems
    }

    /// The principal `bearer` acts as, if it is a live token at `now` (epoch seconds).
    pub fn authenticate(&self, bearer: &Bearer, now: u64) -> Option<&Principal> {
        match self.tokens.get(&bearer.id) {
            Some(Ok(rec)) if rec.accepts(bearer, now) => Some(&rec.principal),
            _ => None,
        }
    }

    /// Whether a token with `id` is stored.
    pub fn has_token(&self, id: &str) -> bool {
        self.tokens.contains_key(id)
    }

    /// The stored tokens that decode.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values().filter_map(|t| t.as_ref().ok())
    }

    /// The stored access key `id`: `None` if there is none, an error if its record is broken.
    pub fn access_key(&self, id: &str) -> Option<Result<&AccessKeyRecord, &str>> {
        self.access_keys
            .get(id)
            .map(|r| r.as_ref().map_err(String::as_str))
    }

    /// The stored access keys that decode.
    pub fn access_keys(&self) -> impl Iterator<Item = &AccessKeyRecord> {
        self.access_keys.values().filter_map(|k| k.as_ref().ok())
    }

    /// Whether `principal` is a break-glass administrator.
    pub fn is_admin(&self, principal: &Principal) -> bool {
        self.admins.contains(principal)
    }

    /// The policy names that apply to `principal`: its own, then its groups', each once.
    pub fn policies_of(&self, principal: &Principal) -> Result<Vec<String>, String> {
        let Some(att) = self.principals.get(principal) else {
            return Ok(vec![]);
        };
        let att = att
            .as_ref()
            .map_err(|e| format!("its attachments cannot be read: {e}"))?;
        let mut names: Vec<String> = att.policies.clone();
        for g in &att.groups {
            match self.groups.get(g) {
                Some(Ok(group)) => names.extend(group.policies.iter().cloned()),
                Some(Err(e)) => return Err(format!("its group {g} cannot be read: {e}")),
                None => {}
            }
        }
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        Ok(names)
    }

    /// Whether `principal` (`None`: an unauthenticated caller) may do `action` on `resource`.
    pub fn authorize(
        &self,
        principal: Option<&Principal>,
        action: &str,
        resource: &str,
    ) -> Verdict {
        let Some(principal) = principal else {
            return Verdict::deny(format!(
                "an unauthenticated caller is not authorized to perform: {action} on resource: {resource}; present a client certificate or a bearer token"
            ));
        };
        if self.is_admin(principal) {
            return Verdict::allow(format!("{principal} is an administrator"));
        }
        let denied = |why: String| {
            Verdict::deny(format!(
                "{principal} is not authorized to perform: {action} on resource: {resource} {why}"
            ))
        };
        let names = match self.policies_of(principal) {
            Ok(n) => n,
            Err(e) => return denied(format!("because {e}")),
        };
        let mut allowed_by = None;
        for name in &names {
            let doc = match self.policies.get(name) {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    return denied(format!(
                        "because policy {name} attached to it cannot be read: {e}"
                    ));
                }
                None => continue,
            };
            for s in doc
                .statements
                .iter()
                .filter(|s| s.matches(action, resource))
            {
                match s.effect {
                    Effect::Deny => {
                        let sid = s
                            .sid
                            .as_deref()
                            .map(|s| format!(" (statement {s})"))
                            .unwrap_or_default();
                        return denied(format!("with an explicit deny in policy {name}{sid}"));
                    }
                    Effect::Allow => {
                        allowed_by.get_or_insert(name);
                    }
                }
            }
        }
        match allowed_by {
            Some(name) => Verdict::allow(format!("allowed by policy {name}")),
            None => denied("because no policy attached to it or its groups allows it".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "arn:capstan:ecs:local:000000000000:service";

    fn principal(s: &str) -> Principal {
        Principal::parse(s).expect("valid principal")
    }

    fn directory(entries: &[(&str, &str)]) -> Directory {
        Directory::load(
            entries.iter().map(|(k, v)| (*k, v.as_bytes())),
            [principal("capstan://user/root")],
        )
    }

    fn fixture() -> Directory {
        directory(&[
            (
                "policies/prod-services",
                r#"{"Statement":[{"Effect":"Allow","Action":["ecs:*Service*"],"Resource":"arn:capstan:ecs:local:000000000000:service/prod/*"}]}"#,
            ),
            (
                "policies/read-all",
                r#"{"Statement":{"Effect":"Allow","Action":["ecs:Describe*","ecs:List*"],"Resource":"*"}}"#,
            ),
            (
                "policies/no-delete",
                r#"{"Statement":{"Sid":"keep","Effect":"Deny","Action":"ecs:DeleteService","Resource":"*"}}"#,
            ),
            ("policies/broken", r#"{"Statement":"#),
            ("groups/readers", r#"{"policies":["read-all"]}"#),
            (
                "principals/user/alice",
                r#"{"policies":["prod-services"],"groups":["readers"]}"#,
            ),
            (
                "principals/user/bob",
                r#"{"policies":["prod-services","no-delete"]}"#,
            ),
            ("principals/user/carol", r#"{"groups":["readers"]}"#),
            (
                "principals/user/dave",
                r#"{"policies":["read-all","broken"]}"#,
            ),
            ("principals/user/erin", r#"{"policies":["missing"]}"#),
        ])
    }

    #[test]
    fn the_decision_table() {
        let d = fixture();
        let table: [(&str, &str, String, bool, &str); 12] = [
            (
                "alice",
                "ecs:CreateService",
                format!("{SVC}/prod/web"),
                true,
                "prod-services",
            ),
            (
                "alice",
                "ecs:createservice",
                format!("{SVC}/prod/web"),
                true,
                "prod-services",
            ),
            (
                "alice",
                "ecs:CreateService",
                format!("{SVC}/staging/web"),
                false,
                "no policy",
            ),
            (
                "alice",
                "ecs:DescribeServices",
                format!("{SVC}/staging/web"),
                true,
                "read-all",
            ),
            (
                "alice",
                "ecs:DeleteCluster",
                "arn:capstan:ecs:local:000000000000:cluster/prod".into(),
                false,
                "no policy",
            ),
            (
                "bob",
                "ecs:UpdateService",
                format!("{SVC}/prod/web"),
                true,
                "prod-services",
            ),
            (
                "bob",
                "ecs:DeleteService",
                format!("{SVC}/prod/web"),
                false,
                "explicit deny in policy no-delete (statement keep)",
            ),
            (
                "carol",
                "ecs:ListServices",
                "arn:capstan:ecs:local:000000000000:cluster/prod".into(),
                true,
                "read-all",
            ),
            (
                "carol",
                "ecs:UpdateService",
                format!("{SVC}/prod/web"),
                false,
                "no policy",
            ),
            (
                "dave",
                "ecs:DescribeServices",
                format!("{SVC}/prod/web"),
                false,
                "policy broken attached to it cannot be read",
            ),
            (
                "erin",
                "ecs:DescribeServices",
                format!("{SVC}/prod/web"),
                false,
                "no policy",
            ),
            (
                "root",
                "capstan:DeletePolicy",
                "*".into(),
                true,
                "administrator",
            ),
        ];
        for (who, action, resource, allowed, why) in table {
            let v = d.authorize(
                Some(&principal(&format!("capstan://user/{who}"))),
                action,
                &resource,
            );
            assert_eq!(v.allowed(), allowed, "{who} {action} {resource}: {v:?}");
            assert!(v.reason.contains(why), "{who} {action}: {}", v.reason);
        }
    }

    #[test]
    fn nobody_and_strangers_are_denied_by_default() {
        let d = fixture();
        let v = d.authorize(None, "ecs:ListClusters", "*");
        assert!(!v.allowed());
        assert!(v.reason.contains("unauthenticated"));
        let v = d.authorize(
            Some(&principal("capstan://component/scheduler")),
            "ecs:ListClusters",
            "*",
        );
        assert!(!v.allowed());
        assert!(v.reason.starts_with("capstan://component/scheduler is not authorized to perform: ecs:ListClusters on resource: *"));
    }

    #[test]
    fn undecodable_documents_are_reported_and_never_grant() {
        let d = directory(&[
            ("principals/user/x", "{"),
            ("principals/robot/x", "{}"),
            (
                "tokens/abc",
                r#"{"tokenId":"abd","principal":"capstan://user/x","secretHash":"00","createdAt":1}"#,
            ),
            ("elsewhere", "{}"),
        ]);
        let keys: Vec<&str> = d.problems().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "elsewhere",
                "principals/robot/x",
                "principals/user/x",
                "tokens/abc"
            ]
        );
        assert!(
            d.has_token("abc"),
            "a broken token record is kept, not treated as deleted"
        );
        let v = d.authorize(
            Some(&principal("capstan://user/x")),
            "ecs:ListClusters",
            "*",
        );
        assert!(
            v.reason.contains("attachments cannot be read"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_token_authenticates_its_principal_until_it_expires() {
        let bearer = Bearer {
            id: "0123456789abcdef".into(),
            secret: "b".repeat(64),
        };
        let rec = format!(
            r#"{{"tokenId":"0123456789abcdef","principal":"capstan://user/ci","secretHash":"{}","createdAt":1,"expiresAt":100}}"#,
            bearer.secret_hash()
        );
        let d = directory(&[("tokens/0123456789abcdef", &rec)]);
        assert_eq!(
            d.authenticate(&bearer, 50).map(ToString::to_string),
            Some("capstan://user/ci".into())
        );
        assert_eq!(d.authenticate(&bearer, 100), None);
        let wrong = Bearer {
            secret: "c".repeat(64),
            ..bearer
        };
        assert_eq!(d.authenticate(&wrong, 50), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A Deny for `*` on `*` beats any Allow, whatever the order of attachment.
            #[test]
            fn an_explicit_deny_always_wins(action in "ecs:[A-Za-z]{1,20}", res in "arn:[a-z/:*]{0,30}", deny_first in any::<bool>()) {
                let allow = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#;
                let deny = r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#;
                let order = if deny_first { r#"{"policies":["d","a"]}"# } else { r#"{"policies":["a","d"]}"# };
                let d = directory(&[("policies/a", allow), ("policies/d", deny), ("principals/user/p", order)]);
                let v = d.authorize(Some(&principal("capstan://user/p")), &action, &res);
                prop_assert!(!v.allowed());
            }

            /// With no policies nothing is allowed (default deny).
            #[test]
            fn nothing_is_allowed_without_a_policy(action in "[a-z]{1,10}:[A-Za-z*]{1,20}", res in "\\PC{0,40}") {
                let d = directory(&[]);
                prop_assert!(!d.authorize(Some(&principal("capstan://user/p")), &action, &res).allowed());
            }
        }
    }
}

//! Principals: `capstan://<kind>/<name>`, and how a client certificate names one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{IAM_ARN_PREFIX, IamError};

/// The URI scheme of principals.
pub const SCHEME: &str = "capstan://";

/// What kind of caller a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A person or a pipeline.
    User,
    /// A Capstan component (scheduler, deployer, …).
    Component,
    /// A node agent, by its container instance id.
    Agent,
}

impl Kind {
    /// The kind as it appears in URIs and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Component => "component",
            Kind::Agent => "agent",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Kind::User),
            "component" => Some(Kind::Component),
            "agent" => Some(Kind::Agent),
            _ => None,
        }
    }
}

/// A caller's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal {
    kind: Kind,
    name: String,
}

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Principal {
    /// A principal of `kind` named `name`.
    pub fn new(kind: Kind, name: &str) -> Result<Self, IamError> {
        if !valid_name(name) {
            return Err(IamError::BadPrincipal(format!(
                "{SCHEME}{}/{name}",
                kind.as_str()
            )));
        }
        Ok(Self {
            kind,
            name: name.to_string(),
        })
    }

    /// Parses `capstan://<kind>/<name>`.
    pub fn parse(uri: &str) -> Result<Self, IamError> {
        let bad = || IamError::BadPrincipal(uri.to_string());
        let rest = uri.strip_prefix(SCHEME).ok_or_else(bad)?;
        let (kind, name) = rest.split_once('/').ok_or_else(bad)?;
        let kind = Kind::parse(kind).ok_or_else(bad)?;
        Self::new(kind, name).map_err(|_| bad())
    }

    /// Parses the key suffix `<kind>/<name>` (as under `/capstan/iam/principals/`).
    pub fn from_key_suffix(suffix: &str) -> Result<Self, IamError> {
        Self::parse(&format!("{SCHEME}{suffix}"))
    }

    /// The principal a client certificate names: its first valid `capstan://` URI SAN, or else a
    /// user named by its subject CN. `None` when it names neither.
    pub fn from_certificate(uris: &[String], common_name: Option<&str>) -> Option<Self> {
        uris.iter()
            .filter(|u| u.starts_with(SCHEME))
            .find_map(|u| Self::parse(u).ok())
            .or_else(|| common_name.and_then(|cn| Self::new(Kind::User, cn).ok()))
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<kind>/<name>`: the key suffix under `/capstan/iam/principals/`.
    pub fn key_suffix(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    /// Its ARN, the resource IAM actions about it name.
    pub fn arn(&self) -> String {
        format!("{IAM_ARN_PREFIX}principal/{}", self.key_suffix())
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.kind.as_str(), self.name)
    }
}

impl TryFrom<String> for Principal {
    type Error = IamError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> Self {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print_as_uris() {
        let table = [
            ("capstan://user/alice", true),
            ("capstan://user/alice@example.com", true),
            ("capstan://component/scheduler", true),
            ("capstan://agent/4f1c2e7a-0b7d-4a1e-9d7e-1f2a3b4c5d6e", true),
            ("capstan://user/", false),
            ("capstan://robot/x", false),
            ("capstan://user/a/b", false),
            ("capstan://user/a b", false),
            ("capstan://user/.hidden", false),
            ("https://user/alice", false),
            ("capstan://user/al\nice", false),
        ];
        for (uri, ok) in table {
            let p = Principal::parse(uri);
            assert_eq!(p.is_ok(), ok, "{uri}");
            if let Ok(p) = p {
                assert_eq!(p.to_string(), uri);
                assert_eq!(Principal::from_key_suffix(&p.key_suffix()), Ok(p));
            }
        }
    }

    #[test]
    fn a_certificate_names_its_principal_by_uri_then_by_cn() {
        let uri = vec![
            "spiffe://x/y".to_string(),
            "capstan://component/scheduler".to_string(),
        ];
        assert_eq!(
            Principal::from_certificate(&uri, Some("ignored")).map(|p| p.to_string()),
            Some("capstan://component/scheduler".into())
        );
        assert_eq!(
            Principal::from_certificate(&[], Some("operator")).map(|p| p.to_string()),
            Some("capstan://user/operator".into())
        );
        assert_eq!(Principal::from_certificate(&[], Some("a b")), None);
        assert_eq!(Principal::from_certificate(&[], None), None);
    }

    #[test]
    fn principals_serialize_as_their_uri() {
        let p = Principal::parse("capstan://user/bob").expect("valid");
        assert_eq!(
            serde_json::to_string(&p).expect("json"),
            "\"capstan://user/bob\""
        );
        assert!(serde_json::from_str::<Principal>("\"capstan://nope/bob\"").is_err());
    }
}

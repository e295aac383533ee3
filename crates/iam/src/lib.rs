//! `capstan-iam`: who a caller is, and whether Capstan's IAM-style policies let it act. Pure: no
//! IO, so the API, the CLI and tests share one decision.
//!
//! **Principals** are URIs: `capstan://user/<name>`, `capstan://component/<name>`,
//! `capstan://agent/<instance-id>`. A client certificate names one in a `capstan://` URI SAN,
//! or else by its subject CN (as a user); a bearer token maps to the principal it was issued to.
//!
//! **Policies** are IAM's documents: `{"Version": "2012-10-17", "Statement": [{"Effect":
//! "Allow"|"Deny", "Action": …, "Resource": …}]}`, with `*` and `?` wildcards in both. Actions
//! match without regard to case (`ecs:createservice` is `ecs:CreateService`), resources exactly.
//! Conditions, `NotAction`, `NotResource` and `Principal` are refused, not ignored: ignoring one
//! would grant more than the document says.
//!
//! **Evaluation** ([`Directory::authorize`]) is IAM's for identity policies: a principal's
//! policies are those attached to it and to its groups; an explicit `Deny` that matches wins;
//! otherwise a matching `Allow` allows; otherwise the request is denied (default deny). A policy
//! that is attached but cannot be read denies everything for that principal (fail closed: it may
//! have been a Deny). Administrators named on the API's command line are allowed everything
//! (break-glass, like Kubernetes' `system:masters`).
//!
//! **Storage** (under `/capstan/iam/`, JSON editable with etcdctl; see [`Directory::load`]):
//! `policies/<name>` a policy document; `groups/<name>` `{"policies": […]}`;
//! `principals/<kind>/<name>` `{"policies": […], "groups": […]}`; `tokens/<id>` a
//! [`TokenRecord`] (only a keyed hash of the secret is stored); `access-keys/<id>` an
//! [`AccessKeyRecord`] for the ECS endpoint's SigV4 ([`sigv4`]), its secret sealed under the
//! API's encryption key.

pub mod accesskey;
pub mod directory;
pub mod policy;
pub mod principal;
pub mod sigv4;
pub mod token;
pub mod webhook;

pub use accesskey::{AccessKey, AccessKeyRecord, SealingKey};
pub use directory::{Decision, Directory, Verdict};
pub use policy::{Effect, PolicyDocument, Statement};
pub use principal::{Kind, Principal};
pub use token::{Bearer, TokenRecord};

/// Start of the ARN of IAM objects (policies, groups, principals, tokens).
pub const IAM_ARN_PREFIX: &str = "arn:capstan:iam::000000000000:";

/// Why an IAM document or token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    /// A principal URI is malformed.
    #[error(
        "principal {0:?} is not valid: write capstan://user/NAME, capstan://component/NAME or capstan://agent/ID (NAME: letters, digits, '.', '_', '-', '@'; at most 128)"
    )]
    BadPrincipal(String),
    /// A name (policy, group) is malformed.
    #[error("{what} name {name:?} is not valid: use 1 to 128 letters, digits, '.', '_', '-'")]
    BadName {
        /// What was being named.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A document is not what its key holds.
    #[error("{0}")]
    BadDocument(String),
}

/// Whether `name` is a valid policy or group name.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// [`valid_name`] as a result.
pub fn check_name(what: &'static str, name: &str) -> Result<(), IamError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(IamError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

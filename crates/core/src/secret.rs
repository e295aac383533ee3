//! Secrets (`/capstan/secrets/<name>`): values sealed with AES-256-GCM under the encryption key
//! the API and the agents are given, several versions kept, referenced by container definitions'
//! `secrets[].valueFrom` and resolved by the agent when it starts the container.

use serde::{Deserialize, Serialize};

/// Versions kept per secret; older ones are dropped when a new one is put.
pub const VERSIONS_KEPT: usize = 10;

/// Largest value (Secrets Manager's limit).
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// A secret and its recent versions, values sealed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretRecord {
    /// Its name.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Oldest first.
    pub versions: Vec<SecretVersion>,
}

/// One version of a secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretVersion {
    /// 1, 2, …
    pub version: u32,
    /// The value, sealed for [`seal_id`]`(name, version)`.
    pub sealed_value: String,
    /// When it was put (epoch seconds).
    pub created_at: f64,
}

impl SecretRecord {
    /// The version `wanted`, or the latest.
    pub fn version(&self, wanted: Option<u32>) -> Option<&SecretVersion> {
        match wanted {
            Some(v) => self.versions.iter().find(|x| x.version == v),
            None => self.versions.iter().max_by_key(|x| x.version),
        }
    }

    /// The next version's number.
    pub fn next_version(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
    }
}

/// What a value is sealed for: the secret and its version, so a sealed value cannot be moved
/// to another secret or version.
pub fn seal_id(name: &str, version: u32) -> String {
    format!("secret/{name}/{version}")
}

/// Whether `name` is a valid secret name: 1–512 letters, digits and `/_+=.@-` (Secrets
/// Manager's), not starting or ending with `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
}

/// The secret and version a `valueFrom` names: `name`, `name:version`, or an ARN whose resource
/// is `secret:name[:…]` (Secrets Manager) or `parameter/name` (SSM), as ECS task definitions
/// write them. `None` when it names none.
pub fn parse_value_from(value_from: &str) -> Option<(String, Option<u32>)> {
    let reference = if value_from.starts_with("arn:") {
        let resource = value_from.splitn(6, ':').nth(5)?;
        if let Some(rest) = resource.strip_prefix("secret:") {
            // secret:name[:json-key:version-stage:version-id]; a version id that is a number
            // is a Capstan version.
            let mut parts = rest.split(':');
            let name = parts.next()?.to_string();
            let version = parts.nth(2).and_then(|v| v.parse().ok());
            return valid_name(&name).then_some((name, version));
        }
        resource.strip_prefix("parameter/")?.to_string()
    } else {
        value_from.to_string()
    };
    let (name, version) = match reference.rsplit_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.parse().ok()?)),
        None => (reference, None),
    };
    valid_name(&name).then_some((name, version))
}

/// Where an `environmentFiles` entry's variables come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvFile {
    /// A Capstan secret whose value is the file (`secret:<name>[:version]`).
    Secret(String, Option<u32>),
    /// A `.env` file on the host (an absolute path, or `file://` and one).
    Host(std::path::PathBuf),
}

impl EnvFile {
    /// Reads an `environmentFiles[].value`; `None` for what Capstan cannot read (an S3 ARN:
    /// there is no S3 here).
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(reference) = value.strip_prefix("secret:") {
            let (name, version) = parse_value_from(reference)?;
            return Some(EnvFile::Secret(name, version));
        }
        let path = value.strip_prefix("file://").unwrap_or(value);
        let p = std::path::Path::new(path);
        (p.is_absolute()
            && p.extension().is_some_and(|e| e == "env")
            && !p.components().any(|c| c == std::path::Component::ParentDir))
        .then(|| EnvFile::Host(p.to_path_buf()))
    }
}

/// The variables of an env file: `KEY=value` lines; blank lines and `#` comments skipped, a
/// value taken as written (no quotes removed), as ECS reads them.
pub fn env_file_vars(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                out.push((k.to_string(), v.to_string()));
            }
            _ => return Err(format!("line {} is not KEY=value", n + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_from_names_a_secret_as_ecs_task_definitions_write_it() {
        type Named<'a> = Option<(&'a str, Option<u32>)>;
        let cases: &[(&str, Named)] = &[
            ("db-password", Some(("db-password", None))),
            ("db-password:3", Some(("db-password", Some(3)))),
            ("prod/db/password", Some(("prod/db/password", None))),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password",
                Some(("db-password", None)),
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password:password::2",
                Some(("db-password", Some(2))),
            ),
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/app/token",
                Some(("app/token", None)),
            ),
            ("db-password:latest", None),
            ("has space", None),
            ("", None),
            ("arn:aws:s3:::bucket", None),
        ];
        for (input, want) in cases {
            let got = parse_value_from(input);
            let want = want.map(|(n, v)| (n.to_string(), v));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn the_latest_version_is_the_default() {
        let r = SecretRecord {
            name: "s".into(),
            description: None,
            versions: vec![
                SecretVersion {
                    version: 1,
                    ..Default::default()
                },
                SecretVersion {
                    version: 2,
                    ..Default::default()
                },
            ],
        };
        assert_eq!(r.version(None).map(|v| v.version), Some(2));
        assert_eq!(r.version(Some(1)).map(|v| v.version), Some(1));
        assert!(r.version(Some(5)).is_none());
        assert_eq!(r.next_version(), 3);
    }

    #[test]
    fn environment_files_come_from_secrets_or_host_env_files() {
        assert_eq!(
            EnvFile::parse("secret:app/env:2"),
            Some(EnvFile::Secret("app/env".into(), Some(2)))
        );
        assert_eq!(
            EnvFile::parse("file:///etc/capstan/env/app.env"),
            Some(EnvFile::Host("/etc/capstan/env/app.env".into()))
        );
        for bad in [
            "arn:aws:s3:::bucket/app.env",
            "relative/app.env",
            "/etc/shadow",
            "/etc/capstan/env/../../shadow.env",
        ] {
            assert_eq!(EnvFile::parse(bad), None, "{bad}");
        }
        assert_eq!(
            env_file_vars("A=1\n\n# c\nB=two words\nC=x=y\n"),
            Ok(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ])
        );
        assert!(env_file_vars("not a pair").is_err());
    }
}

//! Secrets a container asks for (`secrets[].valueFrom`): read from etcd when the container
//! starts, opened with the encryption key (`--encryption-key-file`, the API's), and handed to
//! the runtime as environment variables. They are never written to the agent's state dir, the
//! task's record or its reports: only the container's environment holds them.

use std::sync::Arc;
use std::time::Duration;

use capstan_core::secret::{self, SecretRecord};
use capstan_core::taskdef::ContainerDefinition;
use capstan_iam::SealingKey;
use capstan_store::Store;
use tokio::sync::watch;

/// How long a start waits for the agent's first connection to etcd.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// What the agent opens secrets with.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The store, once connected.
    pub store: Option<watch::Receiver<Option<Store>>>,
    /// The encryption key.
    pub key: Option<Arc<SealingKey>>,
    /// The one host directory `environmentFiles` may name files in (none when absent).
    pub env_files_dir: Option<std::path::PathBuf>,
}

/// Largest env file read.
const MAX_ENV_FILE: u64 = 64 << 10;

/// What a container's start adds to its environment.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// From `environmentFiles`, in order (its `environment` wins over these).
    pub files: Vec<(String, String)>,
    /// From `secrets` (these win over everything).
    pub secrets: Vec<(String, String)>,
}

/// `(name, valueFrom)` of each of `def`'s secrets, or why they cannot be read.
fn wanted(def: &ContainerDefinition) -> Result<Vec<(String, String)>, String> {
    let Some(list) = &def.secrets else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| "secrets must be a list of {name, valueFrom}".to_string())?;
    items
        .iter()
        .map(|s| match (s["name"].as_str(), s["valueFrom"].as_str()) {
            (Some(n), Some(v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
            _ => Err(format!("secret {s} needs a name and a valueFrom")),
        })
        .collect()
}

impl Secrets {
    /// The environment variables `def`'s environment files and secrets make, or why they cannot
    /// be had (the task then fails to start, as ECS's ResourceInitializationError).
    pub async fn resolve(&self, def: &ContainerDefinition) -> Result<Resolved, String> {
        let wanted = wanted(def)?;
        let files = env_files(def)?;
        let mut out = Resolved::default();
        for file in files {
            let text = match file {
                secret::EnvFile::Secret(name, version) => self.open(&name, version).await?,
                secret::EnvFile::Host(path) => self.host_env_file(&path)?,
            };
            out.files.extend(secret::env_file_vars(&text)?);
        }
        for (var, value_from) in wanted {
            let (name, version) = secret::parse_value_from(&value_from)
                .ok_or_else(|| format!("valueFrom {value_from:?} names no secret"))?;
            out.secrets.push((var, self.open(&name, version).await?));
        }
        Ok(out)
    }

    /// One secret's value.
    async fn open(&self, name: &str, version: Option<u32>) -> Result<String, String> {
        let key = self.key.as_ref().ok_or(
            "this agent was started without --encryption-key-file, so it cannot open secrets",
        )?;
        let store = self.store().await?;
        let record: SecretRecord = store
            .get_json(&store.keys().secret(name))
            .await
            .map_err(|e| format!("cannot read secret {name}: {e}"))?
            .map(|v| v.value)
            .ok_or_else(|| format!("secret {name} does not exist"))?;
        let v = record
            .version(version)
            .ok_or_else(|| format!("secret {name} has no version {version:?}"))?;
        key.open(&secret::seal_id(name, v.version), &v.sealed_value)
            .map_err(|e| format!("secret {name} does not open with this agent's key: {e}"))
    }

    /// A host env file, only from under `--environment-files-dir`.
    fn host_env_file(&self, path: &std::path::Path) -> Result<String, String> {
        let dir = self.env_files_dir.as_ref().ok_or_else(|| {
            format!(
                "{} is a host file, and this agent reads none (--environment-files-dir)",
                path.display()
            )
        })?;
        let real = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let root = dir
            .canonicalize()
            .map_err(|e| format!("--environment-files-dir {}: {e}", dir.display()))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "{} is outside --environment-files-dir {}",
                path.display(),
                dir.display()
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_ENV_FILE {
            return Err(format!(
                "{} is larger than {MAX_ENV_FILE} bytes",
                path.display()
            ));
        }
        std::fs::read_to_string(&real).map_err(|e| format!("{}: {e}", path.display()))
    }

    async fn store(&self) -> Result<Store, String> {
        let mut rx = self
            .store
            .clone()
            .ok_or("this agent has no connection to etcd")?;
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout(STORE_WAIT, wait).await {
            Ok(Ok(s)) => s.clone().ok_or_else(|| "no etcd connection".to_string()),
            _ => Err(format!("etcd not reachable within {STORE_WAIT:?}")),
        }
    }
}

/// The sources of `def`'s `environmentFiles`.
fn env_files(def: &ContainerDefinition) -> Result<Vec<secret::EnvFile>, String> {
    let Some(list) = &def.environment_files else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| "environmentFiles must be a list of {value, type}".to_string())?;
    items
        .iter()
        .map(|f| {
            f["value"]
                .as_str()
                .and_then(secret::EnvFile::parse)
                .ok_or_else(|| {
                    format!("environment file {f} is neither a secret nor a host .env file")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(secrets: serde_json::Value) -> ContainerDefinition {
        serde_json::from_value(serde_json::json!({"name": "app", "image": "x", "secrets": secrets}))
            .expect("container definition")
    }

    #[tokio::test]
    async fn host_env_files_are_read_only_from_the_allowed_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let allowed = dir.path().join("env");
        std::fs::create_dir_all(&allowed).expect("mkdir");
        std::fs::write(allowed.join("app.env"), "A=1\nB=two\n").expect("write");
        std::fs::write(dir.path().join("other.env"), "X=1\n").expect("write");
        let files = |p: &std::path::Path| {
            serde_json::from_value::<ContainerDefinition>(serde_json::json!({"name": "app",
                "image": "x", "environmentFiles": [{"value": p.display().to_string(), "type": "s3"}]}))
            .expect("def")
        };
        let s = Secrets {
            env_files_dir: Some(allowed.clone()),
            ..Default::default()
        };
        let got = s
            .resolve(&files(&allowed.join("app.env")))
            .await
            .expect("read");
        assert_eq!(
            got.files,
            [("A".into(), "1".into()), ("B".into(), "two".into())]
        );
        let e = s
            .resolve(&files(&dir.path().join("other.env")))
            .await
            .expect_err("outside");
        assert!(e.contains("outside"), "{e}");
        let e = Secrets::default()
            .resolve(&files(&allowed.join("app.env")))
            .await
            .expect_err("no dir");
        assert!(e.contains("--environment-files-dir"), "{e}");
    }

    #[test]
    fn secrets_are_name_and_value_from_pairs() {
        let d = def(serde_json::json!([{"name": "DB", "valueFrom": "db-password"}]));
        assert_eq!(
            wanted(&d).expect("ok"),
            [("DB".to_string(), "db-password".to_string())]
        );
        assert!(wanted(&def(serde_json::json!({"DB": "x"}))).is_err());
        assert!(wanted(&def(serde_json::json!([{"name": "DB"}]))).is_err());
    }

    #[tokio::test]
    async fn without_a_key_a_container_with_secrets_is_refused_and_one_without_is_not() {
        let s = Secrets::default();
        let e = s
            .resolve(&def(serde_json::json!([{"name": "DB", "valueFrom": "db"}])))
            .await
            .expect_err("refused");
        assert!(e.contains("--encryption-key-file"), "{e}");
        let none: ContainerDefinition =
            serde_json::from_value(serde_json::json!({"name": "app", "image": "x"})).expect("def");
        assert_eq!(s.resolve(&none).await, Ok(Resolved::default()));
    }
}

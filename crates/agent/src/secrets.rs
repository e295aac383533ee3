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
    /// The environment variables `def`'s secrets make, or why they cannot be had (the task then
    /// fails to start, as ECS's ResourceInitializationError).
    pub async fn resolve(
        &self,
        def: &ContainerDefinition,
    ) -> Result<Vec<(String, String)>, String> {
        let wanted = wanted(def)?;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key.as_ref().ok_or(
            "this agent was started without --encryption-key-file, so it cannot open secrets",
        )?;
        let store = self.store().await?;
        let mut env = Vec::new();
        for (var, value_from) in wanted {
            let (name, version) = secret::parse_value_from(&value_from)
                .ok_or_else(|| format!("valueFrom {value_from:?} names no secret"))?;
            let record: SecretRecord = store
                .get_json(&store.keys().secret(&name))
                .await
                .map_err(|e| format!("cannot read secret {name}: {e}"))?
                .map(|v| v.value)
                .ok_or_else(|| format!("secret {name} does not exist"))?;
            let v = record
                .version(version)
                .ok_or_else(|| format!("secret {name} has no version {version:?}"))?;
            let value = key
                .open(&secret::seal_id(&name, v.version), &v.sealed_value)
                .map_err(|e| format!("secret {name} does not open with this agent's key: {e}"))?;
            env.push((var, value));
        }
        Ok(env)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn def(secrets: serde_json::Value) -> ContainerDefinition {
        serde_json::from_value(serde_json::json!({"name": "app", "image": "x", "secrets": secrets}))
            .expect("container definition")
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
        assert_eq!(s.resolve(&none).await, Ok(vec![]));
    }
}

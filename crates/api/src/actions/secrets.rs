//! Secrets: PutSecret, GetSecretValue, ListSecrets, DeleteSecret. Values are sealed with the
//! encryption key (`--encryption-key-file`) for their secret and version before they reach
//! etcd; only GetSecretValue (and the agent starting a container) ever opens them.

use capstan_core::secret::{self, MAX_VALUE_BYTES, SecretRecord, SecretVersion, VERSIONS_KEPT};
use ring::rand::SystemRandom;

use super::*;

fn check_name(name: &str) -> ApiResult<()> {
    if secret::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "secret name {name:?} must be 1-512 letters, digits and /_+=.@- (not starting or ending with /)"
        )))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        Exception::ResourceNotFound,
        format!("Secrets Manager can't find the specified secret: {name}"),
    )
}

/// The secret without its values.
fn described(r: &SecretRecord) -> pb::SecretResponse {
    let versions: Vec<Value> = r
        .versions
        .iter()
        .map(|v| json!({"version": v.version, "createdAt": v.created_at}))
        .collect();
    let mut doc = json!({"name": r.name, "versions": versions});
    if let Some(d) = &r.description {
        doc["description"] = json!(d);
    }
    pb::SecretResponse {
        secret_json: doc.to_string(),
    }
}

impl Api {
    fn sealing_key(&self) -> ApiResult<&capstan_iam::SealingKey> {
        self.sealing.as_deref().ok_or_else(|| {
            ApiError::invalid(
                "this API was started without --encryption-key-file, so it cannot keep secrets",
            )
        })
    }

    async fn secret_record(&self, name: &str) -> ApiResult<Option<(SecretRecord, i64)>> {
        Ok(self
            .get::<SecretRecord>(&self.keys().secret(name))
            .await?
            .map(|(r, kv)| (r, kv.mod_revision)))
    }

    /// PutSecret: a new version (the first creates the secret).
    pub async fn put_secret(&self, req: pb::PutSecretRequest) -> ApiResult<pb::SecretResponse> {
        check_name(&req.name)?;
        if req.value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(format!(
                "a secret value takes at most {MAX_VALUE_BYTES} bytes"
            )));
        }
        let key = self.keys().secret(&req.name);
        let sealing = self.sealing_key()?;
        for _ in 0..CAS_ATTEMPTS {
            let found = self.secret_record(&req.name).await?;
            let (mut record, rev) = found.unwrap_or_else(|| {
                (
                    SecretRecord {
                        name: req.name.clone(),
                        ..Default::default()
                    },
                    0,
                )
            });
            let version = record.next_version();
            let sealed = sealing
                .seal(
                    &secret::seal_id(&req.name, version),
                    &req.value,
                    &SystemRandom::new(),
                )
                .map_err(|e| ApiError::new(Exception::Server, e.to_string()))?;
            record.versions.push(SecretVersion {
                version,
                sealed_value: sealed,
                created_at: now(),
            });
            let extra = record.versions.len().saturating_sub(VERSIONS_KEPT);
            record.versions.drain(..extra);
            if !req.description.is_empty() {
                record.description = Some(req.description.clone());
            }
            let w = Write::new().put_json(&key, &record);
            let w = if rev == 0 {
                w.if_absent(&key)
            } else {
                w.if_unchanged(&key, rev)
            };
            if committed(self.store.commit(w, None).await)? {
                return Ok(described(&record));
            }
        }
        Err(busy("the secret"))
    }

    /// GetSecretValue: a version's value, the latest by default.
    pub async fn get_secret_value(
        &self,
        req: pb::GetSecretValueRequest,
    ) -> ApiResult<pb::SecretValueResponse> {
        check_name(&req.name)?;
        let (record, _) = self
            .secret_record(&req.name)
            .await?
            .ok_or_else(|| not_found(&req.name))?;
        let wanted = (req.version != 0).then_some(req.version);
        let v = record.version(wanted).ok_or_else(|| {
            ApiError::new(
                Exception::ResourceNotFound,
                format!("secret {} has no version {}", req.name, req.version),
            )
        })?;
        let value = self
            .sealing_key()?
            .open(&secret::seal_id(&req.name, v.version), &v.sealed_value)
            .map_err(|e| {
                ApiError::new(
                    Exception::Server,
                    format!(
                        "secret {} version {} does not open: {e}",
                        req.name, v.version
                    ),
                )
            })?;
        Ok(pb::SecretValueResponse {
            name: req.name,
            version: v.version,
            value,
        })
    }

    /// ListSecrets: every secret's name.
    pub async fn list_secrets(&self, _req: pb::ListSecretsRequest) -> ApiResult<pb::ListResponse> {
        let mut names: Vec<String> = self
            .list::<SecretRecord>(&self.keys().secrets())
            .await?
            .into_iter()
            .map(|(r, _)| r.name)
            .collect();
        names.sort();
        Ok(pb::ListResponse {
            arns: names,
            next_token: String::new(),
        })
    }

    /// DeleteSecret: the secret and every version, at once (containers started already keep
    /// their environment).
    pub async fn delete_secret(
        &self,
        req: pb::DeleteSecretRequest,
    ) -> ApiResult<pb::SecretResponse> {
        check_name(&req.name)?;
        let (record, rev) = self
            .secret_record(&req.name)
            .await?
            .ok_or_else(|| not_found(&req.name))?;
        let key = self.keys().secret(&req.name);
        let w = Write::new().delete(&key).if_unchanged(&key, rev);
        if !committed(self.store.commit(w, None).await)? {
            return Err(busy("the secret"));
        }
        Ok(described(&record))
    }
}

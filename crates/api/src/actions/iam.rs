//! The Iam service's actions: bootstrap, tokens, and policy, group and principal documents
//! under `/capstan/iam/`. Documents are validated with `capstan-iam` before they are stored, so
//! only etcdctl can store one the API would not use (and the API then reports it).

use capstan_iam::accesskey::valid_key_id;
use capstan_iam::directory::{Attachments, BOOTSTRAP_KEY, Group};
use capstan_iam::{
    AccessKey, AccessKeyRecord, Bearer, PolicyDocument, Principal, TokenRecord, check_name,
};
use ring::rand::SystemRandom;

use super::*;

/// The policy Bootstrap creates: everything on everything.
pub const ADMIN_POLICY: &str = "AdministratorAccess";

/// The principal Bootstrap makes an administrator when the request names none.
pub const DEFAULT_ADMIN: &str = "capstan://user/admin";

/// A write's answer: the document stored and the revision it landed at.
pub type Written = (pb::DocumentResponse, i64);

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn principal(uri: &str) -> ApiResult<Principal> {
    Principal::parse(uri.trim()).map_err(|e| ApiError::invalid(e.to_string()))
}

fn new_token() -> ApiResult<Bearer> {
    Bearer::generate(&SystemRandom::new())
        .map_err(|_| ApiError::new(Exception::Server, "no randomness for a token"))
}

fn token_response(bearer: &Bearer, principal: &Principal) -> pb::TokenResponse {
    pb::TokenResponse {
        token: bearer.text(),
        token_id: bearer.id.clone(),
        principal: principal.to_string(),
    }
}

/// A policy, group or principal document.
enum Kind {
    Policy,
    Group,
    Principal,
}

impl Kind {
    fn parse(kind: &str) -> ApiResult<Self> {
        match kind {
            "policy" => Ok(Kind::Policy),
            "group" => Ok(Kind::Group),
            "principal" => Ok(Kind::Principal),
            k => Err(ApiError::invalid(format!(
                "kind {k:?} is not one of policy, group, principal"
            ))),
        }
    }

    /// The key suffix under `iam/` for `name`, validated.
    fn key_suffix(&self, name: &str) -> ApiResult<String> {
        let invalid = |e: capstan_iam::IamError| ApiError::invalid(e.to_string());
        Ok(match self {
            Kind::Policy => {
                check_name("policy", name).map_err(invalid)?;
                format!("policies/{name}")
            }
            Kind::Group => {
                check_name("group", name).map_err(invalid)?;
                format!("groups/{name}")
            }
            Kind::Principal => format!("principals/{}", principal(name)?.key_suffix()),
        })
    }

    fn list_prefix(&self) -> &'static str {
        match self {
            Kind::Policy => "policies/",
            Kind::Group => "groups/",
            Kind::Principal => "principals/",
        }
    }

    fn validate(&self, json: &[u8]) -> ApiResult<()> {
        let r = match self {
            Kind::Policy => PolicyDocument::parse(json).map(|_| ()),
            Kind::Group => Group::parse(json).map(|_| ()),
            Kind::Principal => Attachments::parse(json).map(|_| ()),
        };
        r.map_err(|e| ApiError::invalid(e.to_string()))
    }
}

impl Api {
    fn iam_key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.keys().iam())
    }

    /// Bootstrap: once, make `principal` an administrator and return a token for it.
    pub async fn bootstrap(
        &self,
        req: pb::BootstrapRequest,
    ) -> ApiResult<(pb::TokenResponse, i64)> {
        let who = if req.principal.is_empty() {
            principal(DEFAULT_ADMIN)?
        } else {
            principal(&req.principal)?
        };
        let marker = self.iam_key(BOOTSTRAP_KEY);
        if let Some(kv) = self.store.get(&marker).await? {
            return Err(ApiError::new(
                Exception::AccessDenied,
                format!(
                    "this cluster is already bootstrapped ({}); ask an administrator for a token",
                    String::from_utf8_lossy(&kv.value)
                ),
            ));
        }
        let bearer = new_token()?;
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"}],
        });
        let att_key = self.iam_key(&format!("principals/{}", who.key_suffix()));
        let existing = self.store.get(&att_key).await?;
        let mut att = existing
            .as_ref()
            .and_then(|kv| Attachments::parse(&kv.value).ok())
            .unwrap_or_default();
        if !att.policies.iter().any(|p| p == ADMIN_POLICY) {
            att.policies.push(ADMIN_POLICY.into());
        }
        let record = TokenRecord {
            token_id: bearer.id.clone(),
            principal: who.clone(),
            secret_hash: bearer.secret_hash(),
            description: "bootstrap administrator".into(),
            created_at: epoch_now(),
            expires_at: None,
        };
        let mut w = Write::new()
            .if_absent(&marker)
            .put_json(
                &marker,
                &json!({"principal": who.to_string(), "at": epoch_now()}),
            )
            .put_json(&self.iam_key(&format!("policies/{ADMIN_POLICY}")), &policy)
            .put_json(&att_key, &att)
            .put_json(&self.iam_key(&format!("tokens/{}", bearer.id)), &record);
        w = match &existing {
            Some(kv) => w.if_unchanged(&att_key, kv.mod_revision),
            None => w.if_absent(&att_key),
        };
        match self.store.commit(w, None).await {
            Ok(rev) => Ok((token_response(&bearer, &who), rev)),
            Err(StoreError::Conflict { .. }) => Err(ApiError::new(
                Exception::AccessDenied,
                "another Bootstrap won the race: this cluster is already bootstrapped",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// CreateToken: a new token for a principal.
    pub async fn create_token(
        &self,
        req: pb::CreateTokenRequest,
    ) -> ApiResult<(pb::TokenResponse, i64)> {
        let who = principal(&req.principal)?;
        let bearer = new_token()?;
        let now = epoch_now();
        let record = TokenRecord {
            token_id: bearer.id.clone(),
            principal: who.clone(),
            secret_hash: bearer.secret_hash(),
            description: req.description,
            created_at: now,
            expires_at: (req.ttl_seconds > 0).then(|| now.saturating_add(req.ttl_seconds)),
        };
        let key = self.iam_key(&format!("tokens/{}", bearer.id));
        let rev = self
            .store
            .commit(Write::new().if_absent(&key).put_json(&key, &record), None)
            .await?;
        Ok((token_response(&bearer, &who), rev))
    }

    /// ListTokens: every stored token, without its hash.
    pub async fn list_tokens(&self) -> ApiResult<pb::DescribeResponse> {
        self.list_iam_records("tokens/", "secretHash").await
    }

    /// RevokeToken: deletes a token.
    pub async fn revoke_token(&self, req: pb::RevokeTokenRequest) -> ApiResult<Written> {
        let id = req.token_id.trim();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid(format!(
                "token id {id:?} is not valid: it is the hex part after capstan_ (see ListTokens)"
            )));
        }
        let rev = self
            .delete_iam_record(&format!("tokens/{id}"), &format!("no token {id}"))
            .await?;
        Ok((
            pb::DocumentResponse {
                json: to_json(&json!({"tokenId": id, "revoked": true})),
                warnings: vec![],
            },
            rev,
        ))
    }

    /// CreateAccessKey: a new SigV4 access key for a principal, its secret sealed at rest.
    pub async fn create_access_key(
        &self,
        req: pb::CreateAccessKeyRequest,
    ) -> ApiResult<(pb::AccessKeyResponse, i64)> {
        let who = principal(&req.principal)?;
        let Some(sealing) = &self.sealing else {
            return Err(ApiError::invalid(
                "this API was started without --encryption-key-file, so it cannot store access keys' secrets; give every API replica the same key file",
            ));
        };
        let rng = SystemRandom::new();
        let no_rng = |_| ApiError::new(Exception::Server, "no randomness for an access key");
        let key = AccessKey::generate(&rng).map_err(no_rng)?;
        let record = AccessKeyRecord {
            access_key_id: key.id.clone(),
            principal: who.clone(),
            sealed_secret: sealing.seal(&key.id, &key.secret, &rng).map_err(no_rng)?,
            description: req.description,
            created_at: epoch_now(),
        };
        let etcd_key = self.iam_key(&format!("access-keys/{}", key.id));
        let rev = self
            .store
            .commit(
                Write::new()
                    .if_absent(&etcd_key)
                    .put_json(&etcd_key, &record),
                None,
            )
            .await?;
        Ok((
            pb::AccessKeyResponse {
                access_key_id: key.id,
                secret_access_key: key.secret,
                principal: who.to_string(),
            },
            rev,
        ))
    }

    /// ListAccessKeys: every stored access key, without its sealed secret.
    pub async fn list_access_keys(&self) -> ApiResult<pb::DescribeResponse> {
        self.list_iam_records("access-keys/", "sealedSecret").await
    }

    /// DeleteAccessKey: deletes an access key.
    pub async fn delete_access_key(&self, req: pb::DeleteAccessKeyRequest) -> ApiResult<Written> {
        let id = req.access_key_id.trim();
        if !valid_key_id(id) {
            return Err(ApiError::invalid(format!(
                "access key id {id:?} is not valid: AKCS and 16 characters (see ListAccessKeys)"
            )));
        }
        let rev = self
            .delete_iam_record(&format!("access-keys/{id}"), &format!("no access key {id}"))
            .await?;
        Ok((
            pb::DocumentResponse {
                json: to_json(&json!({"accessKeyId": id, "deleted": true})),
                warnings: vec![],
            },
            rev,
        ))
    }

    /// The records under `suffix`, each without its `secret` field.
    async fn list_iam_records(
        &self,
        suffix: &str,
        secret: &str,
    ) -> ApiResult<pb::DescribeResponse> {
        let listing = self.store.list(&self.iam_key(suffix)).await?;
        let mut items = vec![];
        let mut failures = vec![];
        for kv in listing.kvs {
            match serde_json::from_slice::<Value>(&kv.value) {
                Ok(Value::Object(mut m)) => {
                    m.remove(secret);
                    items.push(to_json(&m));
                }
                _ => failures.push(pb::Failure {
                    arn: kv.key.clone(),
                    reason: "UNREADABLE".into(),
                    detail: "the stored record is not a JSON object".into(),
                }),
            }
        }
        Ok(pb::DescribeResponse {
            items_json: items,
            failures,
        })
    }

    /// Deletes the IAM record at `suffix` if it is there (`ResourceNotFound` saying `missing`).
    async fn delete_iam_record(&self, suffix: &str, missing: &str) -> ApiResult<i64> {
        let key = self.iam_key(suffix);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(ApiError::new(Exception::ResourceNotFound, missing));
        };
        Ok(self
            .store
            .commit(
                Write::new()
                    .if_unchanged(&key, kv.mod_revision)
                    .delete(&key),
                None,
            )
            .await?)
    }

    /// PutDocument: creates or replaces a policy, group or principal's attachments.
    pub async fn put_iam_document(&self, req: pb::PutIamDocumentRequest) -> ApiResult<Written> {
        let kind = Kind::parse(&req.kind)?;
        let key = self.iam_key(&kind.key_suffix(&req.name)?);
        kind.validate(req.document_json.as_bytes())?;
        // Stored as written (re-serialized from its JSON), so etcdctl shows the user's document.
        let value: Value = serde_json::from_str(&req.document_json)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let rev = self.store.put_json(&key, &value).await?;
        Ok((
            pb::DocumentResponse {
                json: to_json(&value),
                warnings: vec![],
            },
            rev,
        ))
    }

    /// GetDocument.
    pub async fn get_iam_document(
        &self,
        req: pb::IamDocumentRequest,
    ) -> ApiResult<pb::DocumentResponse> {
        let kind = Kind::parse(&req.kind)?;
        let key = self.iam_key(&kind.key_suffix(&req.name)?);
        match self.store.get(&key).await? {
            Some(kv) => Ok(pb::DocumentResponse {
                json: String::from_utf8_lossy(&kv.value).into_owned(),
                warnings: vec![],
            }),
            None => Err(ApiError::new(
                Exception::ResourceNotFound,
                format!("no {} {}", req.kind, req.name),
            )),
        }
    }

    /// ListDocuments: the names of one kind (principals as URIs).
    pub async fn list_iam_documents(
        &self,
        req: pb::ListIamDocumentsRequest,
    ) -> ApiResult<pb::ListResponse> {
        let kind = Kind::parse(&req.kind)?;
        let prefix = self.iam_key(kind.list_prefix());
        let names = self
            .store
            .list(&prefix)
            .await?
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let suffix = kv.key.strip_prefix(&prefix)?.to_string();
                Some(match kind {
                    Kind::Principal => Principal::from_key_suffix(&suffix)
                        .map(|p| p.to_string())
                        .unwrap_or(suffix),
                    _ => suffix,
                })
            })
            .collect();
        Ok(pb::ListResponse {
            arns: names,
            next_token: String::new(),
        })
    }

    /// DeleteDocument.
    pub async fn delete_iam_document(&self, req: pb::IamDocumentRequest) -> ApiResult<Written> {
        let kind = Kind::parse(&req.kind)?;
        let key = self.iam_key(&kind.key_suffix(&req.name)?);
        if self.store.get(&key).await?.is_none() {
            return Err(ApiError::new(
                Exception::ResourceNotFound,
                format!("no {} {}", req.kind, req.name),
            ));
        }
        let rev = self.store.delete(&key).await?;
        Ok((
            pb::DocumentResponse {
                json: to_json(&json!({"kind": req.kind, "name": req.name, "deleted": true})),
                warnings: vec![],
            },
            rev,
        ))
    }
}

//! The etcd client: typed reads, paginated listings, and transactional (optionally fenced) writes.

use std::path::PathBuf;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use capstan_core::Keys;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::election::Claim;

/// Attempts of [`Store::update_json`] before it gives up on a key others keep changing.
pub const UPDATE_ATTEMPTS: usize = 5;
use crate::error::{Result, StoreError, is_unavailable};

/// Default timeout of one attempt of a call. A call sent as the raft leader dies can hang for
/// seconds; the timeout bounds it and the call is retried (to another member when one is down).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys fetched per page when listing, so large families stay under gRPC message limits.
pub const LIST_PAGE: i64 = 1000;

/// TLS to etcd: the CA that signed its members (server verification) and, for mutual TLS,
/// this client's certificate and key. Not the cluster identity of `capstan_proto::tls`: etcd may
/// have a CA of its own.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed the etcd members' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate (mutual TLS).
    pub cert: Option<PathBuf>,
    /// Client key (mutual TLS).
    pub key: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/capstan`.
    pub prefix: String,
    /// User name and password, when etcd auth is on.
    pub credentials: Option<(String, String)>,
    /// User name and a file holding the password (read at connect), when etcd auth is on.
    pub password_file: Option<(String, PathBuf)>,
    /// TLS, when etcd serves https.
    pub tls: Option<EtcdTls>,
    /// Per-call timeout.
    pub call_timeout: Duration,
}

impl StoreConfig {
    /// Plain-text config for `endpoints` under `prefix`.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Self {
        Self {
            endpoints,
            prefix: prefix.to_string(),
            credentials: None,
            password_file: None,
            tls: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// One stored key and its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: i64,
    /// Revision of the last change.
    pub mod_revision: i64,
    /// Lease the key is bound to (0 = none).
    pub lease: i64,
}

impl KeyValue {
    fn from_etcd(kv: &etcd_client::KeyValue) -> Self {
        Self {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }

    /// Decodes the value as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.value).map_err(|e| StoreError::Decode {
            key: self.key.clone(),
            message: e.to_string(),
        })
    }
}

/// A decoded value with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Revision of its last change: compare against it to write safely.
    pub mod_revision: i64,
}

/// Every key under a prefix, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Keys in order.
    pub kvs: Vec<KeyValue>,
    /// The store revision the listing is consistent at.
    pub revision: i64,
}

/// A transaction: compares that must all hold, then writes applied atomically.
#[derive(Debug, Default)]
pub struct Write {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    keys: Vec<String>,
    encode_error: Option<StoreError>,
}

impl Write {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts raw bytes.
    pub fn put(mut self, key: &str, value: Vec<u8>) -> Self {
        self.ops.push(TxnOp::put(key, value, None));
        self
    }

    /// Puts raw bytes bound to a lease.
    pub fn put_with_lease(mut self, key: &str, value: Vec<u8>, lease: i64) -> Self {
        self.ops.push(TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        ));
        self
    }

    /// Puts a value as JSON.
    pub fn put_json<T: Serialize>(self, key: &str, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.put(key, bytes),
            Err(source) => self.fail(StoreError::Encode {
                key: key.into(),
                source,
            }),
        }
    }

    /// Puts a value as JSON, bound to a lease.
    pub fn put_json_with_lease<T: Serialize>(self, key: &str, value: &T, lease: i64) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.put_with_lease(key, bytes, lease),
            Err(source) => self.fail(StoreError::Encode {
                key: key.into(),
                source,
            }),
        }
    }

    /// Puts the status document `doc` at `key`, stamped `now`, unless it equals `old` but for
    /// the stamp: a status put on every reconcile would churn etcd and wake every watcher.
    pub fn put_status_if_changed<T>(self, key: &str, old: Option<&T>, mut doc: T, now: f64) -> Self
    where
        T: capstan_core::Stamped + Serialize + PartialEq + Clone,
    {
        doc.stamp(None);
        let unchanged = old.is_some_and(|old| {
            let mut old = old.clone();
            old.stamp(None);
            old == doc
        });
        if unchanged {
            return self;
        }
        doc.stamp(Some(now));
        self.put_json(key, &doc)
    }

    /// Deletes a key.
    pub fn delete(mut self, key: &str) -> Self {
        self.ops.push(TxnOp::delete(key, None));
        self
    }

    /// Requires `key` to be unchanged since `mod_revision` (0 = must not exist).
    pub fn if_unchanged(mut self, key: &str, mod_revision: i64) -> Self {
        self.compares
            .push(Compare::mod_revision(key, CompareOp::Equal, mod_revision));
        self.keys.push(key.to_string());
        self
    }

    /// Requires `key` not to exist.
    pub fn if_absent(self, key: &str) -> Self {
        self.if_unchanged(key, 0)
    }

    /// Adds every compare and operation of `other` to this transaction.
    pub fn merge(mut self, other: Write) -> Self {
        self.compares.extend(other.compares);
        self.ops.extend(other.ops);
        self.keys.extend(other.keys);
        if let Some(e) = other.encode_error {
            self.encode_error.get_or_insert(e);
        }
        self
    }

    /// Number of write operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn fail(mut self, e: StoreError) -> Self {
        self.encode_error.get_or_insert(e);
        self
    }
}

/// Handle to etcd for one Capstan installation (one prefix). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
    call_timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| StoreError::Tls {
        path: path.display().to_string(),
        source,
    })
}

fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(6)
        .with_jitter()
}

impl Store {
    /// Connects to etcd.
    pub async fn connect(cfg: &StoreConfig) -> Result<Self> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            // Detect dead members quickly so the balancer stops using them.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum must not serve (stale) watches.
            .with_require_leader(true);
        let from_file = match &cfg.password_file {
            Some((user, path)) => {
                let pw =
                    std::fs::read_to_string(path).map_err(|source| StoreError::PasswordFile {
                        path: path.clone(),
                        source,
                    })?;
                Some((user.clone(), pw.trim().to_string()))
            }
            None => None,
        };
        if let Some((user, password)) = cfg.credentials.as_ref().or(from_file.as_ref()) {
            // etcd's tokens expire (--auth-token-ttl): re-authenticate and retry once.
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &cfg.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(read_file(ca)?));
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                t = t.identity(etcd_client::Identity::from_pem(
                    read_file(cert)?,
                    read_file(key)?,
                ));
            }
            opts = opts.with_tls(t);
        }
        let client = Client::connect(cfg.endpoints.clone(), Some(opts))
            .await
            .map_err(|source| StoreError::Connect {
                endpoints: cfg.endpoints.join(","),
                source,
            })?;
        Ok(Self {
            client,
            keys: Keys::new(&cfg.prefix),
            call_timeout: cfg.call_timeout,
        })
    }

    /// The key layout under this store's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying etcd client, for calls this type does not wrap.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The per-call timeout.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Runs one etcd call with the per-call timeout, retrying while members are unreachable.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let timeout = self.call_timeout;
        let attempt = || {
            let fut = f(self.client.clone());
            async move {
                match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(source)) => Err(StoreError::Etcd { op, source }),
                    Err(_) => Err(StoreError::Timeout { op, after: timeout }),
                }
            }
        };
        attempt
            .retry(retry_policy())
            // A timed-out attempt may still apply. Retrying is safe for `Write`s: their values
            // are fixed, so a replay either writes the same thing again or fails its compares.
            .when(|e| match e {
                StoreError::Etcd { source, .. } => is_unavailable(source),
                StoreError::Timeout { .. } => true,
                _ => false,
            })
            .notify(|e, d| tracing::debug!(error = %e, retry_in = ?d, "etcd call failed; retrying"))
            .await
    }

    /// Grants a lease of `ttl` seconds that nobody keeps alive: keys bound to it expire with it
    /// (records kept for a while, like the audit log's). Returns its id.
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64> {
        let resp = self
            .call("lease_grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// Turns etcd auth on with one user per role (`users`: role name → password), each
    /// granted only its role's prefixes, and `root` (etcd's administrator) with
    /// `root_password`. Refuses if auth is on already; roles and users left by an earlier,
    /// interrupted run are reused (their permissions granted again, passwords set again).
    pub async fn setup_auth(
        &self,
        roles: &[capstan_core::keys::Role],
        users: &std::collections::BTreeMap<String, String>,
        root_password: &str,
    ) -> Result<()> {
        use etcd_client::{Permission, UserAddOptions};
        let err = |op: &'static str| move |source| StoreError::Etcd { op, source };
        let mut c = self.client();
        let exists = |e: &etcd_client::Error| e.to_string().contains("already exists");
        let add_user = |mut c: etcd_client::Client, name: String, pw: String| async move {
            match c
                .user_add(name.clone(), pw.clone(), None::<UserAddOptions>)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if exists(&e) => c.user_change_password(name, pw).await.map(|_| ()),
                Err(e) => Err(e),
            }
        };
        // With auth on, an anonymous client is refused its first call.
        match add_user(c.clone(), "root".into(), root_password.into()).await {
            Ok(()) => {}
            Err(e) if e.to_string().contains("user name") || e.to_string().contains("auth") => {
                return Err(StoreError::AuthAlreadyOn);
            }
            Err(e) => return Err(err("user_add")(e)),
        }
        c.user_grant_role("root", "root")
            .await
            .map_err(err("user_grant_role"))?;
        for r in roles {
            match c.role_add(r.name.clone()).await {
                Ok(_) => {}
                Err(e) if exists(&e) => {}
                Err(e) => return Err(err("role_add")(e)),
            }
            let grants = r
                .read
                .iter()
                .map(|k| Permission::read(k.as_str()).with_prefix())
                .chain(
                    r.write
                        .iter()
                        .map(|k| Permission::read_write(k.as_str()).with_prefix()),
                );
            for perm in grants {
                c.role_grant_permission(r.name.clone(), perm)
                    .await
                    .map_err(err("role_grant_permission"))?;
            }
            let pw = users.get(&r.name).cloned().unwrap_or_default();
            add_user(c.clone(), r.name.clone(), pw)
                .await
                .map_err(err("user_add"))?;
            c.user_grant_role(r.name.clone(), r.name.clone())
                .await
                .map_err(err("user_grant_role"))?;
        }
        c.auth_enable().await.map_err(err("auth_enable"))?;
        Ok(())
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .call("get", |mut c| {
                let key = key.to_string();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(KeyValue::from_etcd))
    }

    /// Reads one key as JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        match self.get(key).await? {
            Some(kv) => Ok(Some(Versioned {
                value: kv.json()?,
                mod_revision: kv.mod_revision,
            })),
            None => Ok(None),
        }
    }

    /// Lists every key under `prefix` at one revision, a page at a time.
    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        let end = prefix_end(prefix.as_bytes());
        let mut listing = Listing::default();
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let revision = listing.revision;
            let resp = self
                .call("list", |mut c| {
                    let from = from.clone();
                    let end = end.clone();
                    async move {
                        let mut opts = GetOptions::new().with_range(end).with_limit(LIST_PAGE);
                        if revision > 0 {
                            opts = opts.with_revision(revision);
                        }
                        c.get(from, Some(opts)).await
                    }
                })
                .await?;
            if listing.revision == 0 {
                listing.revision = resp.header().map_or(0, |h| h.revision());
            }
            listing
                .kvs
                .extend(resp.kvs().iter().map(KeyValue::from_etcd));
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(listing),
            }
        }
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64> {
        let resp = self
            .call("revision", |mut c| async move {
                c.get("\0", Some(GetOptions::new().with_count_only())).await
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Puts raw bytes unconditionally; returns the new revision.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.commit(Write::new().put(key, value), None).await
    }

    /// Puts JSON unconditionally; returns the new revision.
    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<i64> {
        self.commit(Write::new().put_json(key, value), None).await
    }

    /// Deletes a key unconditionally; returns the new revision.
    pub async fn delete(&self, key: &str) -> Result<i64> {
        self.commit(Write::new().delete(key), None).await
    }

    /// Commits a transaction: every compare must hold and, when `fence` is given, the claim's
    /// leader key must still exist with the revision it was won at. Returns the new revision.
    ///
    /// # Errors
    /// [`StoreError::NotLeader`] when the fence fails, [`StoreError::Conflict`] when another
    /// compare fails, [`StoreError::Timeout`] when the outcome is unknown.
    pub async fn commit(&self, write: Write, fence: Option<&Claim>) -> Result<i64> {
        if let Some(e) = write.encode_error {
            return Err(e);
        }
        let mut compares = write.compares.clone();
        if let Some(claim) = fence {
            compares.push(claim.compare());
        }
        let ops = write.ops;
        let resp = self
            .call("txn", |mut c| {
                let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(revision);
        }
        if let Some(claim) = fence
            && !self.holds(claim).await?
        {
            return Err(StoreError::NotLeader {
                election: claim.election.clone(),
            });
        }
        Err(StoreError::Conflict {
            keys: write.keys.join(", "),
        })
    }

    /// Read-modify-write of one JSON document with compare-and-swap: reads `key`, lets `f` change
    /// the value (it returns whether it did), and commits only if the key is unchanged since the
    /// read, fenced by `fence`; a lost compare is retried with a fresh read, up to
    /// [`UPDATE_ATTEMPTS`] times. Returns the value as written (or as read, when `f` changed
    /// nothing), `None` when the key does not exist.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when every attempt lost its compare; any error of [`Store::commit`].
    pub async fn update_json<T, F>(
        &self,
        key: &str,
        fence: Option<&Claim>,
        mut f: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> bool,
    {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(kv) = self.get(key).await? else {
                return Ok(None);
            };
            let mut value: T = kv.json()?;
            if !f(&mut value) {
                return Ok(Some(value));
            }
            let w = Write::new()
                .put_json(key, &value)
                .if_unchanged(key, kv.mod_revision);
            match self.commit(w, fence).await {
                Ok(_) => return Ok(Some(value)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            keys: key.to_string(),
        })
    }

    /// Commits the status document `doc` at `key`, fenced, stamped `now`, unless it equals `old`
    /// (what the caller's cache holds) but for the stamp ([`Write::put_status_if_changed`]).
    /// Returns whether it wrote.
    pub async fn put_status_if_changed<T>(
        &self,
        key: &str,
        old: Option<&T>,
        doc: T,
        now: f64,
        fence: Option<&Claim>,
    ) -> Result<bool>
    where
        T: capstan_core::Stamped + Serialize + PartialEq + Clone,
    {
        let w = Write::new().put_status_if_changed(key, old, doc, now);
        if w.is_empty() {
            return Ok(false);
        }
        self.commit(w, fence).await?;
        Ok(true)
    }

    /// Waits until `key` is written after revision `after`, and returns it; `None` when `timeout`
    /// passes first. A broken watch is opened again from the same revision.
    pub async fn wait_for_put(
        &self,
        key: &str,
        after: i64,
        timeout: Duration,
    ) -> Result<Option<KeyValue>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut client = self.client();
        let opts = etcd_client::WatchOptions::new().with_start_revision(after + 1);
        let mut stream =
            client
                .watch(key, Some(opts))
                .await
                .map_err(|source| StoreError::Etcd {
                    op: "watch",
                    source,
                })?;
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => return Ok(None),
                Ok(Ok(Some(resp))) => {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == etcd_client::EventType::Put)
                    {
                        return self.get(key).await;
                    }
                }
                // The stream broke: the key may have been written meanwhile.
                Ok(Ok(None) | Err(_)) => {
                    if let Some(kv) = self.get(key).await? {
                        return Ok(Some(kv));
                    }
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                    )
                    .await;
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    stream = client
                        .watch(
                            key,
                            Some(etcd_client::WatchOptions::new().with_start_revision(after + 1)),
                        )
                        .await
                        .map_err(|source| StoreError::Etcd {
                            op: "watch",
                            source,
                        })?;
                }
            }
        }
    }

    /// Whether `claim`'s leader key still exists with the revision it was won at.
    pub async fn holds(&self, claim: &Claim) -> Result<bool> {
        let kv = self.get(&claim.key).await?;
        Ok(kv.is_some_and(|kv| kv.create_revision == claim.revision))
    }

    /// Deletes every key under `prefix`; returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64> {
        let resp = self
            .call("delete", |mut c| {
                let prefix = prefix.to_string();
                async move {
                    c.delete(
                        prefix,
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    )
                    .await
                }
            })
            .await?;
        Ok(resp.deleted())
    }

    /// Compacts history up to `revision` (tests and maintenance).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.call("compact", |mut c| async move {
            c.compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
        })
        .await?;
        Ok(())
    }
}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}

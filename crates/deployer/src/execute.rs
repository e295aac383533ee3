//! The deployer's IO: webhook calls for lifecycle hooks and the fenced transaction of one
//! reconcile — deployments, status, listener routes, consumed requests. It decides nothing: what
//! to write comes from `capstan_plan::{deploy, hooks, service}`.

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_core::ServiceStatusDoc;
use capstan_core::deployment::Deployment;
use capstan_core::keys::ServiceKey;
use capstan_core::lb::ListenerRoute;
use capstan_plan::deploy::same;
use capstan_plan::hooks::{Answer, Call};
use capstan_store::{Claim, Store, StoreError, Write};

use crate::snapshot::Caches;

/// How long one webhook call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest webhook answer read; a longer one fails the hook.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How webhooks are called: one client that follows no redirect, the signing key, and the
/// hosts hooks may be called on (any when empty).
pub struct Webhooks {
    http: reqwest::Client,
    signing_key: Option<Vec<u8>>,
    allowed_hosts: Vec<String>,
}

impl Webhooks {
    /// A client with rustls and the ring provider (installed here; a second install is a
    /// no-op), verifying against the system's roots, following no redirect.
    pub fn new(signing_key: Option<Vec<u8>>, allowed_hosts: Vec<String>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            signing_key,
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }

    fn allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.is_empty()
            || self
                .allowed_hosts
                .iter()
                .any(|a| match a.strip_prefix("*.") {
                    Some(suffix) => host
                        .strip_suffix(suffix)
                        .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                    None => *a == host,
                })
    }

    /// Calls one webhook; its answer or why the hook fails.
    pub async fn call(&self, url: &str, body: &serde_json::Value) -> Result<Answer, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("url {url:?}: only http and https are called"));
        }
        let host = parsed.host_str().unwrap_or_default();
        if !self.allowed(host) {
            return Err(format!(
                "host {host} is not one the deployer may call (--webhook-allow-host)"
            ));
        }
        let bytes = serde_json::to_vec(body).map_err(|e| format!("payload: {e}"))?;
        let mut req = self
            .http
            .post(parsed)
            .timeout(CALL_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.signing_key {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let secret = capstan_iam::webhook::hook_secret(key, url);
            req = req
                .header(capstan_iam::webhook::TIMESTAMP_HEADER, now.to_string())
                .header(
                    capstan_iam::webhook::SIGNATURE_HEADER,
                    capstan_iam::webhook::signature(&secret, now, &bytes),
                );
        }
        let mut resp = req
            .body(bytes)
            .send()
            .await
            .map_err(|e| format!("call failed: {e}"))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(format!(
                "answered HTTP {status}: redirects are not followed; give the hook its final URL"
            ));
        }
        if !status.is_success() {
            return Err(format!("answered HTTP {status}"));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(format!("answer is larger than {MAX_ANSWER_BYTES} bytes"));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer is larger than {MAX_ANSWER_BYTES} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        serde_json::from_slice::<Answer>(&answer)
            .map_err(|e| format!("answer is not a hook result: {e}"))
    }
}

/// The deployer's writer and caller.
pub struct Executor {
    /// The store.
    pub store: Store,
    /// Caches (to leave unchanged documents unwritten).
    pub caches: Caches,
    /// Webhook calls.
    pub webhooks: Webhooks,
}

impl Executor {
    /// Makes the hooks' due webhook calls, one after another; each answer (or why it failed) by
    /// hook id.
    pub async fn call_hooks(&self, calls: &[Call]) -> BTreeMap<String, Result<Answer, String>> {
        let mut out = BTreeMap::new();
        for c in calls {
            out.insert(
                c.hook_id.clone(),
                self.webhooks.call(&c.url, &c.payload).await,
            );
        }
        out
    }

    /// Adds the service's status document to `w` when it changed (ignoring `updatedAt`).
    pub fn status(&self, w: Write, key: &ServiceKey, doc: ServiceStatusDoc, now: f64) -> Write {
        let k = self.store.keys().service_status(&key.cluster, &key.service);
        let old = self
            .caches
            .status
            .get(&k)
            .and_then(|e| e.value.as_ref().ok().cloned());
        w.put_status_if_changed(&k, old.as_ref(), doc, now)
    }

    /// Adds the listener routes that differ from etcd's to `w`.
    pub fn routes(&self, mut w: Write, routes: &[(String, ListenerRoute)]) -> Write {
        for (listener, route) in routes {
            let k = self.store.keys().listener_route(listener);
            let unchanged = self
                .caches
                .routes
                .get(&k)
                .is_some_and(|e| e.value.as_ref().ok() == Some(route));
            if !unchanged {
                w = w.put_json(&k, route);
            }
        }
        w
    }

    /// Adds the deployments that differ from `originals` (with their mod revisions) to `w`,
    /// each compared: changed ones stamped `now`, new ones created, `deleted` ones removed.
    /// Returns whether any deployment is written.
    pub fn deployments(
        &self,
        mut w: Write,
        key: &ServiceKey,
        originals: &[(Deployment, i64)],
        after: &mut [Deployment],
        deleted: &[String],
        now: f64,
    ) -> (Write, bool) {
        let keys = self.store.keys();
        let mut touches = !deleted.is_empty();
        for d in after.iter_mut() {
            let k = keys.deployment(&key.cluster, &key.service, &d.id);
            match originals.iter().find(|(o, _)| o.id == d.id) {
                Some((o, _)) if same(d, o) => {}
                Some((_, rev)) => {
                    touches = true;
                    d.updated_at = Some(now);
                    w = w.put_json(&k, d).if_unchanged(&k, *rev);
                }
                None => {
                    touches = true;
                    w = w.put_json(&k, d).if_absent(&k);
                }
            }
        }
        for id in deleted {
            if let Some((_, rev)) = originals.iter().find(|(o, _)| &o.id == id) {
                let k = keys.deployment(&key.cluster, &key.service, id);
                w = w.delete(&k).if_unchanged(&k, *rev);
            }
        }
        (w, touches)
    }

    /// Commits one reconcile's writes, fenced. When they touch deployments, waits (5 s at
    /// most) for the cache to show them: the next reconcile of the service must see this write,
    /// or it would start a second deployment for the same change.
    pub async fn commit(
        &self,
        claim: &Claim,
        w: Write,
        touches_deployments: bool,
    ) -> Result<(), StoreError> {
        if w.is_empty() {
            return Ok(());
        }
        let rev = self.store.commit(w, Some(claim)).await?;
        metrics::counter!("capstan_deployer_writes_total").increment(1);
        if touches_deployments {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.caches.deployments.wait_revision(rev),
            )
            .await;
        }
        Ok(())
    }
}

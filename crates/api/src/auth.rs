//! Who is calling and whether they may: authentication (a client certificate or a bearer
//! token), the IAM decision over a watch cache of `/capstan/iam/`, and the audit record of
//! every refused or mutating call. Every RPC goes through [`Auth::admit`] first and
//! [`Auth::finish`] last.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use capstan_iam::sigv4::{self, Authorization, SigError, SignedRequest};
use capstan_iam::{Bearer, Directory, Principal, SealingKey};
use capstan_store::{Cache, Store};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::audit::{Audit, Record};
use crate::authz::{Ask, Guarded};
use crate::error::{ApiError, ApiResult, Exception};

/// How callers are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// IAM-style policies under `/capstan/iam/`; default deny.
    Iam,
    /// Anyone who reaches the API may do anything (local experiments only).
    None,
}

/// Authentication, authorization and audit flags of `capstan-api`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// How callers are authorized: `iam` (policies under /capstan/iam/, default deny) or `none`
    /// (anyone who can reach the API may do anything: for local experiments only).
    #[arg(long, env = "CAPSTAN_AUTHORIZATION", value_enum, default_value_t = Mode::Iam)]
    pub authorization: Mode,
    /// A principal allowed everything, e.g. capstan://user/operator (repeatable; comma-separated
    /// in the environment variable): the break-glass operator, whose certificate you guard.
    #[arg(long = "admin", env = "CAPSTAN_API_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,
    /// The audit log's JSON lines: a file path, `-` for stdout, or `off` (the etcd copy under
    /// /capstan/audit/ is kept either way).
    #[arg(long, env = "CAPSTAN_AUDIT_LOG", default_value = "-")]
    pub audit_log: String,
    /// The key that seals secrets at rest (access keys' secrets): 32 bytes, as 64 hex digits
    /// (`openssl rand -hex 32`) or raw; the same file on every API replica.
    #[arg(long, env = "CAPSTAN_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<std::path::PathBuf>,
}

/// Response and error metadata carrying the request id.
pub const REQUEST_ID: &str = "x-capstan-request-id";

/// Who made one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal, if the caller presented valid credentials.
    pub principal: Option<Principal>,
    /// `certificate`, `token` or `none`.
    pub authenticated_by: &'static str,
    /// Where the request came from.
    pub source: Option<SocketAddr>,
    /// This request's id.
    pub request_id: String,
}

impl Caller {
    /// Nobody (yet), calling from `source`, with a new request id.
    pub fn from(source: Option<SocketAddr>) -> Self {
        Self {
            principal: None,
            authenticated_by: "none",
            source,
            request_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn anonymous<T>(req: &Request<T>) -> Self {
        Self::from(req.remote_addr())
    }

    /// A caller whose bearer token was refused.
    fn bad_token<T>(req: &Request<T>) -> Self {
        Self {
            authenticated_by: "token",
            ..Self::anonymous(req)
        }
    }
}

/// A request allowed to proceed, and what it asked.
#[derive(Debug)]
pub struct Admitted {
    /// The caller.
    pub caller: Caller,
    /// What it asked.
    pub ask: Ask,
    reason: String,
}

struct Inner {
    mode: Mode,
    admins: Vec<Principal>,
    cache: Option<Cache<()>>,
    directory: Mutex<Option<(i64, Arc<Directory>)>>,
    audit: Audit,
    sealing: Option<Arc<SealingKey>>,
}

/// How long a request waits for the API's first load of the IAM documents before it is refused
/// with UNAVAILABLE (a client's deadline is usually longer; etcd's own elections take ~1 s).
pub const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The API's gate.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Auth {
    /// A gate over `store`'s IAM documents (watched until `cancel`), refusing to start on a bad
    /// administrator name.
    pub fn start(
        store: &Store,
        mode: Mode,
        admins: &[String],
        audit: Audit,
        sealing: Option<Arc<SealingKey>>,
        cancel: CancellationToken,
    ) -> Result<Self, capstan_iam::IamError> {
        let admins = admins
            .iter()
            .map(|a| Principal::parse(a.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let cache = (mode == Mode::Iam).then(|| {
            let (cache, _task) = Cache::spawn(
                store.clone(),
                store.keys().iam(),
                Arc::new(|_key: &str, _bytes: &[u8]| Ok(())),
                capstan_store::cache::DEFAULT_RESYNC,
                cancel,
            );
            cache
        });
        Ok(Self {
            inner: Arc::new(Inner {
                mode,
                admins,
                cache,
                directory: Mutex::new(None),
                audit,
                sealing,
            }),
        })
    }

    /// The IAM documents as of the cache's revision (rebuilt when they change).
    pub fn directory(&self) -> ApiResult<Arc<Directory>> {
        let Some(cache) = &self.inner.cache else {
            return Ok(Arc::new(Directory::load([], self.inner.admins.clone())));
        };
        if !cache.is_ready() {
            return Err(ApiError::unavailable(
                "the API is still loading its IAM documents from etcd; retry",
            ));
        }
        let revision = cache.revision();
        let mut slot = self
            .inner
            .directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((rev, d)) = slot.as_ref()
            && *rev == revision
        {
            return Ok(d.clone());
        }
        let entries = cache.list();
        let prefix = cache.prefix().to_string();
        let d = Arc::new(Directory::load(
            entries.iter().map(|e| {
                (
                    e.key.strip_prefix(&prefix).unwrap_or(&e.key),
                    e.raw.as_slice(),
                )
            }),
            self.inner.admins.clone(),
        ));
        for (key, problem) in d.problems() {
            tracing::warn!(key = %format!("{prefix}{key}"), problem = %problem, "IAM document not used");
        }
        *slot = Some((revision, d.clone()));
        Ok(d)
    }

    /// Waits (at most [`LOAD_WAIT`]) for the first load of the IAM documents, so a call that
    /// reaches a freshly started API is decided rather than refused; after the wait the check
    /// refuses with UNAVAILABLE as before.
    async fn loaded(&self) {
        if let Some(cache) = &self.inner.cache
            && !cache.is_ready()
        {
            let _ = tokio::time::timeout(LOAD_WAIT, cache.ready()).await;
        }
    }

    /// Whether policies can be decided (IAM documents loaded, or authorization off).
    pub fn is_loaded(&self) -> bool {
        self.inner.cache.as_ref().is_none_or(Cache::is_ready)
    }

    /// Whether administrators were named with `--admin` (Bootstrap is then closed).
    pub fn has_admins(&self) -> bool {
        !self.inner.admins.is_empty()
    }

    /// Waits until every IAM revision up to `revision` is in the cache (read-your-writes after
    /// an IAM change).
    pub async fn caught_up(&self, revision: i64) {
        if let Some(cache) = &self.inner.cache {
            cache.wait_revision(revision).await;
        }
    }

    /// Who made `req`: a bearer token if one is sent (it must be valid), else the client
    /// certificate, else nobody.
    pub fn identify<T>(&self, req: &Request<T>) -> ApiResult<Caller> {
        let mut caller = Caller::anonymous(req);
        if let Some(value) = req.metadata().get("authorization") {
            let text = value.to_str().unwrap_or_default();
            let bearer = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .and_then(Bearer::parse)
                .ok_or_else(|| {
                    ApiError::new(
                        Exception::UnrecognizedClient,
                        "the authorization header is not `Bearer capstan_<id>_<secret>`",
                    )
                })?;
            let principal = match self.inner.mode {
                Mode::None => None,
                Mode::Iam => Some(
                    self.directory()?
                        .authenticate(&bearer, epoch_now())
                        .cloned()
                        .ok_or_else(|| {
                            ApiError::new(
                                Exception::UnrecognizedClient,
                                format!(
                                    "the bearer token {} is unknown, revoked or expired",
                                    bearer.id
                                ),
                            )
                        })?,
                ),
            };
            caller.principal = principal;
            caller.authenticated_by = "token";
            return Ok(caller);
        }
        if let Some(certs) = req.peer_certs()
            && let Some(leaf) = certs.first()
            && let Ok(id) = capstan_pki::identity(leaf.as_ref())
        {
            caller.principal = Principal::from_certificate(&id.uris, id.common_name.as_deref());
            caller.authenticated_by = "certificate";
        }
        Ok(caller)
    }

    /// Who signed an ECS request (SigV4 with a stored access key), at `now` (epoch seconds).
    /// Unsigned requests are anonymous when `allow_unsigned`, else refused; with authorization
    /// off, anyone is anonymous and signatures are not checked.
    pub fn identify_signed(
        &self,
        req: &SignedRequest<'_>,
        source: Option<SocketAddr>,
        allow_unsigned: bool,
        service: &str,
        now: i64,
    ) -> (Caller, ApiResult<()>) {
        let mut caller = Caller::from(source);
        if self.inner.mode == Mode::None {
            return (caller, Ok(()));
        }
        let header = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str());
        let Some(header) = header else {
            if allow_unsigned {
                return (caller, Ok(()));
            }
            return (caller, Err(sig_error(SigError::Missing)));
        };
        caller.authenticated_by = "access-key";
        let auth = match Authorization::parse(header) {
            Ok(a) => a,
            Err(e) => return (caller, Err(sig_error(e))),
        };
        let dir = match self.directory() {
            Ok(d) => d,
            Err(e) => return (caller, Err(e)),
        };
        let unknown = || {
            ApiError::new(
                Exception::UnrecognizedClient,
                "The security token included in the request is invalid.",
            )
        };
        let record = match dir.access_key(&auth.access_key_id) {
            Some(Ok(r)) => r,
            Some(Err(problem)) => {
                tracing::warn!(access_key = %auth.access_key_id, %problem, "access key record cannot be used");
                return (caller, Err(unknown()));
            }
            None => return (caller, Err(unknown())),
        };
        let Some(sealing) = &self.inner.sealing else {
            return (
                caller,
                Err(ApiError::new(
                    Exception::UnrecognizedClient,
                    "this API was started without --encryption-key-file, so it cannot check access keys",
                )),
            );
        };
        let secret = match sealing.open(&record.access_key_id, &record.sealed_secret) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(access_key = %auth.access_key_id, error = %e, "access key secret does not open");
                return (caller, Err(unknown()));
            }
        };
        if let Err(e) = sigv4::verify(req, &auth, &secret, service, now) {
            return (caller, Err(sig_error(e)));
        }
        caller.principal = Some(record.principal.clone());
        (caller, Ok(()))
    }

    /// Identifies `req`'s caller and checks what it asks; a refusal is audited and returned.
    pub async fn admit<T: Guarded>(&self, req: &Request<T>) -> Result<Admitted, Status> {
        self.admit_ask(req, req.get_ref().ask()).await
    }

    /// [`Auth::admit`] with the ask given (requests shared by several actions).
    pub async fn admit_ask<T>(&self, req: &Request<T>, ask: Ask) -> Result<Admitted, Status> {
        self.loaded().await;
        let caller = match self.identify(req) {
            Ok(c) => c,
            Err(e) => {
                let caller = Caller::bad_token(req);
                return Err(with_request_id(
                    self.refuse(&caller, &ask, e, String::new()).into(),
                    &caller.request_id,
                ));
            }
        };
        let id = caller.request_id.clone();
        self.check(caller, ask)
            .await
            .map_err(|e| with_request_id(e.into(), &id))
    }

    /// Checks what an identified `caller` asks (any transport); a refusal is audited.
    pub async fn check(&self, caller: Caller, ask: Ask) -> ApiResult<Admitted> {
        self.loaded().await;
        match self.decide(&caller, &ask) {
            Ok(reason) => Ok(Admitted {
                caller,
                ask,
                reason,
            }),
            Err((e, reason)) => Err(self.refuse(&caller, &ask, e, reason)),
        }
    }

    /// Audits a refusal of `caller` before it was identified (bad credentials).
    pub fn refuse_unidentified(&self, caller: &Caller, ask: &Ask, e: ApiError) -> ApiError {
        self.refuse(caller, ask, e, String::new())
    }

    /// Admits `req` without a policy check (Bootstrap, WhoAmI): still identified and audited.
    pub async fn admit_unchecked<T: Guarded>(&self, req: &Request<T>) -> Result<Admitted, Status> {
        self.loaded().await;
        let ask = req.get_ref().ask();
        match self.identify(req) {
            Ok(caller) => Ok(Admitted {
                caller,
                ask,
                reason: "not subject to policies".into(),
            }),
            Err(e) => {
                let caller = Caller::bad_token(req);
                Err(with_request_id(
                    self.refuse(&caller, &ask, e, String::new()).into(),
                    &caller.request_id,
                ))
            }
        }
    }

    /// Allowed (with the reason) or the AccessDenied error (with the reason).
    fn decide(&self, caller: &Caller, ask: &Ask) -> Result<String, (ApiError, String)> {
        if self.inner.mode == Mode::None {
            return Ok("authorization is off (--authorization none)".into());
        }
        let dir = self.directory().map_err(|e| (e, String::new()))?;
        let all = ["*".to_string()];
        let resources = if ask.resources.is_empty() {
            &all[..]
        } else {
            &ask.resources[..]
        };
        let mut reason = String::new();
        for r in resources {
            let v = dir.authorize(caller.principal.as_ref(), ask.action, r);
            if !v.allowed() {
                return Err((
                    ApiError::new(Exception::AccessDenied, v.reason.clone()),
                    v.reason,
                ));
            }
            reason = v.reason;
        }
        Ok(reason)
    }

    fn refuse(&self, caller: &Caller, ask: &Ask, e: ApiError, reason: String) -> ApiError {
        let mut r = self.record(caller, ask, reason);
        r.outcome = "denied".into();
        r.error_code = Some(e.exception.name().to_string());
        r.error_message = Some(e.message.clone());
        self.inner.audit.record(r);
        tracing::info!(action = ask.action, principal = %r_principal(caller), error = %e, "request refused");
        e
    }

    fn record(&self, caller: &Caller, ask: &Ask, reason: String) -> Record {
        let mut r = Record::now(&caller.request_id, caller.source);
        r.principal = r_principal(caller);
        r.authenticated_by = caller.authenticated_by.to_string();
        r.action = ask.action.to_string();
        r.resources = ask.resources.clone();
        r.reason = reason;
        r
    }

    /// Audits a mutating call's outcome (any transport).
    pub fn conclude<T>(&self, admitted: &Admitted, result: &ApiResult<T>) {
        if admitted.ask.mutates {
            let mut r = self.record(&admitted.caller, &admitted.ask, admitted.reason.clone());
            match result {
                Ok(_) => r.outcome = "allowed".into(),
                Err(e) => {
                    r.outcome = "failed".into();
                    r.error_code = Some(e.exception.name().to_string());
                    r.error_message = Some(e.message.clone());
                }
            }
            self.inner.audit.record(r);
        }
        if let Err(e) = result {
            tracing::debug!(action = admitted.ask.action, error = %e, "request failed");
        }
    }

    /// Audits a mutating call's outcome and turns it into the gRPC answer.
    pub fn finish<T>(
        &self,
        admitted: Admitted,
        result: ApiResult<T>,
    ) -> Result<Response<T>, Status> {
        self.conclude(&admitted, &result);
        let id = &admitted.caller.request_id;
        match result {
            Ok(v) => {
                let mut resp = Response::new(v);
                if let Ok(id) = id.parse() {
                    resp.metadata_mut().insert(REQUEST_ID, id);
                }
                Ok(resp)
            }
            Err(e) => Err(with_request_id(e.into(), id)),
        }
    }
}

/// A SigV4 refusal as AWS names it.
fn sig_error(e: SigError) -> ApiError {
    let exception = match e {
        SigError::Missing => Exception::MissingAuthenticationToken,
        SigError::Malformed(_) => Exception::IncompleteSignature,
        SigError::Expired { .. } | SigError::NotYetCurrent { .. } | SigError::Mismatch => {
            Exception::InvalidSignature
        }
    };
    ApiError::new(exception, e.to_string())
}

fn r_principal(caller: &Caller) -> String {
    caller
        .principal
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn with_request_id(mut s: Status, id: &str) -> Status {
    if let Ok(v) = id.parse() {
        s.metadata_mut().insert(REQUEST_ID, v);
    }
    s
}

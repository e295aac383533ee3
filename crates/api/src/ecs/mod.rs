//! ECS's own wire protocol (JSON 1.1), so the aws CLI, boto3 and the AWS SDKs drive Capstan
//! with `--endpoint-url`: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Action>`
//! and a JSON body, signed with SigV4 by an access key (`capstan auth access-key create`).
//!
//! Each action is translated into the gRPC API's request and handed to the same [`Api`] method
//! under the same IAM check and audit ([`Auth::check`], [`Auth::conclude`]): one code path
//! behind both APIs. Answers are ECS's output shapes; errors are HTTP 400 (500 for the server's)
//! with `{"__type": "<Exception>", "message": …}`, as AWS's JSON protocols write them.

mod actions;
mod deployment_actions;
mod deployments;
mod logs;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use capstan_iam::sigv4::SignedRequest;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::actions::Api;
use crate::auth::{Auth, Caller};
use crate::authz::Guarded;
use crate::error::{ApiError, ApiResult, Exception};

/// The target prefix of every ECS action.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// The JSON 1.1 content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Largest request body (RegisterTaskDefinition with many containers stays far below).
const MAX_BODY: usize = 4 << 20;

/// Flags of the ECS endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct EcsArgs {
    /// Serve ECS's JSON protocol (for the aws CLI and SDKs) on this address, e.g.
    /// 127.0.0.1:7401; off when not given. TLS like the gRPC listener when --tls-cert is set.
    #[arg(long, env = "CAPSTAN_ECS_LISTEN")]
    pub ecs_listen: Option<SocketAddr>,
    /// Accept unsigned ECS requests as an anonymous caller (policies still decide; with
    /// --authorization none anyone may do anything). For local experiments only.
    #[arg(long, env = "CAPSTAN_ECS_ALLOW_UNSIGNED")]
    pub ecs_allow_unsigned: bool,
}

/// What the endpoint's handlers share.
#[derive(Clone)]
pub struct Endpoint {
    api: Api,
    auth: Auth,
    allow_unsigned: bool,
}

/// Who made one request, or why they could not be identified (audited once the action's ask
/// is known).
type Who = (Caller, ApiResult<()>);

impl Endpoint {
    /// An endpoint over `api`, admitting callers with `auth`.
    pub fn new(api: Api, auth: Auth, allow_unsigned: bool) -> Self {
        Self {
            api,
            auth,
            allow_unsigned,
        }
    }

    /// Checks `who` may make `req`, makes it with `call`, and audits the outcome.
    async fn guarded<R: Guarded, T>(
        &self,
        who: &Who,
        req: R,
        call: impl AsyncFnOnce(&Api, R) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let ask = req.ask();
        self.guarded_ask(who, ask, req, call).await
    }

    /// [`Endpoint::guarded`] with the ask given (requests shared by several actions).
    async fn guarded_ask<R, T>(
        &self,
        who: &Who,
        ask: crate::authz::Ask,
        req: R,
        call: impl AsyncFnOnce(&Api, R) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let caller = match who {
            (c, Ok(())) => c.clone(),
            (c, Err(e)) => return Err(self.auth.refuse_unidentified(c, &ask, e.clone())),
        };
        let admitted = self.auth.check(caller, ask).await?;
        let r = call(&self.api, req).await;
        self.auth.conclude(&admitted, &r);
        r
    }
}

/// Serves the endpoint on `listener` (TLS with `tls`) until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<capstan_proto::tls::TlsFiles>,
    endpoint: Endpoint,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(endpoint));
    let app = app.into_make_service_with_connect_info::<Peer>();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
        Some(files) => {
            let listener = tls::TlsListener::new(listener, &files)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
    }
}

/// The caller's address, over plain TCP or TLS.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

impl Connected<IncomingStream<'_, tls::TlsListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, tls::TlsListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn handle(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(Peer(source)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body: &body,
    };
    // CloudWatch Logs requests are signed for the service `logs`, ECS's for `ecs`.
    let service = match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some(t) if t.starts_with(logs::TARGET_PREFIX) => "logs",
        _ => "ecs",
    };
    let who = endpoint.auth.identify_signed(
        &signed,
        Some(source),
        endpoint.allow_unsigned,
        service,
        epoch_now(),
    );
    let request_id = who.0.request_id.clone();
    let result = answer(&endpoint, &who, &method, &headers, &body).await;
    let (status, value) = match result {
        Ok(v) => (200, v),
        Err(e) => e.ecs_answer(),
    };
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        value.to_string(),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

async fn answer(
    endpoint: &Endpoint,
    who: &Who,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Value> {
    if method != Method::POST {
        return Err(ApiError::new(
            Exception::UnknownOperation,
            "the ECS endpoint takes POST / with an X-Amz-Target header",
        ));
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(action) = target.strip_prefix(logs::TARGET_PREFIX) {
        let input = parse_body(body)?;
        return logs::dispatch(endpoint, who, action, &input).await;
    }
    let Some(action) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(ApiError::new(
            Exception::UnknownOperation,
            format!("X-Amz-Target {target:?} is not {TARGET_PREFIX}<Action>"),
        ));
    };
    let input = parse_body(body)?;
    actions::dispatch(endpoint, who, action, &input).await
}

/// The body as a JSON object (`{}` when empty).
fn parse_body(body: &[u8]) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            Exception::Serialization,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            Exception::Serialization,
            format!("the request body is not JSON: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_objects_or_empty() {
        assert_eq!(parse_body(b"").expect("empty"), Map::new());
        assert_eq!(parse_body(b" \n").expect("blank"), Map::new());
        assert_eq!(parse_body(b"{\"a\":1}").expect("object").len(), 1);
        for bad in [&b"[1]"[..], b"{", b"null"] {
            assert_eq!(
                parse_body(bad).map_err(|e| e.exception),
                Err(Exception::Serialization)
            );
        }
    }
}

//! Client credentials: a bearer token sent with every call (the API's other way in besides a
//! client certificate).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::api::v1::capstan_client::CapstanClient;
use crate::api::v1::iam_client::IamClient;

/// Adds `authorization: Bearer <token>` to every request when it has a token.
#[derive(Debug, Clone, Default)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

/// Why a token cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("the token holds characters a header cannot carry")]
pub struct BadToken;

impl Credentials {
    /// Credentials sending `token` (none when `None` or empty).
    pub fn bearer(token: Option<&str>) -> Result<Self, BadToken> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Self(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| BadToken),
        }
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client of the Capstan API that sends credentials.
pub type ApiClient = CapstanClient<InterceptedService<Channel, Credentials>>;

/// A client of the Iam service that sends credentials.
pub type IamApiClient = IamClient<InterceptedService<Channel, Credentials>>;

/// Both clients over one channel.
pub fn clients(channel: Channel, creds: Credentials) -> (ApiClient, IamApiClient) {
    (
        CapstanClient::with_interceptor(channel.clone(), creds.clone()),
        IamClient::with_interceptor(channel, creds),
    )
}

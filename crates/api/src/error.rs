//! API errors: ECS's exception names, mapped to gRPC codes.

use capstan_core::DocumentError;
use capstan_store::StoreError;
use tonic::{Code, Status};

/// ECS's exception names (and ELBv2's for target groups and listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    /// A parameter is missing, malformed or out of range.
    InvalidParameter,
    /// The request names something that cannot be used (ECS's catch-all client error).
    Client,
    /// No such cluster.
    ClusterNotFound,
    /// No such service.
    ServiceNotFound,
    /// The service is DRAINING or INACTIVE.
    ServiceNotActive,
    /// DeleteCluster on a cluster with services.
    ClusterContainsServices,
    /// DeleteCluster on a cluster with registered instances.
    ClusterContainsContainerInstances,
    /// DeleteCluster on a cluster with running tasks.
    ClusterContainsTasks,
    /// No such target group.
    TargetGroupNotFound,
    /// No such listener.
    ListenerNotFound,
    /// Another listener already uses the port.
    DuplicateListener,
    /// The name is taken.
    ResourceInUse,
    /// No such deployment or other resource.
    ResourceNotFound,
    /// The caller may not do this (IAM's AccessDeniedException).
    AccessDenied,
    /// The caller's credentials are not valid (a bearer token unknown, revoked or expired).
    UnrecognizedClient,
    /// The store could not be reached or failed.
    Server,
}

impl Exception {
    /// ECS's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Exception::InvalidParameter => "InvalidParameterException",
            Exception::Client => "ClientException",
            Exception::ClusterNotFound => "ClusterNotFoundException",
            Exception::ServiceNotFound => "ServiceNotFoundException",
            Exception::ServiceNotActive => "ServiceNotActiveException",
            Exception::ClusterContainsServices => "ClusterContainsServicesException",
            Exception::ClusterContainsContainerInstances => {
                "ClusterContainsContainerInstancesException"
            }
            Exception::ClusterContainsTasks => "ClusterContainsTasksException",
            Exception::TargetGroupNotFound => "TargetGroupNotFoundException",
            Exception::ListenerNotFound => "ListenerNotFoundException",
            Exception::DuplicateListener => "DuplicateListenerException",
            Exception::ResourceInUse => "ResourceInUseException",
            Exception::ResourceNotFound => "ResourceNotFoundException",
            Exception::AccessDenied => "AccessDeniedException",
            Exception::UnrecognizedClient => "UnrecognizedClientException",
            Exception::Server => "ServerException",
        }
    }

    fn code(self) -> Code {
        match self {
            Exception::InvalidParameter | Exception::Client => Code::InvalidArgument,
            Exception::ClusterNotFound
            | Exception::ServiceNotFound
            | Exception::TargetGroupNotFound
            | Exception::ListenerNotFound
            | Exception::ResourceNotFound => Code::NotFound,
            Exception::DuplicateListener => Code::AlreadyExists,
            Exception::ServiceNotActive
            | Exception::ClusterContainsServices
            | Exception::ClusterContainsContainerInstances
            | Exception::ClusterContainsTasks
            | Exception::ResourceInUse => Code::FailedPrecondition,
            Exception::AccessDenied => Code::PermissionDenied,
            Exception::UnrecognizedClient => Code::Unauthenticated,
            Exception::Server => Code::Internal,
        }
    }
}

/// An API error: which exception and a message that says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", exception.name())]
pub struct ApiError {
    /// The exception.
    pub exception: Exception,
    /// What went wrong and how to fix it.
    pub message: String,
    /// gRPC code override (UNAVAILABLE when etcd cannot be reached).
    code: Option<Code>,
}

/// Result with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error of `exception` saying `message`.
    pub fn new(exception: Exception, message: impl Into<String>) -> Self {
        Self {
            exception,
            message: message.into(),
            code: None,
        }
    }

    /// `InvalidParameterException`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Exception::InvalidParameter, message)
    }

    /// `ClusterNotFoundException` for `cluster`.
    pub fn cluster_not_found(cluster: &str) -> Self {
        Self::new(
            Exception::ClusterNotFound,
            format!("Cluster not found: {cluster}. Create it with CreateCluster first."),
        )
    }

    /// `ServiceNotFoundException` for `service`.
    pub fn service_not_found(cluster: &str, service: &str) -> Self {
        Self::new(
            Exception::ServiceNotFound,
            format!("Service not found: {service} in cluster {cluster}."),
        )
    }

    /// `ServerException` sent as UNAVAILABLE: retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            exception: Exception::Server,
            message: message.into(),
            code: Some(Code::Unavailable),
        }
    }

    /// The gRPC code this error is sent with.
    pub fn code(&self) -> Code {
        self.code.unwrap_or_else(|| self.exception.code())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let mut s = Status::new(e.code(), e.to_string());
        if let Ok(v) = e.exception.name().parse() {
            s.metadata_mut().insert("capstan-exception", v);
        }
        s
    }
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Connect { .. } | StoreError::Timeout { .. } => Some(Code::Unavailable),
            StoreError::Etcd { .. } => Some(Code::Unavailable),
            StoreError::Conflict { .. } => Some(Code::Aborted),
            _ => None,
        };
        Self {
            exception: Exception::Server,
            message: e.to_string(),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_exception_name_and_code() {
        let s: Status = ApiError::cluster_not_found("prod").into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().starts_with("ClusterNotFoundException: "));
        assert_eq!(
            s.metadata()
                .get("capstan-exception")
                .and_then(|v| v.to_str().ok()),
            Some("ClusterNotFoundException")
        );
        let s: Status = ApiError::new(Exception::ServiceNotActive, "x").into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s: Status = ApiError::invalid("x").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = ApiError::new(Exception::AccessDenied, "x").into();
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().starts_with("AccessDeniedException: "));
        let s: Status = ApiError::new(Exception::UnrecognizedClient, "x").into();
        assert_eq!(s.code(), Code::Unauthenticated);
        let s: Status = ApiError::from(StoreError::Timeout {
            op: "get",
            after: std::time::Duration::from_secs(1),
        })
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().starts_with("ServerException: "));
    }
}

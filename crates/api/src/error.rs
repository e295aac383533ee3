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
    /// No such service deployment, or none in progress.
    ServiceDeploymentNotFound,
    /// The caller may not do this (IAM's AccessDeniedException).
    AccessDenied,
    /// The caller's credentials are not valid (a bearer token unknown, revoked or expired).
    UnrecognizedClient,
    /// A SigV4 signature does not match, or the request is too old or too new.
    InvalidSignature,
    /// A SigV4 Authorization header is malformed or leaves out what must be signed.
    IncompleteSignature,
    /// An ECS endpoint request carries no signature.
    MissingAuthenticationToken,
    /// An ECS endpoint request names an action Capstan does not serve.
    UnknownOperation,
    /// An ECS endpoint request's body is not the JSON the action takes.
    Serialization,
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
            Exception::ServiceDeploymentNotFound => "ServiceDeploymentNotFoundException",
            Exception::AccessDenied => "AccessDeniedException",
            Exception::UnrecognizedClient => "UnrecognizedClientException",
            Exception::InvalidSignature => "InvalidSignatureException",
            Exception::IncompleteSignature => "IncompleteSignatureException",
            Exception::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Exception::UnknownOperation => "UnknownOperationException",
            Exception::Serialization => "SerializationException",
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
            | Exception::ResourceNotFound
            | Exception::ServiceDeploymentNotFound => Code::NotFound,
            Exception::DuplicateListener => Code::AlreadyExists,
            Exception::ServiceNotActive
            | Exception::ClusterContainsServices
            | Exception::ClusterContainsContainerInstances
            | Exception::ClusterContainsTasks
            | Exception::ResourceInUse => Code::FailedPrecondition,
            Exception::AccessDenied => Code::PermissionDenied,
            Exception::UnrecognizedClient
            | Exception::InvalidSignature
            | Exception::IncompleteSignature
            | Exception::MissingAuthenticationToken => Code::Unauthenticated,
            Exception::UnknownOperation => Code::Unimplemented,
            Exception::Serialization => Code::InvalidArgument,
            Exception::Server => Code::Internal,
        }
    }

    /// The HTTP status the ECS endpoint answers with (AWS's JSON protocols: 400 for the
    /// caller's errors, 403 for missing credentials, 500 for the server's).
    pub fn http_status(self) -> u16 {
        match self {
            Exception::Server => 500,
            Exception::MissingAuthenticationToken => 403,
            _ => 400,
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

impl ApiError {
    /// The ECS endpoint's answer: the HTTP status and `{"__type", "message"}` as AWS's JSON 1.1
    /// protocol writes errors (clients read `__type`, after any `namespace#`).
    pub fn ecs_answer(&self) -> (u16, serde_json::Value) {
        (
            self.exception.http_status(),
            serde_json::json!({"__type": self.exception.name(), "message": self.message}),
        )
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
    fn the_ecs_endpoint_answers_errors_as_aws_json_protocols_do() {
        let (status, body) = ApiError::cluster_not_found("prod").ecs_answer();
        assert_eq!(status, 400);
        assert_eq!(body["__type"], "ClusterNotFoundException");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("prod")));
        assert_eq!(ApiError::new(Exception::Server, "x").ecs_answer().0, 500);
        assert_eq!(
            ApiError::new(Exception::MissingAuthenticationToken, "x")
                .ecs_answer()
                .0,
            403
        );
        assert_eq!(
            ApiError::new(Exception::InvalidSignature, "x").code(),
            Code::Unauthenticated
        );
    }

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
        let s: Status = ApiError::new(Exception::ServiceDeploymentNotFound, "x").into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(
            s.message()
                .starts_with("ServiceDeploymentNotFoundException: ")
        );
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

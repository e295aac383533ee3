//! Store errors.

use std::time::Duration;

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No endpoint could be reached.
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd call failed.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// Which call.
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd call did not answer in time; a write's outcome is unknown, so re-read before acting.
    #[error("etcd {op} timed out after {after:?}; its outcome is unknown")]
    Timeout {
        /// Which call.
        op: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// A stored value does not decode.
    #[error("{key}: {message}")]
    Decode {
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode value for {key}: {source}")]
    Encode {
        /// The key.
        key: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The etcd password file cannot be read.
    #[error("etcd password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// etcd auth is on already (setup is done once).
    #[error(
        "etcd auth is on already: roles are set up once (change them with etcdctl role/user, as root)"
    )]
    AuthAlreadyOn,
    /// A compare in a transaction failed: someone else wrote first. Re-read and retry.
    #[error("conflict: a key changed since it was read ({keys})")]
    Conflict {
        /// Keys the transaction compared.
        keys: String,
    },
    /// The fenced write was refused because this process no longer leads.
    #[error("not the leader of {election}: fenced write refused")]
    NotLeader {
        /// Election name.
        election: String,
    },
    /// TLS files could not be read.
    #[error("etcd TLS: cannot read {path}: {source}")]
    Tls {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. } | StoreError::Etcd { .. } | StoreError::Timeout { .. }
        )
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Connect { .. } => "connect",
            StoreError::Etcd { .. } => "etcd",
            StoreError::Timeout { .. } => "timeout",
            StoreError::Decode { .. } => "decode",
            StoreError::Encode { .. } => "encode",
            StoreError::Conflict { .. } => "conflict",
            StoreError::NotLeader { .. } => "not_leader",
            StoreError::Tls { .. } => "tls",
            StoreError::AuthAlreadyOn => "auth_already_on",
            StoreError::PasswordFile { .. } => "password_file",
        }
    }
}

/// Whether an etcd error means the request did not get through (a member is down or unreachable),
/// so the same call can be sent again, possibly to another member.
pub(crate) fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable
                || (s.code() == tonic::Code::Unknown && s.message().contains("transport"))
                // The connection to a member closed under the call (the member was stopped):
                // cancelled by the client's transport, not by etcd.
                || (s.code() == tonic::Code::Cancelled && std::error::Error::source(s).is_some())
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_cut_by_a_closed_connection_is_sent_again_and_an_answer_of_etcd_is_not() {
        let mut closed = tonic::Status::cancelled("operation was canceled");
        closed.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection closed",
        )));
        assert!(is_unavailable(&etcd_client::Error::GRpcStatus(closed)));
        assert!(is_unavailable(&etcd_client::Error::GRpcStatus(
            tonic::Status::unavailable("member down")
        )));
        for answered in [
            tonic::Status::cancelled("context canceled"),
            tonic::Status::invalid_argument("bad"),
            tonic::Status::permission_denied("no"),
        ] {
            assert!(!is_unavailable(&etcd_client::Error::GRpcStatus(answered)));
        }
    }
}

//! Capstan's gRPC services, generated from `proto/` by tonic-prost-build, and conversions between
//! their messages and `capstan-core` types (kept here so core stays free of protobuf).

/// `capstan.agent.v1`: control plane <-> node agent.
pub mod agent {
    /// Version 1 (generated code).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("capstan.agent.v1");
    }
}

/// `capstan.v1`: the public API.
pub mod api {
    /// Version 1 (generated code).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("capstan.v1");
    }
}

/// `capstan.nodegroup.v1`: node-group providers.
pub mod nodegroup {
    /// Version 1 (generated code).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("capstan.nodegroup.v1");
    }
}

/// Encoded file descriptor set of every Capstan proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("capstan_descriptor");

pub mod auth;
pub mod convert;
pub mod tls;

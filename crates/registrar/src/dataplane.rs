//! The data plane the registrar drives, behind a trait so that other load balancers can follow
//! HAProxy (`haproxy.rs`, the one shipped): Envoy over xDS, a cloud load balancer's API, …

use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;

pub use crate::haproxy::{DataPlaneError, Layout, Member};

/// A load balancer the registrar programs.
pub trait DataPlane: Send + Sync {
    /// Serves `layout` (listeners and target groups) with listeners routed per `routes`
    /// (listener → backend). Returns whether it (re)started or reloaded, so that every group's
    /// targets must be set again.
    fn ensure<'a>(
        &'a self,
        layout: &'a Layout,
        routes: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<bool, DataPlaneError>>;

    /// Points listener `listener` at `backend`, without a reload.
    fn route<'a>(
        &'a self,
        listener: &'a str,
        backend: &'a str,
    ) -> BoxFuture<'a, Result<(), DataPlaneError>>;

    /// Makes backend `backend` (a group's, or a weighted listener's) hold `members` (healthy
    /// ones in traffic at their weight, draining ones draining, others out), without a reload;
    /// returns in-flight sessions per member.
    fn sync_backend<'a>(
        &'a self,
        backend: &'a str,
        members: &'a [Member],
    ) -> BoxFuture<'a, Result<HashMap<String, u32>, DataPlaneError>>;

    /// Stops serving (leadership lost).
    fn stop(&self) -> BoxFuture<'_, ()>;
}

impl DataPlane for crate::haproxy::Haproxy {
    fn ensure<'a>(
        &'a self,
        layout: &'a Layout,
        routes: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<bool, DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::ensure(self, layout, routes))
    }

    fn route<'a>(
        &'a self,
        listener: &'a str,
        backend: &'a str,
    ) -> BoxFuture<'a, Result<(), DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::route(self, listener, backend))
    }

    fn sync_backend<'a>(
        &'a self,
        backend: &'a str,
        members: &'a [Member],
    ) -> BoxFuture<'a, Result<HashMap<String, u32>, DataPlaneError>> {
        Box::pin(crate::haproxy::Haproxy::sync_backend(
            self, backend, members,
        ))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(crate::haproxy::Haproxy::stop(self))
    }
}

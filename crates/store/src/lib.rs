//! etcd access for Capstan.
//!
//! - [`Store`]: typed get/list/put/delete, and [`Write`] transactions with optimistic
//!   concurrency (`mod_revision` compares) committed with [`Store::commit`], optionally fenced by
//!   a leader [`Claim`];
//! - [`Cache`]: a watch cache per key family (list at R, watch from R+1, relist after compaction,
//!   periodic resync, readiness, changes in revision order);
//! - [`campaign`]: leader election with a lease; the [`Claim`]'s revision is the fencing token.

pub mod cache;
pub mod client;
pub mod election;
pub mod error;
pub mod lease;

pub use cache::{Cache, CacheStats, Change, Decoder, Entry, json_decoder};
pub use client::{EtcdTls, KeyValue, Listing, Store, StoreConfig, Versioned, Write};
pub use election::{Candidate, Claim, Leadership, campaign};
pub use error::{Result, StoreError};
pub use lease::KeptLease;

//! Serving Envoy: the snapshot of resources per Envoy role, the cache that publishes them
//! through `tokio::sync::watch`, and the ADS gRPC service in both protocols (state of the
//! world in [`ads`], delta in [`delta`]). The gRPC code sees only the [`SnapshotSource`]
//! trait: it never imports NATS or the actor.
pub mod ads;
pub mod cache;
pub(crate) mod canonical;
pub mod chunked;
pub mod delta;
mod session;
pub mod snapshot;
pub mod stats;
pub mod tables;
pub mod vhds;

pub use cache::{SnapshotCache, SnapshotSource};
pub use snapshot::Snapshot;

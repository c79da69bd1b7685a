//! Serving Envoy: the snapshot of resources per Envoy role, the cache that publishes them
//! through `tokio::sync::watch`, and the ADS gRPC service. The gRPC code sees only the
//! [`SnapshotSource`] trait: it never imports NATS or the actor.
pub mod ads;
pub mod cache;
mod canonical;
pub mod snapshot;

pub use cache::{SnapshotCache, SnapshotSource};
pub use snapshot::Snapshot;

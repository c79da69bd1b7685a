//! Counters of the xDS server, shared by both ADS protocols (state of the world and delta):
//! a response is a response, an ACK an ACK, whichever protocol carried it.
use std::sync::atomic::{AtomicU64, Ordering};

use super::snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST};

/// Counters of the xDS server.
#[derive(Debug, Default)]
pub struct XdsStats {
    pub streams_open: AtomicU64,
    pub responses: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    /// Per resource type: `by_type[i]` counts [`XDS_TYPES`]`[i]`, the last slot every other
    /// type_url (what Envoy names is outside input: it does not pick metric labels).
    pub by_type: [TypeStats; XDS_TYPES.len() + 1],
}

/// The resource types counted apart in [`XdsStats::by_type`].
pub const XDS_TYPES: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST];

/// Counters of one resource type.
#[derive(Debug, Default)]
pub struct TypeStats {
    pub responses: AtomicU64,
    /// Encoded bytes of the responses sent (what one change costs on the wire).
    pub response_bytes: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
}

impl XdsStats {
    /// The counters of `type_url`.
    pub fn of(&self, type_url: &str) -> &TypeStats {
        let i = XDS_TYPES.iter().position(|t| *t == type_url).unwrap_or(XDS_TYPES.len());
        &self.by_type[i]
    }

    /// (type_url label, counters) for every slot of [`XdsStats::by_type`].
    pub fn types(&self) -> impl Iterator<Item = (&'static str, &TypeStats)> {
        XDS_TYPES.iter().copied().chain(["other"]).zip(self.by_type.iter())
    }

    /// One response of `type_url`, `bytes` long encoded, sent.
    pub fn count_response(&self, type_url: &str, bytes: usize) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        let of = self.of(type_url);
        of.responses.fetch_add(1, Ordering::Relaxed);
        of.response_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// One response of `type_url` accepted by Envoy.
    pub fn count_ack(&self, type_url: &str) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.of(type_url).acks.fetch_add(1, Ordering::Relaxed);
    }

    /// One response of `type_url` rejected by Envoy.
    pub fn count_nack(&self, type_url: &str) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
        self.of(type_url).nacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream open until the returned guard drops (however the stream ends).
    pub fn stream_opened(self: &std::sync::Arc<Self>) -> OpenStream {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }
}

/// An open ADS stream, counted in [`XdsStats::streams_open`] while it lives.
pub struct OpenStream(std::sync::Arc<XdsStats>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

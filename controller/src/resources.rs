//! What a translation produces and a snapshot is made of: a leaf, so that `translate` (which
//! builds snapshots from cached bytes) and `xds` (which serves them) do not depend on each
//! other both ways.
use std::collections::BTreeSet;

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    },
    extensions::transport_sockets::tls::v3::Secret,
};

/// Envoy resources for one Proxy, each list sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvoyResources {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// The certificates of HTTPS listeners (SDS), by name; served to Envoy only.
    pub secrets: Vec<Secret>,
    /// KV keys (`<ns>.<name>`) of the Upstreams these resources use: a change to one of
    /// them re-translates this Proxy.
    pub upstream_keys: BTreeSet<String>,
}

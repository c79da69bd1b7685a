//! Proxy + Upstreams → Envoy resources: a pure function of its inputs. Each Proxy listener
//! becomes an Envoy Listener whose HTTP connection manager loads its RouteConfiguration (of
//! the same name) over ADS; each Upstream a route names becomes one Cluster (EDS for kube
//! upstreams, so an endpoint change touches only its ClusterLoadAssignment).
//!
//! [`translate`] makes everything afresh; [`cache::IncrementalTranslator`] reuses the
//! virtual hosts and clusters that did not change. Both assemble the same parts the same
//! way (`assemble`), so they give the same resources.
mod assemble;
pub mod cache;
mod clusters;
pub mod filters;
mod grpc_json;
mod listeners;
pub mod proxy_tls;
pub mod re2;
mod route_features;
mod routes;
pub mod small;
mod upstream_tls;
pub mod wasm;

use std::collections::BTreeMap;

use kgw_proto::v1 as pb;
pub use routes::{VirtualHostInputs, VirtualHostTranslation, route_table_head};

/// Cluster Envoy sends access logs to (gRPC ALS of the access-log process): the first
/// replica's; the others' are `kgw-access-log-<i>` ([`access_log_cluster_name`]).
pub const ACCESS_LOG_CLUSTER: &str = "kgw-access-log";
/// Name no cluster ever has: routes to unresolvable backends point here and Envoy answers
/// 500 (cluster_not_found_response_code).
pub const INVALID_BACKEND_CLUSTER: &str = "kgw-invalid-backend";

/// Settings of the translation that come from the controller's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// host:port of each access-log sink replica; empty: no access log. Envoy sends every
    /// entry to every replica (one access logger and one cluster each), so a replica that
    /// goes down loses nothing: the replicas store each entry once (see access-log).
    pub access_log_addresses: Vec<String>,
    /// What the WASM cache holds (changes at run time, as modules are fetched).
    pub wasm: wasm::WasmModules,
    /// With mTLS: Envoy reaches the sink and the WASM cache with its client certificate.
    pub proxy_tls: Option<proxy_tls::ProxyTls>,
    /// The TLS Secrets read from the config source (changes at run time), for HTTPS listeners.
    pub secrets: crate::secrets::TlsSecrets,
}

pub use crate::resources::EnvoyResources;

pub use crate::problem::{Problem, Severity};

/// The cluster of access-log sink replica `i` (0-based): `kgw-access-log`, then
/// `kgw-access-log-1`, ... (so going from one replica to more only adds clusters).
pub fn access_log_cluster_name(i: usize) -> String {
    match i {
        0 => ACCESS_LOG_CLUSTER.to_string(),
        i => format!("{ACCESS_LOG_CLUSTER}-{i}"),
    }
}

/// The Envoy cluster name of an Upstream: `<name>_<namespace>`, as Gloo names them.
pub fn cluster_name(upstream: &pb::ResourceRef) -> String {
    if upstream.kind != "Upstream" {
        return INVALID_BACKEND_CLUSTER.to_string();
    }
    format!("{}_{}", upstream.name, upstream.namespace)
}

/// Translates one Proxy. `upstreams` maps KV key (`<ns>.<name>`) → Upstream.
pub fn translate(
    proxy: &pb::Proxy,
    upstreams: &BTreeMap<String, pb::Upstream>,
    settings: &Settings,
) -> (EnvoyResources, Vec<Problem>) {
    assemble::assemble(proxy, upstreams, settings, &mut assemble::FreshParts).into_resources()
}

/// The problems [`translate`] finds, without keeping what it makes: each virtual host's
/// Envoy form is dropped once translated, so a whole Proxy's check (validation) costs about
/// one virtual host's memory on top of the Proxy's, not a second copy of its route tables.
pub fn problems(proxy: &pb::Proxy, upstreams: &BTreeMap<String, pb::Upstream>, settings: &Settings) -> Vec<Problem> {
    assemble::assemble(proxy, upstreams, settings, &mut assemble::ProblemsOnly).problems
}

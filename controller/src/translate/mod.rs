//! Proxy + Upstreams → Envoy resources: a pure function of its inputs. Each Proxy listener
//! becomes an Envoy Listener whose HTTP connection manager loads its RouteConfiguration (of
//! the same name) over ADS; each Upstream a route names becomes one Cluster (EDS for kube
//! upstreams, so an endpoint change touches only its ClusterLoadAssignment).
mod clusters;
mod listeners;
pub mod re2;
mod routes;
pub mod wasm;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener, route::v3::RouteConfiguration,
};
use kgw_proto::v1 as pb;

/// Cluster Envoy sends access logs to (gRPC ALS of the access-log process).
pub const ACCESS_LOG_CLUSTER: &str = "kgw-access-log";
/// Name no cluster ever has: routes to unresolvable backends point here and Envoy answers
/// 500 (cluster_not_found_response_code).
pub const INVALID_BACKEND_CLUSTER: &str = "kgw-invalid-backend";

/// Settings of the translation that come from the controller's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// host:port of the access-log gRPC sink; empty: no access log.
    pub access_log_address: String,
    /// What the WASM cache holds (changes at run time, as modules are fetched).
    pub wasm: wasm::WasmModules,
}

/// Envoy resources for one Proxy, each list sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvoyResources {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
}

/// Something the translation could not do as asked; reported to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// Where in the Proxy, e.g. `listener/listener~8080/vhost/x/route/y`.
    pub path: String,
    pub source: Option<pb::ResourceRef>,
    pub message: String,
}

impl Problem {
    /// The report form, as published to the gateway and answered by validation.
    pub fn to_proto(self) -> pb::Problem {
        pb::Problem {
            severity: match self.severity {
                Severity::Error => pb::problem::Severity::Error,
                Severity::Warning => pb::problem::Severity::Warning,
            } as i32,
            path: self.path,
            source: self.source,
            message: self.message,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
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
    let mut problems = Vec::new();
    let mut out = EnvoyResources::default();
    let mut referenced = BTreeMap::new();
    let mut uses_wasm = false;
    for listener in &proxy.listeners {
        let Some(pb::listener::ListenerType::HttpListener(http)) = &listener.listener_type else {
            problems.push(Problem {
                severity: Severity::Error,
                path: format!("listener/{}", listener.name),
                source: listener.sources.first().cloned(),
                message: "listener has no type".into(),
            });
            continue;
        };
        let mut wasm_use = routes::WasmUse {
            modules: &settings.wasm,
            used: BTreeMap::new(),
        };
        out.routes.push(routes::route_configuration(
            &listener.name,
            http,
            upstreams,
            &mut referenced,
            &mut wasm_use,
            &mut problems,
        ));
        let wasm_filters: Vec<_> = wasm_use
            .used
            .values()
            .map(|f| wasm::http_filter(f, &settings.wasm))
            .collect();
        uses_wasm |= !wasm_filters.is_empty();
        out.listeners
            .push(listeners::http_listener(listener, settings, wasm_filters));
    }
    for (name, upstream) in referenced {
        let (cluster, endpoints) = clusters::cluster(&name, upstream);
        out.clusters.push(cluster);
        out.endpoints.extend(endpoints);
    }
    if !settings.access_log_address.is_empty() {
        out.clusters
            .push(clusters::access_log_cluster(&settings.access_log_address));
    }
    if uses_wasm {
        let cache = &settings.wasm.cache_address;
        out.clusters
            .push(clusters::static_http_cluster(wasm::WASM_CACHE_CLUSTER, cache, false));
    }
    out.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    out.routes.sort_by(|a, b| a.name.cmp(&b.name));
    out.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    out.endpoints.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    (out, problems)
}

//! proxy-wasm filters: which module each route runs, given what the WASM cache holds.
//! A listener's connection manager carries every module its routes use; each route that
//! does not use one disables it through `typed_per_filter_config`.
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{AsyncDataSource, HttpUri, RemoteDataSource, async_data_source},
        config::route::v3::FilterConfig,
        extensions::{
            filters::{http::wasm::v3::Wasm, network::http_connection_manager::v3::HttpFilter},
            wasm::v3::{FailurePolicy, PluginConfig, VmConfig, plugin_config},
        },
    },
    google::protobuf::{Any, Duration, StringValue},
};
use envoy_types::util::pack_any;
use kgw_proto::v1 as pb;

use super::{Problem, Severity};

/// Cluster Envoy fetches modules from: the controller's WASM cache (9979).
pub const WASM_CACHE_CLUSTER: &str = "kgw-wasm-cache";

/// What the WASM cache holds: an input of the translation like the Upstreams are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WasmModules {
    /// host:port Envoy fetches cached modules from; empty: no cache, WASM filters refused.
    pub cache_address: String,
    /// Digests of modules fetched and verified.
    pub verified: BTreeSet<String>,
    /// Digest → why its module was refused (fetch failed, digest mismatch).
    pub refused: BTreeMap<String, String>,
    /// Filter name → the last filter config whose module was verified.
    pub last_good: BTreeMap<String, pb::WasmFilter>,
}

/// The Envoy filter name of a WASM filter.
pub fn filter_name(filter: &pb::WasmFilter) -> String {
    format!("kgw.wasm.{}", filter.name)
}

/// What a route's WASM filters come to.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// The filters the route runs.
    pub run: Vec<pb::WasmFilter>,
    /// Set when a filter that fails closed cannot run: the route answers 503 instead of
    /// serving without it. Names the filter.
    pub closed: Option<String>,
}

/// The module each requested filter runs: the requested one when verified, else the last
/// good module under that name (reported as an error: the route keeps its last good
/// config), else none: a filter that fails open is left out, one that fails closed (the
/// default) closes the route (both reported).
pub fn resolve(
    requested: &[pb::WasmFilter],
    modules: &WasmModules,
    path: &str,
    source: &Option<pb::ResourceRef>,
    problems: &mut Vec<Problem>,
) -> Resolved {
    let mut out = Resolved::default();
    for filter in requested {
        if modules.verified.contains(&filter.sha256) && !modules.cache_address.is_empty() {
            out.run.push(filter.clone());
            continue;
        }
        let (severity, why) = if modules.cache_address.is_empty() {
            (Severity::Error, "the controller has no WASM cache address".to_string())
        } else {
            match modules.refused.get(&filter.sha256) {
                Some(reason) => (Severity::Error, format!("module refused: {reason}")),
                None => (Severity::Warning, "module not fetched yet".to_string()),
            }
        };
        let fallback = modules
            .last_good
            .get(&filter.name)
            .filter(|f| modules.verified.contains(&f.sha256));
        let message = match fallback {
            Some(good) => {
                out.run.push(good.clone());
                format!(
                    "WASM filter {} (sha256 {}): {why}; the route keeps the last good module (sha256 {})",
                    filter.name, filter.sha256, good.sha256
                )
            }
            None if filter.fail_open => format!(
                "WASM filter {} (sha256 {}): {why}; it fails open: the route serves without it",
                filter.name, filter.sha256
            ),
            None => {
                out.closed.get_or_insert_with(|| filter.name.clone());
                format!(
                    "WASM filter {} (sha256 {}): {why}; it fails closed: the route answers 503 until the module is available",
                    filter.name, filter.sha256
                )
            }
        };
        problems.push(Problem {
            severity,
            path: path.into(),
            source: source.clone(),
            message,
        });
    }
    out
}

/// Route-level switch that turns off a filter for a route that does not use it.
pub fn disable_on_route() -> Any {
    pack_any(FilterConfig {
        disabled: true,
        ..Default::default()
    })
}

const USE_MARKER: &str = "kgw.internal/uses-filter";

/// Stands in a route's per-filter map while the route table is built, for "this route uses
/// the filter"; never sent to Envoy.
pub fn use_marker() -> Any {
    Any {
        type_url: USE_MARKER.into(),
        value: Vec::new(),
    }
}

pub fn is_use_marker(any: &Any) -> bool {
    any.type_url == USE_MARKER
}

/// The listener-level filter; routes that do not use it disable it.
pub fn http_filter(filter: &pb::WasmFilter, modules: &WasmModules) -> HttpFilter {
    let code = AsyncDataSource {
        specifier: Some(async_data_source::Specifier::Remote(RemoteDataSource {
            http_uri: Some(HttpUri {
                uri: format!("http://{}/{}.wasm", modules.cache_address, filter.sha256),
                timeout: Some(Duration { seconds: 10, nanos: 0 }),
                http_upstream_type: Some(
                    envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType::Cluster(
                        WASM_CACHE_CLUSTER.into(),
                    ),
                ),
            }),
            sha256: filter.sha256.clone(),
            ..Default::default()
        })),
    };
    let wasm = Wasm {
        config: Some(PluginConfig {
            name: filter.name.clone(),
            root_id: filter.root_id.clone(),
            configuration: (!filter.config.is_empty()).then(|| {
                pack_any(StringValue {
                    value: filter.config.clone(),
                })
            }),
            // A module that fails in Envoy affects only the routes that enable it.
            failure_policy: if filter.fail_open {
                FailurePolicy::FailOpen
            } else {
                FailurePolicy::FailClosed
            } as i32,
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: filter.sha256.clone(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(code),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    HttpFilter {
        name: filter_name(filter),
        config_type: Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(
                pack_any(wasm),
            ),
        ),
        ..Default::default()
    }
}

//! RouteOption (Gloo's policy, gateway.solo.io/v1) → typed Proxy route filters, one per
//! option (timeout, prefixRewrite, hostRewrite, headerManipulation, wasm), each naming the
//! RouteOption field it came from and how the RouteOption applies to the route; and each
//! RouteOption's own status.
use gateway_api::apis::experimental::httproutes::HttpRoute;
use kgw_common::{
    policy::{self, HeaderManipulation, RouteOption, WasmOptions},
    resources::Index,
};
use kgw_proto::v1::{self as pb, route_filter::Kind};

use super::filters::header;

/// The filters of every RouteOption in `namespace` whose targetRefs name HTTPRoute
/// `route_name` as a whole (no sectionName), in namespace/name order.
pub(super) fn targeting_route(namespace: &str, route_name: &str, index: &Index) -> Vec<pb::RouteFilter> {
    let mut filters = Vec::new();
    for ((option_namespace, _), option) in &index.route_options {
        if option_namespace != namespace {
            continue;
        }
        let target = option.spec.target_refs.iter().position(|t| {
            t.group == "gateway.networking.k8s.io"
                && t.kind == "HTTPRoute"
                && t.name == route_name
                && t.section_name.is_none()
        });
        if let Some(target) = target {
            filters.extend(self::filters(option, &format!("spec.targetRefs[{target}]")));
        }
    }
    filters
}

/// The filters of one RouteOption, applied to a route as `attached_by` says (its targetRef,
/// or the route's ExtensionRef filter).
pub(super) fn filters(option: &RouteOption, attached_by: &str) -> Vec<pb::RouteFilter> {
    let origin = pb::ResourceRef {
        kind: "RouteOption".into(),
        namespace: option.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: option.metadata.name.clone().unwrap_or_default(),
    };
    let spec = &option.spec.options;
    let mut kinds: Vec<(&str, Kind)> = Vec::new();
    if let Some(kind) = timeout(option) {
        kinds.push(("spec.options.timeout", kind));
    }
    if let Some(prefix) = &spec.prefix_rewrite {
        kinds.push(("spec.options.prefixRewrite", Kind::UrlRewrite(prefix_rewrite(prefix))));
    }
    if let Some(host) = &spec.host_rewrite {
        kinds.push(("spec.options.hostRewrite", Kind::UrlRewrite(host_rewrite(host))));
    }
    if let Some(headers) = &spec.header_manipulation {
        let (request, response) = header_manipulation(headers);
        kinds.extend(
            request
                .map(Kind::RequestHeaderModifier)
                .map(|k| ("spec.options.headerManipulation", k)),
        );
        kinds.extend(
            response
                .map(Kind::ResponseHeaderModifier)
                .map(|k| ("spec.options.headerManipulation", k)),
        );
    }
    if let Some(options) = &spec.wasm {
        kinds.push(("spec.options.wasm", Kind::Wasm(wasm(options))));
    }
    kinds
        .into_iter()
        .map(|(field, kind)| pb::RouteFilter {
            origin: Some(origin.clone()),
            origin_field: field.into(),
            attached_by: attached_by.into(),
            kind: Some(kind),
        })
        .collect()
}

/// `timeout` → a Timeout filter, or an `error` when it is not a duration.
pub(super) fn timeout(option: &RouteOption) -> Option<Kind> {
    let text = option.spec.options.timeout.as_deref()?;
    Some(match policy::parse_duration_ms(text) {
        Some(ms) => Kind::Timeout(pb::Timeout { request_timeout_ms: ms }),
        None => Kind::Error(pb::FilterError {
            reason: "UnsupportedValue".into(),
            message: route_option_invalid(option).unwrap_or_default(),
        }),
    })
}

/// `prefixRewrite` → a rewrite of the matched prefix.
pub(super) fn prefix_rewrite(prefix: &str) -> pb::UrlRewrite {
    pb::UrlRewrite {
        host_rewrite: None,
        prefix_rewrite: Some(prefix.to_string()),
        full_path_rewrite: None,
    }
}

/// `hostRewrite` → a rewrite of the Host header.
pub(super) fn host_rewrite(host: &str) -> pb::UrlRewrite {
    pb::UrlRewrite {
        host_rewrite: Some(host.to_string()),
        prefix_rewrite: None,
        full_path_rewrite: None,
    }
}

/// `headerManipulation` → its request and response parts (each `None` when empty). A
/// header's `append` is Gloo's: true unless it says false.
pub(super) fn header_manipulation(h: &HeaderManipulation) -> (Option<pb::HeaderModifier>, Option<pb::HeaderModifier>) {
    let to_pb = |o: &policy::HeaderValueOption| header(&o.header.key, &o.header.value, o.append.unwrap_or(true));
    let modifier = |add: &[policy::HeaderValueOption], remove: &[String]| {
        (!add.is_empty() || !remove.is_empty()).then(|| pb::HeaderModifier {
            headers_to_add: add.iter().map(to_pb).collect(),
            headers_to_remove: remove.to_vec(),
        })
    };
    (
        modifier(&h.request_headers_to_add, &h.request_headers_to_remove),
        modifier(&h.response_headers_to_add, &h.response_headers_to_remove),
    )
}

/// `wasm` → the proxy-wasm filters the route runs (sha256 in lower case).
pub(super) fn wasm(options: &WasmOptions) -> pb::WasmFilters {
    pb::WasmFilters {
        filters: options
            .filters
            .iter()
            .map(|f| pb::WasmFilter {
                name: f.name.clone(),
                url: f.url.clone(),
                sha256: f.sha256.to_ascii_lowercase(),
                config: f.config.clone().unwrap_or_default(),
                root_id: f.root_id.clone().unwrap_or_default(),
                fail_open: f.fail_open,
            })
            .collect(),
    }
}

/// What is wrong with a RouteOption's values, if anything (the routes it applies to
/// answer 500 with this reason, and its own status says so).
pub(super) fn route_option_invalid(option: &RouteOption) -> Option<String> {
    let name = option.metadata.name.as_deref().unwrap_or_default();
    let timeout = option.spec.options.timeout.as_ref()?;
    policy::parse_duration_ms(timeout)
        .is_none()
        .then(|| format!("RouteOption {name}: spec.options.timeout {timeout:?} is not a duration like 5s or 250ms"))
}

/// Each RouteOption's status: for every Gateway of ours that a route it applies to (by
/// targetRefs or an ExtensionRef filter) is attached to, Accepted or Invalid. A
/// RouteOption that affects none of our routes gets no entry (nothing of ours to report).
pub(super) fn report_route_options(index: &Index, routes: &[&HttpRoute], status: &mut crate::translate::StatusReport) {
    for ((namespace, name), option) in &index.route_options {
        let users = routes
            .iter()
            .filter(|route| {
                route.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && uses_route_option(route, name, option)
            })
            .map(|route| route.metadata.name.as_deref().unwrap_or_default());
        report_route_option(namespace, name, option, users, status);
    }
}

/// One RouteOption's status, given the names of the routes (in its namespace) it applies
/// to; their attachments are known to `status` already.
pub(super) fn report_route_option<'a>(
    namespace: &str,
    name: &str,
    option: &RouteOption,
    users: impl Iterator<Item = &'a str>,
    status: &mut crate::translate::StatusReport,
) {
    let invalid = route_option_invalid(option);
    let option_key = format!("{namespace}/{name}");
    let mut gateways: Vec<String> = users
        .flat_map(|route| status.attached_gateways(&format!("{namespace}/{route}")))
        .collect();
    gateways.sort();
    gateways.dedup();
    for gateway in gateways {
        status.route_option(&option_key, &gateway, invalid.as_deref());
    }
}

/// Whether `route` (in the option's namespace) gets the RouteOption `name`.
fn uses_route_option(route: &HttpRoute, name: &str, option: &RouteOption) -> bool {
    let route_name = route.metadata.name.as_deref().unwrap_or_default();
    let targeted = option
        .spec
        .target_refs
        .iter()
        .any(|t| t.group == "gateway.networking.k8s.io" && t.kind == "HTTPRoute" && t.name == route_name);
    let referenced = route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.filters.iter().flatten())
        .any(|f| {
            f.extension_ref
                .as_ref()
                .is_some_and(|e| e.group == "gateway.solo.io" && e.kind == "RouteOption" && e.name == name)
        });
    targeted || referenced
}

#[cfg(test)]
mod tests;

//! HTTPRoute rule filters → typed Proxy route filters, each naming the HTTPRoute field it
//! came from: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite,
//! RequestMirror, CORS, and ExtensionRef to a RouteOption (its options, see `route_option`);
//! the rule's `retry` and `timeouts` and its backendRefs' filters (see `rule`). ExternalAuth
//! is not supported: it becomes an `error` filter, reported on the route's status.
//!
//! Nothing is merged here: the filters are listed in the order they apply (RouteOption
//! policies on the whole route first, then the rule's own filters), and the controller
//! applies the precedence that `RouteFilter` in proto/protos/kgw/v1/proxy.proto documents.
use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersCors, HttpRouteRulesFiltersExtensionRef,
    HttpRouteRulesFiltersRequestHeaderModifier, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestRedirect, HttpRouteRulesFiltersRequestRedirectPathType as RedirectPath,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersResponseHeaderModifier,
    HttpRouteRulesFiltersType as FilterType, HttpRouteRulesFiltersUrlRewrite,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePath,
};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, route_filter::Kind};

use super::{route_option, routes};

mod rule;
pub(super) use rule::{backend_ref_filters, settle_redirect_ports, untranslated};

/// The typed filters of rule `rule_index` of `route`, in the order they apply: the
/// RouteOptions whose targetRefs name the route, then the rule's own filters.
pub(super) fn rule_filters(
    route: &HttpRoute,
    rule_index: usize,
    rule: &HttpRouteRules,
    index: &Index,
) -> Vec<pb::RouteFilter> {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let origin = http_route_ref(namespace, name);
    let mut filters = route_option::targeting_route(namespace, name, index);
    for (filter_index, filter) in rule.filters.iter().flatten().enumerate() {
        let field = format!("spec.rules[{rule_index}].filters[{filter_index}]");
        filters.extend(one_filter(filter, &origin, field, index));
    }
    filters.extend(rule::retry_and_timeouts(&origin, rule_index, rule));
    // The filters of a rule's only backendRef apply to all its requests: they are the
    // rule's last (the most specific win). With several backendRefs they go with each
    // destination (`routes::backend_action`).
    if let [backend] = rule.backend_refs.as_deref().unwrap_or_default() {
        filters.extend(backend_ref_filters(route, rule_index, 0, backend, index));
    }
    filters
}

/// One rule (or backendRef) filter written at `field` of `origin` → its Proxy filters (an
/// ExtensionRef: its RouteOption's).
fn one_filter(
    filter: &HttpRouteRulesFilters,
    origin: &pb::ResourceRef,
    field: String,
    index: &Index,
) -> Vec<pb::RouteFilter> {
    if filter.r#type == FilterType::ExtensionRef {
        return match &filter.extension_ref {
            Some(ext) => extension_ref(ext, origin, &field, index),
            None => Vec::new(),
        };
    }
    filter_kind(filter, &origin.namespace, index)
        .map(|kind| pb::RouteFilter {
            origin: Some(origin.clone()),
            origin_field: field,
            attached_by: String::new(),
            kind: Some(kind),
        })
        .into_iter()
        .collect()
}

/// The `error` filters among `filters`: what could not be applied (the route answers 500).
pub(super) fn errors(filters: &[pb::RouteFilter]) -> impl Iterator<Item = &pb::FilterError> {
    filters.iter().filter_map(|f| match &f.kind {
        Some(Kind::Error(error)) => Some(error),
        _ => None,
    })
}

/// Whether a filter answers with a redirect instead of forwarding.
pub(super) fn redirects(filters: &[pb::RouteFilter]) -> bool {
    filters.iter().any(|f| matches!(f.kind, Some(Kind::RequestRedirect(_))))
}

/// One filter other than an ExtensionRef of a route in `route_ns`; `None` when its type's
/// own field is missing.
fn filter_kind(filter: &HttpRouteRulesFilters, route_ns: &str, index: &Index) -> Option<Kind> {
    match filter.r#type {
        FilterType::RequestHeaderModifier => filter
            .request_header_modifier
            .as_ref()
            .map(|m| Kind::RequestHeaderModifier(request_header_modifier(m))),
        FilterType::ResponseHeaderModifier => filter
            .response_header_modifier
            .as_ref()
            .map(|m| Kind::ResponseHeaderModifier(response_header_modifier(m))),
        FilterType::RequestRedirect => filter
            .request_redirect
            .as_ref()
            .map(|r| Kind::RequestRedirect(request_redirect(r))),
        FilterType::UrlRewrite => filter.url_rewrite.as_ref().map(url_rewrite),
        FilterType::RequestMirror => filter
            .request_mirror
            .as_ref()
            .map(|m| request_mirror(m, route_ns, index)),
        FilterType::Cors => filter.cors.as_ref().map(|c| Kind::Cors(cors(c))),
        FilterType::ExternalAuth => Some(Kind::Error(unsupported(&filter.r#type))),
        // Expands to a RouteOption's filters: `rule_filters` handles it.
        FilterType::ExtensionRef => None,
    }
}

/// RequestHeaderModifier: `set` replaces, then `add` appends, then `remove`.
pub(super) fn request_header_modifier(m: &HttpRouteRulesFiltersRequestHeaderModifier) -> pb::HeaderModifier {
    let set = m.set.iter().flatten().map(|h| header(&h.name, &h.value, false));
    let add = m.add.iter().flatten().map(|h| header(&h.name, &h.value, true));
    pb::HeaderModifier {
        headers_to_add: set.chain(add).collect(),
        headers_to_remove: m.remove.clone().unwrap_or_default(),
    }
}

/// ResponseHeaderModifier: `set` replaces, then `add` appends, then `remove`.
pub(super) fn response_header_modifier(m: &HttpRouteRulesFiltersResponseHeaderModifier) -> pb::HeaderModifier {
    let set = m.set.iter().flatten().map(|h| header(&h.name, &h.value, false));
    let add = m.add.iter().flatten().map(|h| header(&h.name, &h.value, true));
    pb::HeaderModifier {
        headers_to_add: set.chain(add).collect(),
        headers_to_remove: m.remove.clone().unwrap_or_default(),
    }
}

/// RequestRedirect → the redirect the route answers with (the Gateway API's default
/// status is 302).
pub(super) fn request_redirect(r: &HttpRouteRulesFiltersRequestRedirect) -> pb::RedirectAction {
    let path_rewrite = r.path.as_ref().and_then(|p| match p.r#type {
        RedirectPath::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(pb::redirect_action::PathRewrite::PathRedirect),
        RedirectPath::ReplacePrefixMatch => p
            .replace_prefix_match
            .clone()
            .map(pb::redirect_action::PathRewrite::PrefixRewrite),
    });
    pb::RedirectAction {
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.unwrap_or(0).max(0) as u32,
        scheme_redirect: match r.scheme {
            Some(Scheme::Http) => "http".into(),
            Some(Scheme::Https) => "https".into(),
            None => String::new(),
        },
        path_rewrite,
        response_code: r.status_code.unwrap_or(302).clamp(0, 999) as u32,
    }
}

/// URLRewrite → a host rewrite and/or a prefix or full path rewrite.
pub(super) fn url_rewrite(rewrite: &HttpRouteRulesFiltersUrlRewrite) -> Kind {
    let (prefix_rewrite, full_path_rewrite) = match rewrite.path.as_ref().map(|p| (&p.r#type, p)) {
        Some((RewritePath::ReplacePrefixMatch, p)) => {
            (Some(p.replace_prefix_match.clone().unwrap_or_else(|| "/".into())), None)
        }
        Some((RewritePath::ReplaceFullPath, p)) => {
            (None, Some(p.replace_full_path.clone().unwrap_or_else(|| "/".into())))
        }
        None => (None, None),
    };
    Kind::UrlRewrite(pb::UrlRewrite {
        host_rewrite: rewrite.hostname.clone(),
        prefix_rewrite,
        full_path_rewrite,
    })
}

/// RequestMirror → a copy of the requests (all, `percent` of them or `fraction`) to its
/// backend, or an `error` when the backend cannot be resolved (as a backendRef would be).
pub(super) fn request_mirror(mirror: &HttpRouteRulesFiltersRequestMirror, route_ns: &str, index: &Index) -> Kind {
    let backend = &mirror.backend_ref;
    let target = routes::BackendTarget {
        group: backend.group.as_deref().unwrap_or(""),
        kind: backend.kind.as_deref().unwrap_or("Service"),
        name: &backend.name,
        namespace: backend.namespace.as_deref(),
        port: backend.port,
    };
    let upstream = match routes::resolve_backend(&target, route_ns, index) {
        Ok(upstream) => upstream,
        Err((reason, message, _)) => {
            return Kind::Error(pb::FilterError {
                reason: reason.into(),
                message: format!("RequestMirror: {message}"),
            });
        }
    };
    // The CRD bounds percent to 0..=100 and numerator <= denominator; clamped anyway, as
    // the index may hold what a CRD would have refused.
    let (numerator, denominator) = match (&mirror.fraction, mirror.percent) {
        (Some(f), _) => {
            let denominator = f.denominator.unwrap_or(100).max(1) as u32;
            (f.numerator.clamp(0, i32::MAX) as u32, denominator)
        }
        (None, Some(percent)) => (percent.clamp(0, 100) as u32, 100),
        (None, None) => (1, 1),
    };
    // A mirrored copy goes over TLS as the backend's own traffic would.
    let (upstream, tls) = super::backend_tls::apply(&target, route_ns, upstream, index);
    Kind::RequestMirror(pb::RequestMirror {
        destination: Some(pb::Destination {
            upstream: Some(upstream),
            filters: Vec::new(),
            tls,
        }),
        numerator: numerator.min(denominator),
        denominator,
    })
}

/// CORS → the policy Envoy applies (and answers preflights with).
pub(super) fn cors(c: &HttpRouteRulesFiltersCors) -> pb::Cors {
    pb::Cors {
        allow_origins: c.allow_origins.clone().unwrap_or_default(),
        allow_methods: c.allow_methods.clone().unwrap_or_default(),
        allow_headers: c.allow_headers.clone().unwrap_or_default(),
        expose_headers: c.expose_headers.clone().unwrap_or_default(),
        allow_credentials: c.allow_credentials == Some(true),
        max_age_seconds: c.max_age.map(|s| s.max(0) as u32),
    }
}

/// ExtensionRef → the named RouteOption's filters (attached by this filter), or an `error`
/// filter when it names another kind or a RouteOption that does not exist.
pub(super) fn extension_ref(
    ext: &HttpRouteRulesFiltersExtensionRef,
    route: &pb::ResourceRef,
    field: &str,
    index: &Index,
) -> Vec<pb::RouteFilter> {
    let error = |reason: &str, message: String| {
        vec![pb::RouteFilter {
            origin: Some(route.clone()),
            origin_field: field.to_string(),
            attached_by: String::new(),
            kind: Some(Kind::Error(pb::FilterError {
                reason: reason.into(),
                message,
            })),
        }]
    };
    if !(ext.group == "gateway.solo.io" && ext.kind == "RouteOption") {
        return error(
            "InvalidKind",
            format!("ExtensionRef to {}/{} is not supported", ext.group, ext.kind),
        );
    }
    match index.route_options.get(&(route.namespace.clone(), ext.name.clone())) {
        Some(option) => route_option::filters(option, field),
        None => error(
            "BackendNotFound",
            format!("RouteOption {}/{} not found", route.namespace, ext.name),
        ),
    }
}

/// A filter type we do not translate yet.
pub(super) fn unsupported(filter_type: &FilterType) -> pb::FilterError {
    pb::FilterError {
        reason: "UnsupportedValue".into(),
        message: format!("filter {filter_type:?} is not supported yet"),
    }
}

/// A Proxy header value; `append` false replaces.
pub(super) fn header(name: &str, value: &str, append: bool) -> pb::HeaderValue {
    pb::HeaderValue {
        name: name.to_string(),
        value: value.to_string(),
        append,
    }
}

/// The ResourceRef naming HTTPRoute `namespace/name`.
pub(super) fn http_route_ref(namespace: &str, name: &str) -> pb::ResourceRef {
    pb::ResourceRef {
        kind: "HTTPRoute".into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[cfg(test)]
mod tests;

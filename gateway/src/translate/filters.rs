//! HTTPRoute rule filters → typed Proxy route filters, each naming the HTTPRoute field it
//! came from: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite,
//! and ExtensionRef to a RouteOption (its options, see `route_option`). RequestMirror and
//! CORS are not supported: they become `error` filters, reported on the route's status.
//!
//! Nothing is merged here: the filters are listed in the order they apply (RouteOption
//! policies on the whole route first, then the rule's own filters), and the controller
//! applies the precedence that `RouteFilter` in proto/protos/kgw/v1/proxy.proto documents.
use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersExtensionRef,
    HttpRouteRulesFiltersRequestHeaderModifier, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPath, HttpRouteRulesFiltersRequestRedirectScheme as Scheme,
    HttpRouteRulesFiltersResponseHeaderModifier, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePathType as RewritePath,
};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, route_filter::Kind};

use super::route_option;

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
        if filter.r#type == FilterType::ExtensionRef {
            if let Some(ext) = &filter.extension_ref {
                filters.extend(extension_ref(ext, &origin, &field, index));
            }
            continue;
        }
        if let Some(kind) = filter_kind(filter) {
            filters.push(pb::RouteFilter {
                origin: Some(origin.clone()),
                origin_field: field,
                attached_by: String::new(),
                kind: Some(kind),
            });
        }
    }
    filters
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

/// One filter other than an ExtensionRef; `None` when its type's own field is missing.
fn filter_kind(filter: &HttpRouteRulesFilters) -> Option<Kind> {
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
        FilterType::RequestMirror | FilterType::Cors | FilterType::ExternalAuth => {
            Some(Kind::Error(unsupported(&filter.r#type)))
        }
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

/// URLRewrite → a host and/or prefix rewrite; ReplaceFullPath is not supported yet (an
/// `error`).
pub(super) fn url_rewrite(rewrite: &HttpRouteRulesFiltersUrlRewrite) -> Kind {
    let prefix_rewrite = match rewrite.path.as_ref().map(|p| (&p.r#type, p)) {
        Some((RewritePath::ReplacePrefixMatch, p)) => {
            Some(p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()))
        }
        Some((RewritePath::ReplaceFullPath, _)) => {
            return Kind::Error(pb::FilterError {
                reason: "UnsupportedValue".into(),
                message: "URLRewrite ReplaceFullPath is not supported yet".into(),
            });
        }
        None => None,
    };
    Kind::UrlRewrite(pb::UrlRewrite {
        host_rewrite: rewrite.hostname.clone(),
        prefix_rewrite,
    })
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

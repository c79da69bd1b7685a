//! HTTPRoute rule filters (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect,
//! URLRewrite, ExtensionRef to a RouteOption) and RouteOptions attached by targetRefs →
//! the Proxy route's options, or a redirect that replaces forwarding.
use gateway_api::apis::standard::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestRedirectPathType as RedirectPath,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePath,
};
use kgw_common::{
    policy::{self, RouteOption},
    resources::Index,
};
use kgw_proto::v1 as pb;

/// What a rule's filters and policies make of it.
#[derive(Default)]
pub struct RuleEffects {
    pub options: pb::RouteOptions,
    /// A RequestRedirect filter: the rule answers with this redirect instead of forwarding.
    pub redirect: Option<pb::RedirectAction>,
    /// Filters that could not be applied: (reason, message). The rule answers 500.
    pub invalid: Vec<(String, String)>,
}

pub fn rule_effects(route: &HttpRoute, rule: &HttpRouteRules, index: &Index) -> RuleEffects {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let mut effects = RuleEffects::default();
    // Policies targeting the whole route first; filters on the rule override them.
    for ((ns, _), option) in &index.route_options {
        let targets_route = option.spec.target_refs.iter().any(|t| {
            t.group == "gateway.networking.k8s.io"
                && t.kind == "HTTPRoute"
                && t.name == name
                && t.section_name.is_none()
        });
        if ns == namespace && targets_route {
            apply_route_option(option, &mut effects);
        }
    }
    for filter in rule.filters.iter().flatten() {
        apply_filter(filter, namespace, index, &mut effects);
    }
    effects
}

fn apply_filter(filter: &HttpRouteRulesFilters, namespace: &str, index: &Index, effects: &mut RuleEffects) {
    let options = &mut effects.options;
    match filter.r#type {
        FilterType::RequestHeaderModifier => {
            if let Some(m) = &filter.request_header_modifier {
                let set = m.set.iter().flatten().map(|h| header(&h.name, &h.value, false));
                let add = m.add.iter().flatten().map(|h| header(&h.name, &h.value, true));
                options.request_headers_to_add.extend(set.chain(add));
                options
                    .request_headers_to_remove
                    .extend(m.remove.iter().flatten().cloned());
            }
        }
        FilterType::ResponseHeaderModifier => {
            if let Some(m) = &filter.response_header_modifier {
                let set = m.set.iter().flatten().map(|h| header(&h.name, &h.value, false));
                let add = m.add.iter().flatten().map(|h| header(&h.name, &h.value, true));
                options.response_headers_to_add.extend(set.chain(add));
                options
                    .response_headers_to_remove
                    .extend(m.remove.iter().flatten().cloned());
            }
        }
        FilterType::RequestRedirect => {
            if let Some(r) = &filter.request_redirect {
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
                effects.redirect = Some(pb::RedirectAction {
                    host_redirect: r.hostname.clone().unwrap_or_default(),
                    port_redirect: r.port.unwrap_or(0).max(0) as u32,
                    scheme_redirect: match r.scheme {
                        Some(Scheme::Http) => "http".into(),
                        Some(Scheme::Https) => "https".into(),
                        None => String::new(),
                    },
                    path_rewrite,
                    // The Gateway API's default redirect is 302.
                    response_code: r.status_code.unwrap_or(302).clamp(0, 999) as u32,
                });
            }
        }
        FilterType::UrlRewrite => {
            if let Some(rewrite) = &filter.url_rewrite {
                if let Some(host) = &rewrite.hostname {
                    options.host_rewrite = host.clone();
                }
                match rewrite.path.as_ref().map(|p| (&p.r#type, p)) {
                    Some((RewritePath::ReplacePrefixMatch, p)) => {
                        options.prefix_rewrite = p.replace_prefix_match.clone().unwrap_or_else(|| "/".into());
                    }
                    Some((RewritePath::ReplaceFullPath, _)) => effects.invalid.push((
                        "UnsupportedValue".into(),
                        "URLRewrite ReplaceFullPath is not supported yet".into(),
                    )),
                    None => {}
                }
            }
        }
        FilterType::ExtensionRef => {
            let Some(ext) = &filter.extension_ref else { return };
            if !(ext.group == "gateway.solo.io" && ext.kind == "RouteOption") {
                effects.invalid.push((
                    "InvalidKind".into(),
                    format!("ExtensionRef to {}/{} is not supported", ext.group, ext.kind),
                ));
                return;
            }
            match index.route_options.get(&(namespace.to_string(), ext.name.clone())) {
                Some(option) => apply_route_option(option, effects),
                None => effects.invalid.push((
                    "BackendNotFound".into(),
                    format!("RouteOption {namespace}/{} not found", ext.name),
                )),
            }
        }
        FilterType::RequestMirror | FilterType::Cors => effects.invalid.push((
            "UnsupportedValue".into(),
            format!("filter {:?} is not supported yet", filter.r#type),
        )),
    }
}

fn header(name: &str, value: &str, append: bool) -> pb::HeaderValue {
    pb::HeaderValue {
        name: name.to_string(),
        value: value.to_string(),
        append,
    }
}

/// What is wrong with a RouteOption's values, if anything (the routes it applies to
/// answer 500 with this reason, and its own status says so).
pub fn route_option_invalid(option: &RouteOption) -> Option<String> {
    let name = option.metadata.name.as_deref().unwrap_or_default();
    let timeout = option.spec.options.timeout.as_ref()?;
    policy::parse_duration_ms(timeout)
        .is_none()
        .then(|| format!("RouteOption {name}: spec.options.timeout {timeout:?} is not a duration like 5s or 250ms"))
}

/// Each RouteOption's status: for every Gateway of ours that a route it applies to (by
/// targetRefs or an ExtensionRef filter) is attached to, Accepted or Invalid. A
/// RouteOption that affects none of our routes gets no entry (nothing of ours to report).
pub fn report_route_options(index: &Index, routes: &[&HttpRoute], status: &mut crate::translate::StatusReport) {
    for ((namespace, name), option) in &index.route_options {
        let invalid = route_option_invalid(option);
        let option_key = format!("{namespace}/{name}");
        let users = routes.iter().filter(|route| {
            route.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && uses_route_option(route, name, option)
        });
        let mut gateways: Vec<String> = users
            .flat_map(|route| {
                let route_key = format!("{namespace}/{}", route.metadata.name.as_deref().unwrap_or_default());
                status.attached_gateways(&route_key)
            })
            .collect();
        gateways.sort();
        gateways.dedup();
        for gateway in gateways {
            status.route_option(&option_key, &gateway, invalid.as_deref());
        }
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

fn apply_route_option(option: &RouteOption, effects: &mut RuleEffects) {
    let spec = &option.spec.options;
    let options = &mut effects.options;
    if let Some(why) = route_option_invalid(option) {
        effects.invalid.push(("UnsupportedValue".into(), why));
    } else if let Some(ms) = spec.timeout.as_deref().and_then(policy::parse_duration_ms) {
        options.timeout_ms = ms;
    }
    if let Some(prefix) = &spec.prefix_rewrite {
        options.prefix_rewrite = prefix.clone();
    }
    if let Some(host) = &spec.host_rewrite {
        options.host_rewrite = host.clone();
    }
    if let Some(h) = &spec.header_manipulation {
        let to_pb = |o: &policy::HeaderValueOption| header(&o.header.key, &o.header.value, o.append.unwrap_or(true));
        options
            .request_headers_to_add
            .extend(h.request_headers_to_add.iter().map(to_pb));
        options
            .request_headers_to_remove
            .extend(h.request_headers_to_remove.iter().cloned());
        options
            .response_headers_to_add
            .extend(h.response_headers_to_add.iter().map(to_pb));
        options
            .response_headers_to_remove
            .extend(h.response_headers_to_remove.iter().cloned());
    }
    if let Some(wasm) = &spec.wasm {
        options.wasm_filters = wasm
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
            .collect();
    }
}

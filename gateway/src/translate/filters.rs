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

fn apply_route_option(option: &RouteOption, effects: &mut RuleEffects) {
    let spec = &option.spec.options;
    let name = option.metadata.name.as_deref().unwrap_or_default();
    let options = &mut effects.options;
    if let Some(timeout) = &spec.timeout {
        match policy::parse_duration_ms(timeout) {
            Some(ms) => options.timeout_ms = ms,
            None => effects.invalid.push((
                "UnsupportedValue".into(),
                format!("RouteOption {name}: spec.options.timeout {timeout:?} is not a duration like 5s or 250ms"),
            )),
        }
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
            })
            .collect();
    }
}

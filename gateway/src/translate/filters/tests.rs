//! One test per filter kind, on fixtures built from small YAML snippets.
use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteRulesFilters, HttpRouteRulesFiltersType};
use kgw_common::{policy::RouteOption, resources::Index};
use kgw_proto::v1::{self as pb, route_filter::Kind};

use super::*;

/// An HTTPRule filter from its YAML form.
fn mk_filter(yaml: &str) -> HttpRouteRulesFilters {
    serde_yaml::from_str(yaml).expect("filter yaml")
}

/// HTTPRoute `default/web` whose one rule has `filters` (YAML list).
fn mk_route(filters: &str) -> HttpRoute {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - filters: {filters}\n"
    );
    serde_yaml::from_str(&yaml).expect("route yaml")
}

/// RouteOption `default/<name>` with `spec` (YAML).
fn mk_route_option(name: &str, spec: &str) -> RouteOption {
    let yaml = format!(
        "apiVersion: gateway.solo.io/v1\nkind: RouteOption\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
    );
    serde_yaml::from_str(&yaml).expect("route option yaml")
}

/// An index holding `options`.
fn mk_index(options: Vec<RouteOption>) -> Index {
    let mut index = Index::default();
    for option in options {
        let key = (
            option.metadata.namespace.clone().unwrap_or_default(),
            option.metadata.name.clone().unwrap_or_default(),
        );
        index.route_options.insert(key, option.into());
    }
    index
}

fn kinds(filters: &[pb::RouteFilter]) -> Vec<Kind> {
    filters.iter().filter_map(|f| f.kind.clone()).collect()
}

#[test]
fn request_header_modifier_sets_then_adds_then_removes() {
    let filter = mk_filter(
        "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: a}], add: [{name: x-add, value: b}], remove: [x-gone]}}",
    );
    let modifier = request_header_modifier(filter.request_header_modifier.as_ref().expect("modifier"));
    assert_eq!(
        modifier,
        pb::HeaderModifier {
            headers_to_add: vec![header("x-set", "a", false), header("x-add", "b", true)],
            headers_to_remove: vec!["x-gone".into()],
        }
    );
}

#[test]
fn response_header_modifier_sets_then_adds_then_removes() {
    let filter = mk_filter(
        "{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-set, value: a}], add: [{name: x-add, value: b}], remove: [server]}}",
    );
    let modifier = response_header_modifier(filter.response_header_modifier.as_ref().expect("modifier"));
    assert_eq!(
        modifier.headers_to_add,
        vec![header("x-set", "a", false), header("x-add", "b", true)]
    );
    assert_eq!(modifier.headers_to_remove, vec!["server".to_string()]);
}

#[test]
fn url_rewrite_of_prefix_and_hostname() {
    let filter = mk_filter(
        "{type: URLRewrite, urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}",
    );
    let kind = url_rewrite(filter.url_rewrite.as_ref().expect("rewrite"));
    assert_eq!(
        kind,
        Kind::UrlRewrite(pb::UrlRewrite {
            host_rewrite: Some("internal.example".into()),
            prefix_rewrite: Some("/v2".into()),
            full_path_rewrite: None,
        })
    );
}

#[test]
fn url_rewrite_of_full_path() {
    let filter = mk_filter("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /x}}}");
    assert_eq!(
        url_rewrite(filter.url_rewrite.as_ref().expect("rewrite")),
        Kind::UrlRewrite(pb::UrlRewrite {
            host_rewrite: None,
            prefix_rewrite: None,
            full_path_rewrite: Some("/x".into()),
        })
    );
}

#[test]
fn cors_filter_keeps_the_lists_as_written() {
    let filter = mk_filter(
        "{type: CORS, cors: {allowOrigins: ['https://*.bar.com'], allowMethods: [GET], allowCredentials: true, maxAge: 60}}",
    );
    let cors = cors(filter.cors.as_ref().expect("cors"));
    assert_eq!(cors.allow_origins, vec!["https://*.bar.com".to_string()]);
    assert_eq!(cors.allow_methods, vec!["GET".to_string()]);
    assert!(cors.allow_credentials);
    assert_eq!(cors.max_age_seconds, Some(60));
}

#[test]
fn request_mirror_to_a_missing_service_is_an_error_and_percentages_are_fractions() {
    let filter =
        mk_filter("{type: RequestMirror, requestMirror: {backendRef: {name: other, port: 8080}, percent: 20}}");
    let mirror = filter.request_mirror.as_ref().expect("mirror");
    let Kind::Error(error) = request_mirror(mirror, "default", &Index::default()) else {
        panic!("not an error");
    };
    assert_eq!(error.reason, "BackendNotFound");
    let mut index = Index::default();
    let service: k8s_openapi::api::core::v1::Service =
        serde_yaml::from_str("metadata: {name: other, namespace: default}").expect("service");
    index
        .services
        .insert(("default".into(), "other".into()), service.into());
    let Kind::RequestMirror(mirror) = request_mirror(mirror, "default", &index) else {
        panic!("not a mirror");
    };
    assert_eq!((mirror.numerator, mirror.denominator), (20, 100));
    let upstream = mirror.destination.and_then(|d| d.upstream).expect("upstream");
    assert_eq!(upstream.name, "default-other-8080");
}

#[test]
fn retry_timeouts_and_a_lone_backend_refs_filters_follow_the_rule_filters() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\n\
                spec:\n  rules:\n  - retry: {attempts: 2, codes: [500], backoff: 100ms}\n    timeouts: {request: 0s, backendRequest: 500ms}\n    \
                backendRefs: [{name: svc, port: 80, filters: [{type: RequestRedirect, requestRedirect: {hostname: x.example}}]}]\n";
    let route: HttpRoute = serde_yaml::from_str(yaml).expect("route yaml");
    let rule = route.spec.rules.as_ref().and_then(|r| r.first()).expect("rule");
    let mut filters = rule_filters(&route, 0, rule, &Index::default());
    settle_redirect_ports(&mut filters, 8080);
    let fields: Vec<&str> = filters.iter().map(|f| f.origin_field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.rules[0].retry",
            "spec.rules[0].timeouts",
            "spec.rules[0].backendRefs[0].filters[0]"
        ]
    );
    let kinds = kinds(&filters);
    assert_eq!(
        kinds[0],
        Kind::Retry(pb::Retry {
            num_retries: Some(2),
            status_codes: vec![500],
            backoff_base_ms: 100,
        })
    );
    assert_eq!(
        kinds[1],
        Kind::Timeouts(pb::Timeouts {
            request_ms: Some(0),
            backend_request_ms: Some(500),
        })
    );
    let Kind::RequestRedirect(redirect) = &kinds[2] else {
        panic!("not a redirect");
    };
    // No scheme, no port: the listener's declared port.
    assert_eq!(redirect.port_redirect, 8080);
}

#[test]
fn redirect_ports_follow_the_scheme_else_the_listener() {
    let redirect = |yaml: &str| {
        let filter = mk_filter(yaml);
        let mut filters = vec![pb::RouteFilter {
            kind: Some(Kind::RequestRedirect(request_redirect(
                filter.request_redirect.as_ref().expect("redirect"),
            ))),
            ..Default::default()
        }];
        settle_redirect_ports(&mut filters, 80);
        match &filters[0].kind {
            Some(Kind::RequestRedirect(r)) => r.port_redirect,
            _ => 0,
        }
    };
    assert_eq!(
        redirect("{type: RequestRedirect, requestRedirect: {scheme: https}}"),
        443
    );
    assert_eq!(redirect("{type: RequestRedirect, requestRedirect: {scheme: http}}"), 80);
    assert_eq!(redirect("{type: RequestRedirect, requestRedirect: {port: 8443}}"), 8443);
    assert_eq!(
        redirect("{type: RequestRedirect, requestRedirect: {hostname: a.example}}"),
        80
    );
}

#[test]
fn request_redirect_defaults_to_302() {
    let filter = mk_filter(
        "{type: RequestRedirect, requestRedirect: {scheme: https, hostname: b.example, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}",
    );
    let redirect = request_redirect(filter.request_redirect.as_ref().expect("redirect"));
    assert_eq!(
        redirect,
        pb::RedirectAction {
            host_redirect: "b.example".into(),
            port_redirect: 8443,
            scheme_redirect: "https".into(),
            path_rewrite: Some(pb::redirect_action::PathRewrite::PrefixRewrite("/new".into())),
            response_code: 302,
        }
    );
}

#[test]
fn extension_ref_lists_the_route_options_filters_attached_by_the_filter() {
    let index = mk_index(vec![mk_route_option("opts", "{options: {timeout: 2s}}")]);
    let ext = mk_filter("{type: ExtensionRef, extensionRef: {group: gateway.solo.io, kind: RouteOption, name: opts}}");
    let route = http_route_ref("default", "web");
    let filters = extension_ref(
        ext.extension_ref.as_ref().expect("ref"),
        &route,
        "spec.rules[0].filters[0]",
        &index,
    );
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].origin.as_ref().map(|o| o.kind.as_str()), Some("RouteOption"));
    assert_eq!(filters[0].origin_field, "spec.options.timeout");
    assert_eq!(filters[0].attached_by, "spec.rules[0].filters[0]");
    assert_eq!(
        filters[0].kind,
        Some(Kind::Timeout(pb::Timeout {
            request_timeout_ms: 2000
        }))
    );
}

#[test]
fn extension_ref_to_a_missing_route_option_or_another_kind_is_an_error() {
    let index = mk_index(Vec::new());
    let route = http_route_ref("default", "web");
    for (yaml, reason) in [
        (
            "{type: ExtensionRef, extensionRef: {group: gateway.solo.io, kind: RouteOption, name: none}}",
            "BackendNotFound",
        ),
        (
            "{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}",
            "InvalidKind",
        ),
    ] {
        let ext = mk_filter(yaml);
        let filters = extension_ref(ext.extension_ref.as_ref().expect("ref"), &route, "f", &index);
        let errors: Vec<_> = errors(&filters).collect();
        assert_eq!(errors.len(), 1, "{yaml}");
        assert_eq!(errors[0].reason, reason);
        assert_eq!(filters[0].origin.as_ref(), Some(&route));
    }
}

#[test]
fn unsupported_filters_are_errors() {
    for filter_type in [
        HttpRouteRulesFiltersType::RequestMirror,
        HttpRouteRulesFiltersType::Cors,
    ] {
        let error = unsupported(&filter_type);
        assert_eq!(error.reason, "UnsupportedValue");
        assert!(error.message.contains("not supported"), "{}", error.message);
    }
}

#[test]
fn rule_filters_list_policies_first_then_the_rules_filters_with_their_origins() {
    let route = mk_route(
        "[{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-rule, value: r}]}}, {type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: auth}}}]",
    );
    let index = mk_index(vec![mk_route_option(
        "policy",
        "{targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}], options: {headerManipulation: {requestHeadersToAdd: [{header: {key: x-policy, value: p}}]}}}",
    )]);
    let rule = route.spec.rules.as_ref().and_then(|r| r.first()).expect("rule");
    let filters = rule_filters(&route, 0, rule, &index);
    let origins: Vec<(String, &str, &str)> = filters
        .iter()
        .map(|f| {
            let origin = f.origin.clone().unwrap_or_default();
            (
                format!("{}/{}", origin.kind, origin.name),
                f.origin_field.as_str(),
                f.attached_by.as_str(),
            )
        })
        .collect();
    assert_eq!(
        origins,
        vec![
            (
                "RouteOption/policy".into(),
                "spec.options.headerManipulation",
                "spec.targetRefs[0]"
            ),
            ("HTTPRoute/web".into(), "spec.rules[0].filters[0]", ""),
            ("HTTPRoute/web".into(), "spec.rules[0].filters[1]", ""),
        ]
    );
    let kinds = kinds(&filters);
    assert_eq!(
        kinds[0],
        Kind::RequestHeaderModifier(pb::HeaderModifier {
            headers_to_add: vec![header("x-policy", "p", true)],
            headers_to_remove: Vec::new(),
        })
    );
    assert!(matches!(kinds[2], Kind::Error(_)));
    assert!(!redirects(&filters));
}

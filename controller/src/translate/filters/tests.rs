//! One test per filter kind, and the precedence of `merge`.
use envoy_types::pb::envoy::config::{core::v3::header_value_option::HeaderAppendAction, route::v3::redirect_action};
use kgw_proto::v1::{self as pb, route_filter::Kind};

use super::*;

/// A filter of `kind` written in RouteOption `origin` (or, with `None`, the route's rule).
fn mk_filter(origin: Option<&str>, kind: Kind) -> pb::RouteFilter {
    pb::RouteFilter {
        origin: Some(pb::ResourceRef {
            kind: if origin.is_some() { "RouteOption" } else { "HTTPRoute" }.into(),
            namespace: "default".into(),
            name: origin.unwrap_or("web").into(),
        }),
        origin_field: String::new(),
        attached_by: String::new(),
        kind: Some(kind),
    }
}

fn mk_header(name: &str, value: &str, append: bool) -> pb::HeaderValue {
    pb::HeaderValue {
        name: name.into(),
        value: value.into(),
        append,
    }
}

fn mk_rewrite(prefix: Option<&str>, host: Option<&str>) -> Kind {
    Kind::UrlRewrite(pb::UrlRewrite {
        host_rewrite: host.map(String::from),
        prefix_rewrite: prefix.map(String::from),
        full_path_rewrite: None,
    })
}

#[test]
fn header_modifier_appends_or_overwrites() {
    let (add, remove) = header_modifier(&pb::HeaderModifier {
        headers_to_add: vec![mk_header("x-set", "1", false), mk_header("x-add", "2", true)],
        headers_to_remove: vec!["x-gone".into()],
    });
    let actions: Vec<i32> = add.iter().map(|h| h.append_action).collect();
    assert_eq!(
        actions,
        [
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            HeaderAppendAction::AppendIfExistsOrAdd as i32
        ]
    );
    assert_eq!(add[0].header.as_ref().map(|h| h.key.as_str()), Some("x-set"));
    assert_eq!(remove, ["x-gone"]);
}

#[test]
fn url_rewrite_sets_only_what_it_names() {
    let rewrite = pb::UrlRewrite {
        host_rewrite: Some("h.example".into()),
        prefix_rewrite: None,
        full_path_rewrite: None,
    };
    assert_eq!(url_rewrite(&rewrite), (None, Some("h.example".into())));
    assert_eq!(
        host_rewrite_specifier("h.example"),
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "h.example".into()
        ))
    );
    assert_eq!(host_rewrite_specifier(""), None);
}

#[test]
fn timeout_in_milliseconds_and_zero_is_none() {
    let t = timeout(&pb::Timeout {
        request_timeout_ms: 1500,
    })
    .expect("timeout");
    assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    assert_eq!(timeout(&pb::Timeout { request_timeout_ms: 0 }), None);
}

#[test]
fn request_redirect_codes() {
    let redirect = |code| {
        request_redirect(&pb::RedirectAction {
            response_code: code,
            scheme_redirect: "https".into(),
            path_rewrite: Some(pb::redirect_action::PathRewrite::PrefixRewrite("/new".into())),
            ..Default::default()
        })
    };
    assert_eq!(
        redirect(302).response_code,
        redirect_action::RedirectResponseCode::Found as i32
    );
    assert_eq!(
        redirect(0).response_code,
        redirect_action::RedirectResponseCode::MovedPermanently as i32
    );
    assert_eq!(
        redirect(308).path_rewrite_specifier,
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite("/new".into()))
    );
    assert_eq!(
        redirect(308).scheme_rewrite_specifier,
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
}

#[test]
fn merge_lets_later_single_values_win_and_accumulates_headers() {
    let filters = vec![
        mk_filter(
            Some("policy"),
            Kind::Timeout(pb::Timeout {
                request_timeout_ms: 5000,
            }),
        ),
        mk_filter(Some("policy"), mk_rewrite(Some("/policy"), Some("policy.example"))),
        mk_filter(
            Some("policy"),
            Kind::RequestHeaderModifier(pb::HeaderModifier {
                headers_to_add: vec![mk_header("x-policy", "p", true)],
                headers_to_remove: Vec::new(),
            }),
        ),
        mk_filter(None, mk_rewrite(Some("/rule"), None)),
        mk_filter(
            None,
            Kind::RequestHeaderModifier(pb::HeaderModifier {
                headers_to_add: vec![mk_header("x-rule", "r", false)],
                headers_to_remove: vec!["x-gone".into()],
            }),
        ),
    ];
    let effects = merge(&filters);
    assert_eq!(effects.prefix_rewrite, "/rule");
    assert_eq!(effects.host_rewrite, "policy.example");
    assert_eq!(effects.timeout.map(|t| t.seconds), Some(5));
    let added: Vec<&str> = effects
        .headers
        .request_headers_to_add
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| h.key.as_str()))
        .collect();
    assert_eq!(added, ["x-policy", "x-rule"]);
    assert_eq!(effects.headers.request_headers_to_remove, ["x-gone"]);
    assert!(!effects.fails);
    assert_eq!(effects.redirect, None);
}

#[test]
fn merge_takes_the_last_wasm_list_and_redirect_and_any_error() {
    let wasm = |name: &str| {
        Kind::Wasm(pb::WasmFilters {
            filters: vec![pb::WasmFilter {
                name: name.into(),
                ..Default::default()
            }],
        })
    };
    let redirect = |host: &str| {
        Kind::RequestRedirect(pb::RedirectAction {
            host_redirect: host.into(),
            ..Default::default()
        })
    };
    let filters = vec![
        mk_filter(Some("policy"), wasm("first")),
        mk_filter(None, redirect("a.example")),
        mk_filter(Some("ext"), wasm("second")),
        mk_filter(None, redirect("b.example")),
    ];
    let effects = merge(&filters);
    let names: Vec<&str> = effects.wasm_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["second"]);
    assert_eq!(effects.redirect.map(|r| r.host_redirect), Some("b.example".into()));
    let mut failing = filters;
    failing.push(mk_filter(
        None,
        Kind::Error(pb::FilterError {
            reason: "UnsupportedValue".into(),
            message: "filter Cors is not supported yet".into(),
        }),
    ));
    assert!(merge(&failing).fails);
}

#[test]
fn answer_is_error_then_redirect_then_own_action() {
    let own = pb::route::Action::DirectResponseAction(pb::DirectResponseAction {
        status: 200,
        body: String::new(),
    });
    let redirect = mk_filter(
        None,
        Kind::RequestRedirect(pb::RedirectAction {
            host_redirect: "r.example".into(),
            ..Default::default()
        }),
    );
    let error = mk_filter(
        None,
        Kind::Error(pb::FilterError {
            reason: "UnsupportedValue".into(),
            message: "no".into(),
        }),
    );
    let plain = merge(&[]);
    assert_eq!(answer(&plain, Some(&own)), Answer::Own(&own));
    assert_eq!(answer(&plain, None), Answer::InternalError);
    let redirected = merge(std::slice::from_ref(&redirect));
    assert!(matches!(answer(&redirected, Some(&own)), Answer::Redirect(r) if r.host_redirect == "r.example"));
    assert!(matches!(answer(&redirected, None), Answer::Redirect(_)));
    let failing = merge(&[redirect, error]);
    assert_eq!(answer(&failing, Some(&own)), Answer::InternalError);
}

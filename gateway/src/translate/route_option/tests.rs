//! RouteOption options → typed filters, one test per option.
use kgw_common::{policy::RouteOption, resources::Index};
use kgw_proto::v1::{self as pb, route_filter::Kind};

use super::*;

/// RouteOption `default/<name>` with `spec` (YAML).
fn mk_route_option(name: &str, spec: &str) -> RouteOption {
    let yaml = format!(
        "apiVersion: gateway.solo.io/v1\nkind: RouteOption\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
    );
    serde_yaml::from_str(&yaml).expect("route option yaml")
}

#[test]
fn timeout_is_a_timeout_filter_or_an_error() {
    let good = mk_route_option("t", "{options: {timeout: 250ms}}");
    assert_eq!(
        timeout(&good),
        Some(Kind::Timeout(pb::Timeout {
            request_timeout_ms: 250
        }))
    );
    let bad = mk_route_option("t", "{options: {timeout: soon}}");
    let Some(Kind::Error(error)) = timeout(&bad) else {
        panic!("not an error");
    };
    assert!(
        error.message.contains("\"soon\" is not a duration"),
        "{}",
        error.message
    );
    assert_eq!(timeout(&mk_route_option("t", "{options: {}}")), None);
}

#[test]
fn prefix_and_host_rewrites_set_one_field_each() {
    assert_eq!(prefix_rewrite("/v2").prefix_rewrite.as_deref(), Some("/v2"));
    assert_eq!(prefix_rewrite("/v2").host_rewrite, None);
    assert_eq!(host_rewrite("h.example").host_rewrite.as_deref(), Some("h.example"));
    assert_eq!(host_rewrite("h.example").prefix_rewrite, None);
}

#[test]
fn header_manipulation_splits_request_and_response_and_appends_by_default() {
    let option = mk_route_option(
        "h",
        "{options: {headerManipulation: {requestHeadersToAdd: [{header: {key: a, value: '1'}}, {header: {key: b, value: '2'}, append: false}], responseHeadersToRemove: [server]}}}",
    );
    let headers = option.spec.options.header_manipulation.as_ref().expect("headers");
    let (request, response) = header_manipulation(headers);
    let request = request.expect("request part");
    assert_eq!(
        request.headers_to_add,
        vec![header("a", "1", true), header("b", "2", false)]
    );
    assert_eq!(
        response.expect("response part").headers_to_remove,
        vec!["server".to_string()]
    );
    let (request, response) = header_manipulation(&Default::default());
    assert_eq!((request, response), (None, None));
}

#[test]
fn wasm_lowercases_the_digest() {
    let option = mk_route_option(
        "w",
        "{options: {wasm: {filters: [{name: f, url: 'file:///m.wasm', sha256: AA11, failOpen: true}]}}}",
    );
    let filters = wasm(option.spec.options.wasm.as_ref().expect("wasm")).filters;
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].sha256, "aa11");
    assert!(filters[0].fail_open);
}

#[test]
fn filters_name_the_route_option_and_field() {
    let option = mk_route_option(
        "all",
        "{options: {timeout: 1s, prefixRewrite: /p, hostRewrite: h, wasm: {filters: []}}}",
    );
    let filters = filters(&option, "spec.targetRefs[0]");
    let fields: Vec<&str> = filters.iter().map(|f| f.origin_field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.options.timeout",
            "spec.options.prefixRewrite",
            "spec.options.hostRewrite",
            "spec.options.wasm"
        ]
    );
    assert!(filters.iter().all(|f| {
        f.attached_by == "spec.targetRefs[0]"
            && f.origin
                .as_ref()
                .is_some_and(|o| o.kind == "RouteOption" && o.name == "all")
    }));
}

#[test]
fn targeting_route_takes_whole_route_targets_in_the_same_namespace_only() {
    let mut index = Index::default();
    for (name, spec) in [
        (
            "a",
            "{targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: other}, {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}], options: {timeout: 1s}}",
        ),
        (
            "b",
            "{targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: s}], options: {timeout: 2s}}",
        ),
    ] {
        index
            .route_options
            .insert(("default".into(), name.into()), mk_route_option(name, spec).into());
    }
    let filters = targeting_route("default", "web", &index);
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].attached_by, "spec.targetRefs[1]");
    assert!(targeting_route("elsewhere", "web", &index).is_empty());
}

use envoy_types::pb::envoy::config::route::v3::{Route, RouteMatch, VirtualHost, route_match};
use prost::Message as _;

use super::*;
use crate::xds::canonical::pack_route_configuration;
use crate::xds::snapshot::VIRTUAL_HOST;
use envoy_types::pb::envoy::config::{
    core::v3::{ApiVersion, config_source},
    route::v3::RouteConfiguration,
};

fn host(name: &str, domains: &[&str], prefix: &str) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes: vec![Route {
            name: "r".into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn tables(tables: &[(&str, Vec<VirtualHost>)]) -> TypeResources {
    TypeResources::new(
        tables
            .iter()
            .map(|(name, hosts)| {
                let table = RouteConfiguration {
                    name: name.to_string(),
                    virtual_hosts: hosts.clone(),
                    ..Default::default()
                };
                (name.to_string(), pack_route_configuration(&table))
            })
            .collect(),
    )
}

fn world(b_prefix: &str) -> TypeResources {
    tables(&[
        (
            "listener~8080",
            vec![
                host("a", &["a.example"], "/"),
                host("b", &["*.b.example", "B.Example"], b_prefix),
                host("c", &["c.*"], "/"),
                host("all", &["*"], "/"),
            ],
        ),
        ("listener~8443", vec![host("a", &["a.example"], "/")]),
    ])
}

#[test]
fn tables_lose_their_hosts_and_load_them_over_ads() {
    let routes = world("/");
    let vhds = VhdsResources::new(&routes);
    let table = &vhds.route_tables.items["listener~8080"];
    let table = RouteConfiguration::decode(table.value.as_slice()).expect("a route table");
    assert_eq!(table.name, "listener~8080");
    assert!(table.virtual_hosts.is_empty());
    let source = table.vhds.and_then(|v| v.config_source).expect("vhds config source");
    assert!(matches!(
        source.config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
}

#[test]
fn each_host_is_a_resource_named_after_its_table() {
    let routes = world("/");
    let hosts = VhdsResources::new(&routes).virtual_hosts;
    let names: Vec<&str> = hosts.versions.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "listener~8080/a",
            "listener~8080/all",
            "listener~8080/b",
            "listener~8080/c",
            "listener~8443/a"
        ]
    );
    let any = hosts.resource("listener~8080/b").expect("b");
    assert_eq!(any.type_url, VIRTUAL_HOST);
    let decoded = VirtualHost::decode(any.value.as_slice()).expect("a virtual host");
    let expected = VirtualHost {
        name: "listener~8080/b".into(),
        ..host("b", &["*.b.example", "B.Example"], "/")
    };
    assert_eq!(decoded, expected);
    assert_eq!(hosts.resource("listener~8080/nope"), None);
}

#[test]
fn a_changed_host_changes_only_its_version() {
    let before = VhdsResources::new(&world("/")).virtual_hosts;
    let after = VhdsResources::new(&world("/moved")).virtual_hosts;
    let changed: Vec<&String> = before
        .versions
        .iter()
        .filter(|(name, version)| after.versions.get(name) != Some(*version))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(changed, ["listener~8080/b"]);
    assert_ne!(before.version, after.version);
    // Deterministic: the same tables, the same versions.
    assert_eq!(VhdsResources::new(&world("/")).virtual_hosts.versions, before.versions);
}

#[test]
fn on_demand_names_resolve_as_envoy_matches_domains() {
    let hosts = VhdsResources::new(&world("/")).virtual_hosts;
    let resolve = |name: &str| hosts.lookup(name);
    assert_eq!(resolve("listener~8080"), Lookup::Namespace);
    assert_eq!(
        resolve("listener~8080/a.example"),
        Lookup::Alias(Some("listener~8080/a"))
    );
    assert_eq!(
        resolve("listener~8080/A.example:8080"),
        Lookup::Alias(Some("listener~8080/a"))
    );
    assert_eq!(
        resolve("listener~8080/x.b.example"),
        Lookup::Alias(Some("listener~8080/b"))
    );
    assert_eq!(
        resolve("listener~8080/b.example"),
        Lookup::Alias(Some("listener~8080/b"))
    );
    assert_eq!(resolve("listener~8080/c.org"), Lookup::Alias(Some("listener~8080/c")));
    assert_eq!(resolve("listener~8080/other"), Lookup::Alias(Some("listener~8080/all")));
    assert_eq!(resolve("listener~8443/other"), Lookup::Alias(None));
    assert_eq!(resolve("nope/a.example"), Lookup::Alias(None));
}

#[test]
fn the_longest_wildcard_wins() {
    let routes = tables(&[(
        "t",
        vec![host("short", &["*.example"], "/"), host("long", &["*.a.example"], "/")],
    )]);
    let hosts = VhdsResources::new(&routes).virtual_hosts;
    assert_eq!(hosts.lookup("t/x.a.example"), Lookup::Alias(Some("t/long")));
    assert_eq!(hosts.lookup("t/x.b.example"), Lookup::Alias(Some("t/short")));
}

//! VHDS against a real gRPC client: on delta, route tables come without their virtual hosts,
//! which come one by one as `VirtualHost` resources (a changed route sends its one virtual
//! host), and on-demand names are answered by `aliases`; state of the world keeps whole
//! route tables.
mod xds_client;

use std::{sync::Arc, time::Duration};

use controller::{
    translate::{Settings, translate},
    xds::{
        Snapshot, SnapshotCache,
        snapshot::{ROUTE, VIRTUAL_HOST},
    },
};
use envoy_types::pb::envoy::config::{
    core::v3::config_source::ConfigSourceSpecifier,
    route::v3::{RouteConfiguration, VirtualHost},
};
use kgw_proto::v1 as pb;
use xds_client::{Envoy, Protocol, ROLE, serve};

const TABLE: &str = "listener~8080";

/// A Proxy of one listener whose virtual hosts are `hosts`: (name, domain, path prefix),
/// every route to Upstream `default-echo-80`.
fn snapshot(hosts: &[(&str, &str, &str)]) -> Arc<Snapshot> {
    let hosts: String = hosts
        .iter()
        .map(|(name, domain, prefix)| {
            format!(
                "
    - name: {name}
      domains: ['{domain}']
      routes:
      - name: r
        matchers: [{{prefix: {prefix}}}]
        routeAction: {{single: {{upstream: {{kind: Upstream, namespace: default, name: default-echo-80}}}}}}"
            )
        })
        .collect();
    let hosts = if hosts.is_empty() { " []".to_string() } else { hosts };
    let yaml = format!(
        "
metadata: {{namespace: default, name: gw}}
listeners:
- name: {TABLE}
  bindAddress: 127.0.0.1
  bindPort: 8080
  httpListener:
    virtualHosts:{hosts}
"
    );
    let proxy: pb::Proxy = serde_yaml::from_str(&yaml).expect("proxy yaml");
    let upstream = pb::Upstream {
        metadata: Some(pb::Metadata {
            namespace: "default".into(),
            name: "default-echo-80".into(),
            ..Default::default()
        }),
        upstream_type: Some(pb::upstream::UpstreamType::Static(pb::StaticUpstream {
            hosts: vec![pb::HostPort {
                address: "127.0.0.1".into(),
                port: 9000,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let settings = Settings {
        access_log_addresses: Vec::new(),
        wasm: Default::default(),
        proxy_tls: None,
        secrets: Default::default(),
    };
    let upstreams = [("default.default-echo-80".to_string(), upstream)].into();
    let (resources, problems) = translate(&proxy, &upstreams, &settings);
    assert!(problems.is_empty(), "{problems:?}");
    Arc::new(Snapshot::new(&resources))
}

fn two_hosts(b_prefix: &str) -> Arc<Snapshot> {
    snapshot(&[("a", "a.example", "/"), ("b", "*.b.example", b_prefix)])
}

fn decoded<M: prost::Message + Default>(pushed: &xds_client::Pushed, name: &str) -> M {
    let any = pushed.resources[name].as_ref().expect("a resource with a body");
    M::decode(any.value.as_slice()).expect("decodes")
}

#[tokio::test]
async fn delta_route_tables_load_their_virtual_hosts_one_by_one() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(two_hosts("/")));
    let (addr, stats) = serve(cache.clone()).await;
    let mut envoy = Envoy::connect(addr, Protocol::Delta).await;

    envoy.subscribe(ROUTE, &[TABLE]).await;
    let rds = envoy.next().await;
    let table: RouteConfiguration = decoded(&rds, TABLE);
    assert!(table.virtual_hosts.is_empty(), "{table:?}");
    let source = table.vhds.and_then(|v| v.config_source).expect("vhds");
    assert!(matches!(
        source.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    envoy.ack(&rds).await;

    // Envoy's VHDS watch subscribes to the table's namespace.
    envoy.subscribe(VIRTUAL_HOST, &[TABLE]).await;
    let hosts = envoy.next().await;
    assert_eq!(hosts.type_url, VIRTUAL_HOST);
    assert_eq!(hosts.names, ["listener~8080/a", "listener~8080/b"]);
    let b: VirtualHost = decoded(&hosts, "listener~8080/b");
    assert_eq!(
        (b.name.as_str(), b.domains.as_slice()),
        ("listener~8080/b", &["*.b.example".to_string()][..])
    );
    envoy.ack(&hosts).await;
    envoy.nothing_for(Duration::from_millis(300)).await;

    // A route of b changes: b alone is sent, the route table is not.
    let bytes_before = stats
        .of(ROUTE)
        .response_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    cache.set(ROLE, Some(two_hosts("/moved")));
    let changed = envoy.next().await;
    assert_eq!(
        (changed.type_url.as_str(), changed.names.as_slice()),
        (VIRTUAL_HOST, &["listener~8080/b".to_string()][..])
    );
    assert!(changed.removed.is_empty());
    envoy.ack(&changed).await;
    envoy.nothing_for(Duration::from_millis(300)).await;
    assert_eq!(
        stats
            .of(ROUTE)
            .response_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        bytes_before
    );

    // A new host: one new virtual host. A host gone: removed.
    cache.set(
        ROLE,
        Some(snapshot(&[
            ("a", "a.example", "/"),
            ("b", "*.b.example", "/moved"),
            ("c", "c.example", "/"),
        ])),
    );
    let added = envoy.next().await;
    assert_eq!(added.names, ["listener~8080/c"]);
    envoy.ack(&added).await;
    cache.set(
        ROLE,
        Some(snapshot(&[("b", "*.b.example", "/moved"), ("c", "c.example", "/")])),
    );
    let removed = envoy.next().await;
    assert!(removed.names.is_empty(), "{removed:?}");
    assert_eq!(removed.removed, ["listener~8080/a"]);
    envoy.ack(&removed).await;
    envoy.nothing_for(Duration::from_millis(300)).await;
    assert!(
        stats
            .of(VIRTUAL_HOST)
            .response_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

#[tokio::test]
async fn delta_on_demand_hosts_are_answered_by_alias_or_without_a_body() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(two_hosts("/")));
    let (addr, _) = serve(cache.clone()).await;

    // A host this Envoy has no virtual host for: the one that matches, the name as alias.
    let mut lacking = Envoy::connect(addr, Protocol::Delta).await;
    lacking
        .subscribe(VIRTUAL_HOST, &["listener~8080/x.b.example:8080"])
        .await;
    let answer = lacking.next().await;
    assert_eq!(answer.names, ["listener~8080/b"]);
    assert_eq!(answer.aliases["listener~8080/b"], ["listener~8080/x.b.example:8080"]);
    let b: VirtualHost = decoded(&answer, "listener~8080/b");
    assert_eq!(b.name, "listener~8080/b");

    // As Envoy's VHDS watch subscribes: no names (the legacy wildcard), every table's hosts.
    let mut envoy = Envoy::connect(addr, Protocol::Delta).await;
    envoy.subscribe(VIRTUAL_HOST, &[]).await;
    let all = envoy.next().await;
    assert_eq!(all.names, ["listener~8080/a", "listener~8080/b"]);
    envoy.ack(&all).await;
    // A route miss in a host it has, and a host nothing matches: answers without a body.
    envoy
        .subscribe(
            VIRTUAL_HOST,
            &["listener~8080/x.b.example", "listener~8080/nowhere.example"],
        )
        .await;
    let answer = envoy.next().await;
    assert_eq!(
        answer.names,
        ["listener~8080/nowhere.example", "listener~8080/x.b.example"]
    );
    for name in &answer.names {
        assert_eq!(answer.aliases[name], std::slice::from_ref(name));
        assert!(answer.resources[name].is_none(), "{name} has a body");
    }
    envoy.ack(&answer).await;
    envoy.nothing_for(Duration::from_millis(300)).await;
    // The on-demand names did not end the wildcard: a change still comes.
    cache.set(ROLE, Some(two_hosts("/moved")));
    let changed = envoy.next().await;
    assert_eq!(changed.names, ["listener~8080/b"]);
    assert!(changed.aliases.is_empty());
}

#[tokio::test]
async fn delta_an_empty_table_is_answered_too() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot(&[])));
    let mut envoy = Envoy::start(cache.clone(), Protocol::Delta).await;
    envoy.subscribe(VIRTUAL_HOST, &[TABLE]).await;
    let first = envoy.next().await;
    // Envoy's namespace watch hears only of names in it: an absent one tells it "none".
    assert!(first.names.is_empty());
    assert_eq!(first.removed, ["listener~8080/"]);
    envoy.ack(&first).await;
    cache.set(ROLE, Some(two_hosts("/")));
    let hosts = envoy.next().await;
    assert_eq!(hosts.names, ["listener~8080/a", "listener~8080/b"]);
}

#[tokio::test]
async fn state_of_the_world_route_tables_keep_their_virtual_hosts() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(two_hosts("/")));
    let mut envoy = Envoy::start(cache.clone(), Protocol::StateOfTheWorld).await;
    envoy.subscribe(ROUTE, &[TABLE]).await;
    let rds = envoy.next().await;
    let table: RouteConfiguration = decoded(&rds, TABLE);
    let names: Vec<&str> = table.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(table.vhds.is_none());
}

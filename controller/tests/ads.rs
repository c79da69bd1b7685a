//! The ADS server against a real gRPC client, each scenario on both protocols (state of the
//! world and delta, see [`on_both_protocols!`]): the order and content of responses, ACKs,
//! an endpoint-only change sending only EDS, a NACKed version not being resent, changes
//! coalesced while Envoy is busy, withdrawn resources; then what only delta does.
mod xds_client;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use controller::{
    translate::{Settings, translate},
    xds::{
        Snapshot, SnapshotCache,
        snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE},
    },
};
use envoy_types::pb::envoy::{config::core::v3::Node, service::discovery::v3::DeltaDiscoveryRequest};
use kgw_proto::v1 as pb;
use xds_client::{Envoy, Protocol, ROLE, node, serve};

const ROUTE_TABLE: &str = "listener~8080";
const ECHO_CLUSTER: &str = "default-echo-80_default";

/// A Proxy of one listener (unless `listener` is false) routing `/` to Upstream `upstream`.
fn proxy(upstream: &str, listener: bool) -> pb::Proxy {
    let yaml = format!(
        "
metadata: {{namespace: default, name: gw}}
listeners:
- name: listener~8080
  bindAddress: 127.0.0.1
  bindPort: 8080
  httpListener:
    virtualHosts:
    - name: all
      domains: ['*']
      routes:
      - name: r
        matchers: [{{prefix: /}}]
        routeAction: {{single: {{upstream: {{kind: Upstream, namespace: default, name: {upstream}}}}}}}
"
    );
    let mut proxy: pb::Proxy = serde_yaml::from_str(&yaml).expect("proxy yaml");
    if !listener {
        proxy.listeners.clear();
    }
    proxy
}

/// Upstream `name` (Service `service`) with one endpoint.
fn upstream(name: &str, service: &str, endpoint: &str) -> (String, pb::Upstream) {
    let upstream = pb::Upstream {
        metadata: Some(pb::Metadata {
            namespace: "default".into(),
            name: name.into(),
            ..Default::default()
        }),
        upstream_type: Some(pb::upstream::UpstreamType::Kube(pb::KubeUpstream {
            service_name: service.into(),
            service_namespace: "default".into(),
            service_port: 80,
            endpoints: vec![pb::Endpoint {
                address: endpoint.into(),
                port: 9000,
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    (format!("default.{name}"), upstream)
}

fn translated(proxy: &pb::Proxy, upstreams: BTreeMap<String, pb::Upstream>) -> Arc<Snapshot> {
    let settings = Settings {
        access_log_addresses: Vec::new(),
        wasm: Default::default(),
        proxy_tls: None,
        secrets: Default::default(),
    };
    let (resources, problems) = translate(proxy, &upstreams, &settings);
    assert!(problems.is_empty(), "{problems:?}");
    Arc::new(Snapshot::new(&resources))
}

/// The listener routing to Upstream `default-echo-80`, whose endpoint is `endpoint`.
fn snapshot(endpoint: &str) -> Arc<Snapshot> {
    translated(
        &proxy("default-echo-80", true),
        [upstream("default-echo-80", "echo", endpoint)].into(),
    )
}

on_both_protocols!(serves_subscribes_acks_and_sends_only_what_changed);
async fn serves_subscribes_acks_and_sends_only_what_changed(protocol: Protocol) {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let (addr, stats) = serve(cache.clone()).await;
    let mut envoy = Envoy::connect(addr, protocol).await;

    envoy.subscribe(CLUSTER, &[]).await;
    let cds = envoy.next().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(cds.names, [ECHO_CLUSTER], "one cluster per upstream a route uses");
    envoy.subscribe(LISTENER, &[]).await;
    let lds = envoy.next().await;
    assert_eq!(lds.type_url, LISTENER);
    envoy.ack(&cds).await;
    envoy.ack(&lds).await;
    envoy.subscribe(ENDPOINT, &[ECHO_CLUSTER]).await;
    let eds = envoy.next().await;
    assert_eq!((eds.type_url.as_str(), eds.names.len()), (ENDPOINT, 1));
    envoy.subscribe(ROUTE, &[ROUTE_TABLE]).await;
    let rds = envoy.next().await;
    assert_eq!((rds.type_url.as_str(), rds.names.len()), (ROUTE, 1));
    envoy.ack(&eds).await;
    envoy.ack(&rds).await;
    envoy.nothing_for(Duration::from_millis(300)).await;

    // An endpoint change: only EDS is sent.
    cache.set(ROLE, Some(snapshot("10.0.0.2")));
    let eds2 = envoy.next().await;
    assert_eq!(eds2.type_url, ENDPOINT);
    assert_eq!(eds2.names, [ECHO_CLUSTER]);
    assert_ne!(eds2.version, eds.version);
    envoy.nothing_for(Duration::from_millis(300)).await;

    // Envoy rejects it: that version is not sent again, and the stream carries on.
    envoy.nack(&eds2, "bad endpoint").await;
    envoy.nothing_for(Duration::from_millis(300)).await;
    // A newer version is sent.
    cache.set(ROLE, Some(snapshot("10.0.0.3")));
    let eds3 = envoy.next().await;
    assert_eq!(eds3.type_url, ENDPOINT);
    assert_ne!(eds3.version, eds2.version);

    let counted = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted(&stats.responses), 6);
    assert_eq!(counted(&stats.acks), 4);
    assert_eq!(counted(&stats.nacks), 1);
    assert_eq!(counted(&stats.of(ENDPOINT).nacks), 1);
    assert_eq!(counted(&stats.streams_open), 1);
}

on_both_protocols!(a_node_without_role_is_refused);
async fn a_node_without_role_is_refused(protocol: Protocol) {
    let mut envoy = Envoy::start(SnapshotCache::default(), protocol).await;
    let anonymous = Node {
        id: "no-role".into(),
        ..Default::default()
    };
    envoy.subscribe_as(anonymous, CLUSTER, &[]).await;
    let error = envoy.error().await;
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("role"), "{error}");
}

on_both_protocols!(changes_while_envoy_is_busy_are_coalesced_into_the_latest);
async fn changes_while_envoy_is_busy_are_coalesced_into_the_latest(protocol: Protocol) {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let mut envoy = Envoy::start(cache.clone(), protocol).await;
    envoy.subscribe(ENDPOINT, &[ECHO_CLUSTER]).await;
    let first = envoy.next().await;

    // Envoy has not answered `first` yet: two more changes are held back...
    cache.set(ROLE, Some(snapshot("10.0.0.2")));
    cache.set(ROLE, Some(snapshot("10.0.0.3")));
    envoy.nothing_for(Duration::from_millis(300)).await;
    // ...and its ACK brings only the latest.
    envoy.ack(&first).await;
    let latest = envoy.next().await;
    assert_eq!(
        latest.version,
        snapshot("10.0.0.3").version(ENDPOINT).expect("eds").to_string()
    );
    envoy.ack(&latest).await;
    envoy.nothing_for(Duration::from_millis(300)).await;
}

on_both_protocols!(withdrawn_clusters_and_route_tables_leave_envoy);
async fn withdrawn_clusters_and_route_tables_leave_envoy(protocol: Protocol) {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let mut envoy = Envoy::start(cache.clone(), protocol).await;
    envoy.subscribe(CLUSTER, &[]).await;
    let cds = envoy.next().await;
    envoy.ack(&cds).await;
    envoy.subscribe(ROUTE, &[ROUTE_TABLE]).await;
    let rds = envoy.next().await;
    assert_eq!(rds.names, [ROUTE_TABLE]);
    envoy.ack(&rds).await;

    // The route moves to another upstream: its cluster replaces the old one.
    let other = [upstream("default-other-80", "other", "10.0.0.9")].into();
    cache.set(ROLE, Some(translated(&proxy("default-other-80", true), other)));
    let cds2 = envoy.next().await;
    assert_eq!(cds2.names, ["default-other-80_default"]);
    if protocol == Protocol::Delta {
        assert_eq!(cds2.removed, [ECHO_CLUSTER]);
    }
    envoy.ack(&cds2).await;
    if protocol == Protocol::StateOfTheWorld {
        // (On delta the table is the same: its virtual host changed, over VHDS.)
        let rds2 = envoy.next().await;
        assert_eq!(rds2.names, [ROUTE_TABLE], "the table now names the other cluster");
        envoy.ack(&rds2).await;
    } else {
        envoy.nothing_for(Duration::from_millis(300)).await;
    }

    // The listener goes: so does its route table.
    let other = [upstream("default-other-80", "other", "10.0.0.9")].into();
    cache.set(ROLE, Some(translated(&proxy("default-other-80", false), other)));
    let cds3 = envoy.next().await;
    assert!(cds3.names.is_empty(), "{cds3:?}");
    envoy.ack(&cds3).await;
    let rds3 = envoy.next().await;
    assert!(rds3.names.is_empty(), "{rds3:?}");
    if protocol == Protocol::Delta {
        assert_eq!(rds3.removed, [ROUTE_TABLE]);
    }
}

/// Delta only: a reconnecting Envoy names the versions it has and gets only what differs.
#[tokio::test]
async fn delta_reconnect_sends_only_what_envoy_lacks() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let (addr, _) = serve(cache.clone()).await;
    let mut first = Envoy::connect(addr, Protocol::Delta).await;
    first.subscribe(ENDPOINT, &[ECHO_CLUSTER]).await;
    let eds = first.next().await;
    assert_eq!(eds.names, [ECHO_CLUSTER]);
    drop(first);

    let mut again = Envoy::connect(addr, Protocol::Delta).await;
    again
        .send_delta(DeltaDiscoveryRequest {
            node: Some(node()),
            type_url: ENDPOINT.into(),
            resource_names_subscribe: vec![ECHO_CLUSTER.into()],
            initial_resource_versions: eds.resource_versions.clone().into_iter().collect(),
            ..Default::default()
        })
        .await;
    let nothing_new = again.next().await;
    assert!(
        nothing_new.names.is_empty() && nothing_new.removed.is_empty(),
        "{nothing_new:?}"
    );
    again.ack(&nothing_new).await;
    cache.set(ROLE, Some(snapshot("10.0.0.2")));
    let changed = again.next().await;
    assert_eq!(changed.names, [ECHO_CLUSTER]);
    assert_ne!(changed.resource_versions, eds.resource_versions);
}

/// Delta only: a name that does not exist is reported removed, once, so Envoy stops
/// waiting for it; unsubscribing it is quiet.
#[tokio::test]
async fn delta_reports_a_missing_name_once() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let mut envoy = Envoy::start(cache.clone(), Protocol::Delta).await;
    envoy.subscribe(ROUTE, &["nope", ROUTE_TABLE]).await;
    let rds = envoy.next().await;
    assert_eq!(rds.names, [ROUTE_TABLE]);
    assert_eq!(rds.removed, ["nope"]);
    envoy.ack(&rds).await;
    cache.set(ROLE, Some(snapshot("10.0.0.2")));
    envoy.nothing_for(Duration::from_millis(300)).await;
    envoy
        .send_delta(DeltaDiscoveryRequest {
            type_url: ROUTE.into(),
            resource_names_unsubscribe: vec!["nope".into()],
            ..Default::default()
        })
        .await;
    envoy.nothing_for(Duration::from_millis(300)).await;
}

//! A real Envoy whose EDS is REST (`api_type: REST`) against the controller's REST xDS server
//! (9976): the endpoints of its one cluster reach it only through
//! `POST /v3/discovery:endpoints`, polled every 0.2 s. Requests through Envoy reach the echo
//! backend the snapshot names, and follow it when the snapshot changes.
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, ensure};
use controller::{
    rest_xds,
    translate::EnvoyResources,
    xds::{Snapshot, SnapshotCache},
};
use envoy_types::pb::envoy::config::{
    core::v3::{Address, SocketAddress, address, socket_address},
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
};
use kgw_common::{
    serve::{HttpOptions, Listener, ServerTls, serve_http},
    shutdown::Shutdown,
};
use kgw_harness::{Process, StatusCode, addr, ensure_envoy, get, spawn_echo, wait_for};

const ROLE: &str = "default~rest";
const CLUSTER: &str = "echo";

/// The snapshot of [`ROLE`]: the endpoints of cluster `echo`, one backend.
fn snapshot(backend: SocketAddr) -> Arc<Snapshot> {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: backend.ip().to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(backend.port()))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let resources = EnvoyResources {
        endpoints: vec![ClusterLoadAssignment {
            cluster_name: CLUSTER.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Arc::new(Snapshot::new(&resources))
}

/// A static listener routing everything to cluster `echo`, whose endpoints come from REST
/// EDS at `rest`.
fn bootstrap(admin: SocketAddr, listen: SocketAddr, rest: SocketAddr) -> String {
    format!(
        r#"node:
  id: rest-eds-test
  cluster: rest
  metadata: {{ role: "{ROLE}" }}
admin:
  address: {{ socket_address: {{ address: "{admin_ip}", port_value: {admin_port} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: "{ip}", port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {CLUSTER} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: {CLUSTER}
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      eds_config:
        resource_api_version: V3
        initial_fetch_timeout: 1s
        api_config_source:
          api_type: REST
          transport_api_version: V3
          cluster_names: [rest_xds]
          refresh_delay: 0.2s
  - name: rest_xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: rest_xds
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: "{rest_ip}", port_value: {rest_port} }} }}
"#,
        admin_ip = admin.ip(),
        admin_port = admin.port(),
        ip = listen.ip(),
        port = listen.port(),
        rest_ip = rest.ip(),
        rest_port = rest.port(),
    )
}

/// Waits until a request through Envoy answers 200 from `backend`.
async fn reaches(url: &str, backend: &str, envoy_log: &Path) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(30), || async {
        let response = get(url, None).await?;
        ensure!(
            response.status == StatusCode::OK && response.header("x-backend") == backend,
            "{} from {:?}: {}",
            response.status,
            response.header("x-backend"),
            response.text()
        );
        Ok(())
    })
    .await
    .with_context(|| {
        format!(
            "Envoy never routed to {backend}; its log:\n{}",
            kgw_harness::process::log_tail(envoy_log, 30)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_endpoints_over_rest_xds() -> anyhow::Result<()> {
    let lease = addr::allocate()?;
    let layout = lease.layout.clone();
    let rest = SocketAddr::new(layout.controller, 9976);
    let cache = SnapshotCache::default();
    let shutdown = Shutdown::new();
    // Plain text: this test is about REST subscriptions, not about mTLS (which the e2e
    // test `controller_ports` covers on REST xDS).
    let listener = Listener::bind("REST xDS", rest, ServerTls::Off).await?;
    let server = tokio::spawn(serve_http(
        listener,
        rest_xds::RestXds::new(cache.clone()),
        HttpOptions::default(),
        shutdown.clone(),
    ));
    let _echo1 = spawn_echo(layout.backend(1), "echo-1").await?;
    let _echo2 = spawn_echo(layout.backend(2), "echo-2").await?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, bootstrap(layout.envoy_admin(), layout.envoy_http(), rest))?;
    let log = dir.path().join("envoy.log");
    let mut envoy = Process::new(
        "envoy",
        ensure_envoy()?,
        kgw_harness::envoy::args(&config, "info"),
        &log,
    );
    envoy.start()?;
    let url = format!("http://{}/anything", layout.envoy_http());

    // No snapshot for the role yet: REST answers 404, Envoy has no endpoints (its listener
    // starts after the 1 s initial fetch timeout).
    let no_endpoints = wait_for(Duration::from_secs(30), || async {
        let response = get(&url, None).await?;
        ensure!(
            response.status == StatusCode::SERVICE_UNAVAILABLE,
            "got {}",
            response.status
        );
        Ok(())
    })
    .await;
    no_endpoints.with_context(|| format!("Envoy's log:\n{}", kgw_harness::process::log_tail(&log, 30)))?;

    cache.set(ROLE, Some(snapshot(layout.backend(1))));
    reaches(&url, "echo-1", &log).await?;

    // A new version moves the traffic; the unchanged polls in between were 304s.
    cache.set(ROLE, Some(snapshot(layout.backend(2))));
    reaches(&url, "echo-2", &log).await?;
    let clusters = get(&format!("http://{}/clusters", layout.envoy_admin()), None).await?;
    ensure!(
        clusters.text().contains(&format!("{CLUSTER}::{}::", layout.backend(2))),
        "Envoy's /clusters does not list {}:\n{}",
        layout.backend(2),
        clusters.text()
    );
    let stats = get(
        &format!(
            "http://{}/stats?filter=^cluster\\.{CLUSTER}\\.update_",
            layout.envoy_admin()
        ),
        None,
    )
    .await?;
    let stat = |name: &str| -> u64 {
        stats
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cluster.{CLUSTER}.{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    ensure!(stat("update_success") >= 2, "EDS updates: {}", stats.text());
    ensure!(
        stat("update_rejected") == 0,
        "Envoy rejected a REST response: {}",
        stats.text()
    );

    envoy.stop(Duration::from_secs(5)).await?;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), server).await??;
    Ok(())
}

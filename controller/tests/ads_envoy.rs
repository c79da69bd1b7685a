//! A real Envoy on the bootstrap of `controller bootstrap` against the ADS server, on each
//! protocol (state of the world: `GRPC`; incremental: `DELTA_GRPC`): a route answers 200,
//! an edit moves it, a removal ends it and takes its cluster out of Envoy, and Envoy
//! rejects nothing on the way. On delta the virtual hosts come over VHDS.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use controller::{
    bootstrap::{BootstrapArgs, bootstrap},
    translate::{Settings, translate},
    xds::{
        Snapshot, SnapshotCache,
        ads::{AdsService, XdsStats},
        snapshot::VIRTUAL_HOST,
    },
};
use kgw_harness::{Process, StatusCode, addr, ensure_envoy, get, spawn_echo, wait_for};
use kgw_proto::v1 as pb;

const ROLE: &str = "default~gw";
const ECHO_CLUSTER: &str = "default-echo-80_default";

/// A Proxy listening on `listen`: `/health` answers 200 itself, and `echo_prefix` (if any)
/// routes to the Upstream `default-echo-80`.
fn proxy(listen: SocketAddr, echo_prefix: Option<&str>) -> pb::Proxy {
    let echo_route = echo_prefix
        .map(|prefix| {
            format!(
                "
      - name: echo
        matchers: [{{prefix: {prefix}}}]
        routeAction: {{single: {{upstream: {{kind: Upstream, namespace: default, name: default-echo-80}}}}}}"
            )
        })
        .unwrap_or_default();
    let yaml = format!(
        "
metadata: {{namespace: default, name: gw}}
listeners:
- name: listener~http
  bindAddress: {ip}
  bindPort: {port}
  httpListener:
    virtualHosts:
    - name: all
      domains: ['*']
      routes:
      - name: health
        matchers: [{{exact: /health}}]
        directResponseAction: {{status: 200, body: ok}}{echo_route}
",
        ip = listen.ip(),
        port = listen.port(),
    );
    serde_yaml::from_str(&yaml).expect("proxy yaml")
}

/// The Upstream `default-echo-80`: one endpoint, `backend`.
fn upstreams(backend: SocketAddr) -> BTreeMap<String, pb::Upstream> {
    let upstream = pb::Upstream {
        metadata: Some(pb::Metadata {
            namespace: "default".into(),
            name: "default-echo-80".into(),
            ..Default::default()
        }),
        upstream_type: Some(pb::upstream::UpstreamType::Kube(pb::KubeUpstream {
            service_name: "echo".into(),
            service_namespace: "default".into(),
            service_port: 80,
            endpoints: vec![pb::Endpoint {
                address: backend.ip().to_string(),
                port: u32::from(backend.port()),
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    BTreeMap::from([("default.default-echo-80".to_string(), upstream)])
}

fn snapshot(listen: SocketAddr, backend: SocketAddr, echo_prefix: Option<&str>) -> Arc<Snapshot> {
    let settings = Settings {
        access_log_addresses: Vec::new(),
        wasm: Default::default(),
        proxy_tls: None,
        secrets: Default::default(),
    };
    let (resources, problems) = translate(&proxy(listen, echo_prefix), &upstreams(backend), &settings);
    assert!(problems.is_empty(), "{problems:?}");
    Arc::new(Snapshot::new(&resources))
}

/// Waits until GET `url` answers `status`.
async fn answers(url: &str, status: StatusCode, envoy_log: &Path) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(30), || async {
        let response = get(url, None).await?;
        ensure!(
            response.status == status,
            "{url}: {} {}",
            response.status,
            response.text()
        );
        Ok(())
    })
    .await
    .with_context(|| {
        format!(
            "{url} never answered {status}; Envoy's log:\n{}",
            kgw_harness::process::log_tail(envoy_log, 30)
        )
    })
}

/// One Envoy stat from the admin interface (0 if absent).
async fn envoy_stat(admin: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let stats = get(&format!("http://{admin}/stats?filter=^{name}$"), None).await?;
    Ok(stats
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0))
}

async fn route_edit_and_removal(delta: bool) -> anyhow::Result<()> {
    let lease = addr::allocate()?;
    let layout = lease.layout.clone();
    let (listen, backend, admin) = (layout.envoy_http(), layout.backend(1), layout.envoy_admin());
    let cache = SnapshotCache::default();
    let stats = Arc::new(XdsStats::default());
    let listener = tokio::net::TcpListener::bind(layout.xds_addr()).await?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdsService::new(cache.clone(), stats.clone()).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let _echo = spawn_echo(backend, "echo").await?;

    let args = BootstrapArgs {
        node_id: format!("ads-envoy-{}", layout.id()),
        node_cluster: "gw".into(),
        role: ROLE.into(),
        xds_addr: layout.xds_addr().to_string(),
        admin_addr: admin.to_string(),
        proxy_tls_dir: None,
        proxy_sds_dir: None,
        write_sds: false,
        delta,
    };
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("envoy.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap(&args, true)?)?)?;
    let log = dir.path().join("envoy.log");
    let mut envoy = Process::new(
        "envoy",
        ensure_envoy()?,
        kgw_harness::envoy::args(&config, "info"),
        &log,
    );
    envoy.start()?;

    // A route to the echo backend.
    cache.set(ROLE, Some(snapshot(listen, backend, Some("/echo"))));
    answers(&format!("http://{listen}/echo/hi"), StatusCode::OK, &log).await?;
    let echoed = get(&format!("http://{listen}/echo/hi"), None).await?;
    ensure!(echoed.header("x-backend") == "echo", "{:?}", echoed.header("x-backend"));

    // An edit: the route moves.
    cache.set(ROLE, Some(snapshot(listen, backend, Some("/moved"))));
    answers(&format!("http://{listen}/moved/hi"), StatusCode::OK, &log).await?;
    answers(&format!("http://{listen}/echo/hi"), StatusCode::NOT_FOUND, &log).await?;

    // A removal: the route goes, and with it the only use of the echo cluster.
    cache.set(ROLE, Some(snapshot(listen, backend, None)));
    answers(&format!("http://{listen}/moved/hi"), StatusCode::NOT_FOUND, &log).await?;
    answers(&format!("http://{listen}/health"), StatusCode::OK, &log).await?;
    wait_for(Duration::from_secs(30), || async {
        let clusters = get(&format!("http://{admin}/clusters"), None).await?;
        ensure!(
            !clusters.text().contains(ECHO_CLUSTER),
            "Envoy still has {ECHO_CLUSTER}"
        );
        Ok(())
    })
    .await?;

    for rejected in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        ensure!(envoy_stat(admin, rejected).await? == 0, "{rejected} is not 0");
    }
    ensure!(stats.nacks.load(Ordering::Relaxed) == 0, "the server counted NACKs");
    ensure!(stats.acks.load(Ordering::Relaxed) > 0, "the server counted no ACK");
    // On delta the virtual hosts came over VHDS, and Envoy took them.
    let vhds = get(&format!("http://{admin}/stats?filter=vhds"), None).await?.text();
    let reloads: u64 = vhds
        .lines()
        .filter(|line| line.contains("config_reload:"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    ensure!(
        (reloads > 0) == delta,
        "VHDS reloads {reloads} (delta: {delta}): {vhds}"
    );
    let virtual_host_acks = stats.of(VIRTUAL_HOST).acks.load(Ordering::Relaxed);
    ensure!(
        (virtual_host_acks > 0) == delta,
        "VirtualHost ACKs: {virtual_host_acks}"
    );
    envoy.stop(Duration::from_secs(5)).await?;
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_on_state_of_the_world_routes_edits_and_removes() -> anyhow::Result<()> {
    route_edit_and_removal(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_on_delta_routes_edits_and_removes() -> anyhow::Result<()> {
    route_edit_and_removal(true).await
}

//! gateway and discovery on the Kubernetes source, against a real kube-apiserver: resources
//! created, updated and deleted through the API reach Envoy; status is written back (read
//! from the API server: conditions, observedGeneration, parentRef, controllerName), once per
//! change; and an API server restart rewrites nothing (no status write, no NATS KV write)
//! while routing keeps working.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kgw_harness::kube::{KubeCluster, apply};
use kgw_harness::manifest::{gateway_yaml, service_yaml};
use kgw_harness::netns::TestHost;
use kgw_harness::system::Source;
use kgw_harness::{Component, Placement, System, SystemConfig, get, wait_for, wait_status};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

const WAIT: Duration = Duration::from_secs(60);
const CONTROLLER_NAME: &str = "kgateway.dev/kgateway";
/// Long enough for a write that was going to happen to have happened.
const QUIET: Duration = Duration::from_secs(3);

fn crd_dir() -> PathBuf {
    apply::chart_crd_dir()
}

async fn apply(cluster: &KubeCluster, yaml: &str) -> Result<()> {
    apply::apply_yaml(&cluster.client(), yaml).await
}

async fn delete(cluster: &KubeCluster, yaml: &str) -> Result<()> {
    apply::delete_yaml(&cluster.client(), yaml).await
}

/// The Gateway API CRDs (experimental channel) and our RouteOption CRD, established.
async fn install_crds(cluster: &KubeCluster) -> Result<()> {
    apply::install_crds(&cluster.client(), &crd_dir()).await
}

async fn install_crds_from(cluster: &KubeCluster, paths: &[PathBuf]) -> Result<()> {
    apply::install_crds_from(&cluster.client(), paths).await
}

const ROUTE_OPTION: &str = "apiVersion: gateway.solo.io/v1
kind: RouteOption
metadata: {name: headers, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo}]
  options:
    headerManipulation:
      responseHeadersToAdd: [{header: {key: x-policy, value: kgw}, append: false}]
";

fn route_yaml(name: &str, prefix: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs: [{{name: {service}, port: 80}}]
"
    )
}

fn route_api(cluster: &KubeCluster) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    Api::namespaced_with(cluster.client(), "default", &ar)
}

fn gateway_api(cluster: &KubeCluster) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
        "gateways",
    );
    Api::namespaced_with(cluster.client(), "default", &ar)
}

fn class_api(cluster: &KubeCluster) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass"),
        "gatewayclasses",
    );
    Api::all_with(cluster.client(), &ar)
}

/// `conditions[]` as type → (status, observedGeneration).
fn conditions(value: &serde_json::Value) -> BTreeMap<String, (String, i64)> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["observedGeneration"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}

/// Waits until the route's status has our parent entry, Accepted and ResolvedRefs True at
/// the route's current generation; returns that generation.
async fn route_status_current(cluster: &KubeCluster, name: &str) -> Result<i64> {
    let api = route_api(cluster);
    wait_for(WAIT, || async {
        let route = api.get(name).await?;
        let generation = route.metadata.generation.unwrap_or_default();
        let parents = &route.data["status"]["parents"];
        let ours = parents
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["controllerName"] == CONTROLLER_NAME)
            .with_context(|| format!("no parent status of ours yet: {parents}"))?;
        ensure!(ours["parentRef"]["name"] == "gw", "parentRef: {}", ours["parentRef"]);
        ensure!(
            ours["parentRef"]["sectionName"] == "http",
            "parentRef: {}",
            ours["parentRef"]
        );
        let found = conditions(&ours["conditions"]);
        for wanted in ["Accepted", "ResolvedRefs"] {
            ensure!(
                found.get(wanted) == Some(&("True".to_string(), generation)),
                "{wanted} at generation {generation}: {found:?}"
            );
        }
        Ok(generation)
    })
    .await
}

/// `kgw_gateway_status_writes_total` per kind (all four kinds reported).
async fn status_writes(system: &System) -> Result<BTreeMap<String, u64>> {
    let out = system.gateway_status_writes().await?;
    ensure!(out.len() == 4, "status write counters: {out:?}");
    Ok(out)
}

/// The last sequence of each of our KV buckets' streams: any write moves it.
async fn kv_sequences(system: &System) -> Result<BTreeMap<&'static str, u64>> {
    let mut out = BTreeMap::new();
    for bucket in [
        kgw_proto::nats::PROXIES_BUCKET,
        kgw_proto::nats::UPSTREAMS_BUCKET,
        kgw_proto::nats::STATUS_BUCKET,
    ] {
        out.insert(bucket, system.kv_last_sequence(bucket).await?);
    }
    Ok(out)
}

/// The watches that logged "watch recovered" (JSON log lines of `c`).
fn recovered_watches(system: &System, c: Component) -> Vec<String> {
    let text = std::fs::read_to_string(system.log_path(c)).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "watch recovered")
        .filter_map(|line| line["fields"]["watch"].as_str().map(str::to_string))
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, kind: &str) -> u64 {
    after.get(kind).copied().unwrap_or_default() - before.get(kind).copied().unwrap_or_default()
}

/// Starts echo backends `echo-1` and `echo-2` in a test host namespace (the API server
/// refuses loopback addresses in EndpointSlices), and Services for them; returns their
/// addresses and the host (dropping it stops them).
async fn backends(cluster: &KubeCluster) -> Result<(Vec<SocketAddr>, TestHost)> {
    let mut host = TestHost::create().context("the echo backends' test host")?;
    let mut addrs = Vec::new();
    for (name, port) in [("echo-1", 9001), ("echo-2", 9002)] {
        let addr = host.spawn_echo(name, port)?;
        apply(cluster, &service_yaml(name, &[addr.ip()], addr.port())).await?;
        addrs.push(addr);
    }
    Ok((addrs, host))
}

/// Gateway `default/gw` whose listener takes only `hostname`.
fn gateway_with_hostname(hostname: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: kgateway
  listeners: [{{name: http, protocol: HTTP, port: 8080, hostname: {hostname}}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_routes_and_writes_status_once() -> Result<()> {
    let mut cluster = KubeCluster::start().await?;
    install_crds(&cluster).await?;
    let lease = kgw_harness::addr::allocate()?;
    apply(&cluster, &gateway_yaml()).await?;
    let (addrs, _host) = backends(&cluster).await?;
    let system = System::start(SystemConfig {
        source: Source::Kubernetes {
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        },
        placement: Placement::Lease(lease),
        // JSON logs: the test reads when the watches have recovered from a restart.
        env: vec![("KGW_LOG_FORMAT".into(), "json".into())],
        ..Default::default()
    })
    .await?;
    let url = system.url("/echo/hello");

    // Create: the first 200, from echo-1.
    let created = Instant::now();
    apply(&cluster, &route_yaml("echo", "/echo", "echo-1")).await?;
    let first = wait_status(&url, None, 200, WAIT).await?;
    println!("HTTPRoute create → first 200: {:?}", created.elapsed());
    assert_eq!(first.header("x-backend"), "echo-1");

    // Status, read back from the API server.
    let generation = route_status_current(&cluster, "echo").await?;
    assert_eq!(generation, 1);
    wait_for(WAIT, || async {
        let class = class_api(&cluster).get("kgateway").await?;
        let found = conditions(&class.data["status"]["conditions"]);
        ensure!(
            found.get("Accepted") == Some(&("True".into(), 1)),
            "GatewayClass: {found:?}"
        );
        let features = &class.data["status"]["supportedFeatures"];
        ensure!(
            features
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["name"] == "HTTPRoute")),
            "supportedFeatures: {features}"
        );
        let gateway = gateway_api(&cluster).get("gw").await?;
        let found = conditions(&gateway.data["status"]["conditions"]);
        ensure!(found.get("Accepted") == Some(&("True".into(), 1)), "Gateway: {found:?}");
        ensure!(
            found.get("Programmed") == Some(&("True".into(), 1)),
            "Gateway: {found:?}"
        );
        let listener = &gateway.data["status"]["listeners"][0];
        ensure!(
            listener["name"] == "http" && listener["attachedRoutes"] == 1,
            "listener: {listener}"
        );
        ensure!(
            listener["supportedKinds"][0]["kind"] == "HTTPRoute",
            "listener: {listener}"
        );
        Ok(())
    })
    .await?;

    // Update: routing changes, and the route's status is written once (its generation);
    // the Gateway (same attached routes) and the GatewayClass are not written.
    tokio::time::sleep(QUIET).await;
    let before = status_writes(&system).await?;
    let updated = Instant::now();
    apply(&cluster, &route_yaml("echo", "/echo", "echo-2")).await?;
    wait_for(WAIT, || async {
        let resp = get(&url, None).await?;
        ensure!(
            resp.header("x-backend") == "echo-2",
            "still {}",
            resp.header("x-backend")
        );
        Ok(())
    })
    .await?;
    println!("HTTPRoute update → routed to the new backend: {:?}", updated.elapsed());
    assert_eq!(route_status_current(&cluster, "echo").await?, 2);
    tokio::time::sleep(QUIET).await;
    let after = status_writes(&system).await?;
    println!("status writes for one route change: {before:?} → {after:?}");
    assert_eq!(
        delta(&before, &after, "HTTPRoute"),
        1,
        "one write for the changed route"
    );
    assert_eq!(delta(&before, &after, "Gateway"), 0, "the Gateway did not change");
    assert_eq!(
        delta(&before, &after, "GatewayClass"),
        0,
        "the GatewayClass did not change"
    );

    // A RouteOption on the route: it applies (a response header) and reports per Gateway.
    apply(&cluster, ROUTE_OPTION).await?;
    wait_for(WAIT, || async {
        let resp = get(&url, None).await?;
        ensure!(resp.header("x-policy") == "kgw", "no header from the RouteOption yet");
        Ok(())
    })
    .await?;
    wait_for(WAIT, || async {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.solo.io", "v1", "RouteOption"),
            "routeoptions",
        );
        let option = Api::<DynamicObject>::namespaced_with(cluster.client(), "default", &ar)
            .get("headers")
            .await?;
        let ancestors = &option.data["status"]["ancestors"];
        let ours = ancestors
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["controllerName"] == CONTROLLER_NAME)
            .with_context(|| format!("no ancestor status of ours yet: {ancestors}"))?;
        ensure!(
            ours["ancestorRef"]["name"] == "gw" && ours["ancestorRef"]["kind"] == "Gateway",
            "{ours}"
        );
        let found = conditions(&ours["conditions"]);
        ensure!(found.get("Accepted") == Some(&("True".to_string(), 1)), "{found:?}");
        Ok(())
    })
    .await?;

    // The API server restarts: the watchers resume or relist, nothing is rewritten.
    tokio::time::sleep(QUIET).await;
    let after = status_writes(&system).await?;
    let sequences = kv_sequences(&system).await?;
    let route_version = route_api(&cluster).get("echo").await?.metadata.resource_version;
    let restarted = Instant::now();
    cluster.restart_apiserver().await?;
    // Every watch (gateway: 6 kinds, discovery: 2) has failed and come back (a relist:
    // the new API server's watch cache finds our resourceVersions too old).
    wait_for(WAIT, || async {
        let gateway = recovered_watches(&system, Component::Gateway);
        let discovery = recovered_watches(&system, Component::Discovery);
        ensure!(
            gateway.len() >= 6 && discovery.len() >= 2,
            "recovered so far: gateway {gateway:?}, discovery {discovery:?}"
        );
        Ok(())
    })
    .await?;
    println!("API server restart → every watch back: {:?}", restarted.elapsed());
    tokio::time::sleep(QUIET).await;
    assert_eq!(wait_status(&url, None, 200, WAIT).await?.header("x-backend"), "echo-2");
    assert_eq!(
        status_writes(&system).await?,
        after,
        "no status rewritten after the restart"
    );
    let after_restart = kv_sequences(&system).await?;
    assert_eq!(
        after_restart, sequences,
        "no KV write after the restart: {sequences:?} → {after_restart:?}"
    );
    assert_eq!(
        route_api(&cluster).get("echo").await?.metadata.resource_version,
        route_version,
        "the route was not written to"
    );
    // ...and the watchers are live again: a new route is served.
    apply(&cluster, &route_yaml("other", "/other", "echo-1")).await?;
    let other = wait_status(&system.url("/other/x"), None, 200, WAIT).await?;
    assert_eq!(other.header("x-backend"), "echo-1");
    route_status_current(&cluster, "other").await?;

    // Delete: 404.
    delete(&cluster, &route_yaml("echo", "/echo", "echo-2")).await?;
    wait_status(&url, None, 404, WAIT).await?;

    // Gateway update: its listener now takes one hostname only (generation 2 in status).
    let other_url = system.url("/other/x");
    apply(&cluster, &gateway_with_hostname("gw.example")).await?;
    wait_status(&other_url, None, 404, WAIT).await?;
    wait_status(&other_url, Some("gw.example"), 200, WAIT).await?;
    wait_for(WAIT, || async {
        let gateway = gateway_api(&cluster).get("gw").await?;
        let found = conditions(&gateway.data["status"]["conditions"]);
        ensure!(found.get("Accepted") == Some(&("True".into(), 2)), "Gateway: {found:?}");
        Ok(())
    })
    .await?;
    // EndpointSlice update: echo-1's endpoint is now echo-2's address.
    apply(&cluster, &service_yaml("echo-1", &[addrs[1].ip()], addrs[1].port())).await?;
    wait_for(WAIT, || async {
        let resp = get(&other_url, Some("gw.example")).await?;
        ensure!(
            resp.header("x-backend") == "echo-2",
            "still {}",
            resp.header("x-backend")
        );
        Ok(())
    })
    .await?;
    // Service (and EndpointSlice) delete: the route's backend is gone, 500.
    delete(&cluster, &service_yaml("echo-1", &[addrs[1].ip()], addrs[1].port())).await?;
    wait_status(&other_url, Some("gw.example"), 500, WAIT).await?;
    let mut system = system;
    system.check_alive()?;
    if let Some(problem) = system.exited().first() {
        bail!("{problem:?} exited");
    }
    Ok(())
}

/// Resident memory of a process, from /proc (kB → MiB).
fn rss_mib(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// At scale (`KGW_KUBE_ROUTES`, default 1,000 HTTPRoutes through the API server): the time
/// from one more route's create to its first 200, and one status write for a route change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_at_scale() -> Result<()> {
    let routes: usize = std::env::var("KGW_KUBE_ROUTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let cluster = KubeCluster::start().await?;
    install_crds(&cluster).await?;
    apply(&cluster, &gateway_yaml()).await?;
    let (_, _host) = backends(&cluster).await?;
    let lease = kgw_harness::addr::allocate()?;
    let system = System::start(SystemConfig {
        source: Source::Kubernetes {
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        },
        placement: Placement::Lease(lease),
        ..Default::default()
    })
    .await?;

    let created = Instant::now();
    for i in 0..routes {
        apply(&cluster, &route_yaml(&format!("r{i}"), &format!("/r{i}/"), "echo-1")).await?;
    }
    println!("created {routes} HTTPRoutes in {:?}", created.elapsed());
    let last = format!("/r{}/x", routes - 1);
    wait_status(&system.url(&last), None, 200, WAIT * 3).await?;
    println!("all {routes} served after {:?}", created.elapsed());
    // Every route's status written once.
    wait_for(WAIT * 3, || async {
        let writes = status_writes(&system).await?;
        ensure!(
            writes["HTTPRoute"] >= routes as u64,
            "route status writes so far: {writes:?}"
        );
        Ok(())
    })
    .await?;
    tokio::time::sleep(QUIET).await;

    let mut samples = Vec::new();
    for i in 0..5 {
        let name = format!("new{i}");
        let started = Instant::now();
        apply(&cluster, &route_yaml(&name, &format!("/{name}/"), "echo-2")).await?;
        wait_status(&system.url(&format!("/{name}/x")), None, 200, WAIT).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "at {routes} routes, HTTPRoute create → first 200: median {:?}, max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    tokio::time::sleep(QUIET).await;
    let before = status_writes(&system).await?;
    apply(&cluster, &route_yaml("r0", "/r0-moved/", "echo-2")).await?;
    wait_status(&system.url("/r0-moved/x"), None, 200, WAIT).await?;
    route_status_current(&cluster, "r0").await?;
    tokio::time::sleep(QUIET).await;
    let after = status_writes(&system).await?;
    println!("at {routes} routes, status writes for one route change: {before:?} → {after:?}");
    assert_eq!(delta(&before, &after, "HTTPRoute"), 1);
    assert_eq!(delta(&before, &after, "Gateway"), 0);
    if let Some(rss) = rss_mib(system.pid(Component::Gateway)) {
        println!("gateway RSS with {} routes: {rss:.1} MiB", routes + 5);
    }
    Ok(())
}

/// `problems.config` of the gateway's status bucket (YAML), empty when there is none.
async fn config_problems(system: &System) -> Result<String> {
    let client = system.nats_client().await?;
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value(kgw_proto::nats::STATUS_BUCKET).await?;
    let value = kv.get("problems.config").await?;
    Ok(value
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default())
}

/// Without the RouteOption CRD the gateway still serves the Gateway API kinds and reports
/// the missing kind as a problem; once the CRD is installed the problem clears by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_a_problem_not_an_outage() -> Result<()> {
    let cluster = KubeCluster::start().await?;
    install_crds_from(&cluster, &[crd_dir().join("gateway-api")]).await?;
    apply(&cluster, &gateway_yaml()).await?;
    let (_, _host) = backends(&cluster).await?;
    let lease = kgw_harness::addr::allocate()?;
    let system = System::start(SystemConfig {
        source: Source::Kubernetes {
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        },
        placement: Placement::Lease(lease),
        components: vec![
            Component::Nats,
            Component::Controller,
            Component::Gateway,
            Component::Discovery,
            Component::Envoy,
        ],
        ..Default::default()
    })
    .await?;
    apply(&cluster, &route_yaml("echo", "/echo", "echo-1")).await?;
    wait_status(&system.url("/echo/x"), None, 200, WAIT).await?;
    let problems = wait_for(WAIT, || async {
        let problems = config_problems(&system).await?;
        ensure!(
            problems.contains("RouteOption") && problems.contains("cannot watch Upstream"),
            "problems.config: {problems:?}"
        );
        Ok(problems)
    })
    .await?;
    println!("without the RouteOption and Upstream CRDs, problems.config:\n{problems}");

    install_crds_from(
        &cluster,
        &[
            crd_dir().join("gateway.solo.io_routeoptions.yaml"),
            crd_dir().join("gloo.solo.io_upstreams.yaml"),
        ],
    )
    .await?;
    wait_for(WAIT, || async {
        let problems = config_problems(&system).await?;
        ensure!(problems.is_empty(), "problems.config: {problems:?}");
        Ok(())
    })
    .await?;
    wait_status(&system.url("/echo/x"), None, 200, WAIT).await?;
    Ok(())
}

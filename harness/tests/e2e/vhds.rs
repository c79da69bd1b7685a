//! Small route updates to a real Envoy: on delta xDS route tables come through VHDS, so a
//! changed route sends its one virtual host (counted per type by the controller's
//! `kgw_controller_xds_response_bytes_total`), a new hostname one new virtual host, and
//! requests no route matches cost Envoy nothing: no on-demand request, no rebuild.
use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context, Result, ensure};
use kgw_harness::{
    Component, System, SystemConfig, envoy::XdsProtocol, get, wait_for, wait_status, write_manifest_atomically,
};

use crate::support::{WAIT, config_dir, start_with};

const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// HTTPRoutes `r<i>` for i in `range`, each on its own hostname `r<i>.example`, sending
/// `/p<i>` to Service echo; route `r0` sends `r0_prefix`.
fn routes_yaml(range: std::ops::Range<usize>, r0_prefix: &str) -> String {
    range
        .map(|i| {
            let prefix = if i == 0 {
                r0_prefix.to_string()
            } else {
                format!("/p{i}")
            };
            format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [r{i}.example]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs:
    - {{name: echo, port: 80}}
"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The controller's xDS response bytes and responses, per type_url.
async fn xds_counters(system: &System) -> Result<BTreeMap<String, (u64, u64)>> {
    let url = system
        .monitoring_url(Component::Controller, "/metrics")
        .context("controller has no monitoring port")?;
    let text = get(&url, None).await?.text();
    let mut counters: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((metric, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        for (name, slot) in [
            ("kgw_controller_xds_response_bytes_total", 0),
            ("kgw_controller_xds_responses_total", 1),
        ] {
            if let Some(type_url) = metric
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix("{type_url=\""))
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                let entry = counters.entry(type_url.to_string()).or_default();
                if slot == 0 {
                    entry.0 = value as u64;
                } else {
                    entry.1 = value as u64;
                }
            }
        }
    }
    Ok(counters)
}

/// Bytes and responses of `type_url` sent between `before` and `after`.
fn sent(before: &BTreeMap<String, (u64, u64)>, after: &BTreeMap<String, (u64, u64)>, type_url: &str) -> (u64, u64) {
    let (b, a) = (
        before.get(type_url).copied().unwrap_or_default(),
        after.get(type_url).copied().unwrap_or_default(),
    );
    (a.0 - b.0, a.1 - b.1)
}

/// Writes `n` routes (on `n` hostnames), waits for them, then moves route r0 and returns
/// the (route table, virtual host) bytes and responses that one change sent.
async fn one_change_at(system: &System, n: usize, moved: &str) -> Result<((u64, u64), (u64, u64))> {
    let dir = config_dir(system);
    write_manifest_atomically(dir, "routes.yaml", &routes_yaml(0..n, "/before"))?;
    let last = format!("r{}.example", n - 1);
    wait_status(&system.url(&format!("/p{}", n - 1)), Some(&last), 200, WAIT).await?;
    wait_status(&system.url("/before"), Some("r0.example"), 200, WAIT).await?;
    // Let the pushes of the last batch be answered before counting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // No request until the push is counted (a 404 asks for nothing now, but the count
    // should be the change's alone whatever Envoy does).
    let before = xds_counters(system).await?;
    write_manifest_atomically(dir, "routes.yaml", &routes_yaml(0..n, moved))?;
    wait_for(WAIT, || async {
        let now = xds_counters(system).await?;
        let pushes = sent(&before, &now, ROUTE).1 + sent(&before, &now, VIRTUAL_HOST).1;
        ensure!(pushes > 0, "no route push yet");
        Ok(())
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = xds_counters(system).await?;
    wait_status(&system.url(moved), Some("r0.example"), 200, WAIT).await?;
    Ok((sent(&before, &after, ROUTE), sent(&before, &after, VIRTUAL_HOST)))
}

async fn system(protocol: XdsProtocol) -> Result<crate::support::Running> {
    let config = SystemConfig {
        xds_protocol: protocol,
        ..SystemConfig::default()
    };
    start_with(&["echo"], config).await
}

/// Delta: one changed route sends one virtual host, at 100 routes as at 300; no route table.
#[tokio::test(flavor = "multi_thread")]
async fn delta_xds_a_route_change_sends_only_its_virtual_host() -> Result<()> {
    let running = system(XdsProtocol::Delta).await?;
    let system = &running.system;
    let mut sizes = Vec::new();
    for (n, moved) in [(100, "/moved-a"), (300, "/moved-b")] {
        let (tables, hosts) = one_change_at(system, n, moved).await?;
        println!(
            "delta, {n} routes, one change: RouteConfiguration {tables:?}, VirtualHost {hosts:?} (bytes, responses)"
        );
        ensure!(tables == (0, 0), "a route table was sent: {tables:?}");
        ensure!(hosts.1 == 1, "want one VirtualHost response: {hosts:?}");
        ensure!(hosts.0 < 1024, "more than one small virtual host sent: {hosts:?}");
        sizes.push(hosts.0);
    }
    // The same cost at 100 and at 300 routes (names of equal length give equal bytes, but
    // for the digits of the prefix).
    ensure!(sizes[0].abs_diff(sizes[1]) < 16, "cost grows with routes: {sizes:?}");
    Ok(())
}

/// State of the world, for comparison: one changed route sends the listener's whole table.
#[tokio::test(flavor = "multi_thread")]
async fn a_route_change_sends_the_whole_route_table_on_state_of_the_world() -> Result<()> {
    let running = system(XdsProtocol::StateOfTheWorld).await?;
    let system = &running.system;
    for (n, moved) in [(100, "/moved-a"), (300, "/moved-b")] {
        let (tables, hosts) = one_change_at(system, n, moved).await?;
        println!(
            "state of the world, {n} routes, one change: RouteConfiguration {tables:?}, VirtualHost {hosts:?} (bytes, responses)"
        );
        ensure!(tables.0 > 50 * n as u64, "the whole table: {tables:?}");
        ensure!(hosts == (0, 0));
    }
    Ok(())
}

/// Delta: a new hostname is served at once; requests no virtual host or route matches get
/// their 404 at once and make Envoy ask for nothing and rebuild nothing (each on-demand answer
/// used to rebuild Envoy's whole route table); a virtual host added later serves its host.
#[tokio::test(flavor = "multi_thread")]
async fn delta_xds_new_hosts_are_served_and_misses_cost_envoy_nothing() -> Result<()> {
    let running = system(XdsProtocol::Delta).await?;
    let system = &running.system;
    let dir = config_dir(system);
    write_manifest_atomically(dir, "routes.yaml", &routes_yaml(0..2, "/p0"))?;
    wait_status(&system.url("/p1"), Some("r1.example"), 200, WAIT).await?;

    let stats = || async {
        let text = get(&system.admin_url("/stats?filter=vhds"), None).await?.text();
        let stat = |name: &str| -> u64 {
            text.lines()
                .filter(|line| line.contains(&format!(".{name}:")))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        anyhow::Ok((
            stat("config_reload"),
            stat("update_rejected") + stat("init_fetch_timeout"),
            text,
        ))
    };
    // Settled: the pushes of the first batch are answered.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = xds_counters(system).await?;
    let (reloads_before, _, _) = stats().await?;
    let asked = Instant::now();
    // Unknown hosts, and an unknown path of a known host: 20 misses.
    for i in 0..20 {
        let (path, host) = if i % 2 == 0 {
            (format!("/p{i}"), format!("unknown{i}.example"))
        } else {
            ("/nowhere".to_string(), "r1.example".to_string())
        };
        let miss = get(&system.url(&path), Some(&host)).await?;
        ensure!(miss.status.as_u16() == 404, "{host}{path}: {}", miss.status);
    }
    ensure!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "20 misses held {:?}",
        asked.elapsed()
    );
    let answered = sent(&before, &xds_counters(system).await?, VIRTUAL_HOST);
    let (reloads_after, failures, text) = stats().await?;
    println!(
        "20 misses: VirtualHost answers {answered:?} (bytes, responses), Envoy VHDS reloads {reloads_before} -> {reloads_after}, in {:?}",
        asked.elapsed()
    );
    ensure!(answered == (0, 0), "misses made the controller answer: {answered:?}");
    ensure!(
        reloads_after == reloads_before,
        "misses made Envoy rebuild its table: {text}"
    );
    // Envoy took every VHDS update, and its route table did not wait for a first one.
    ensure!(reloads_before > 0, "no VHDS update: {text}");
    ensure!(failures == 0, "{text}");

    // A new hostname: served once its virtual host arrives.
    write_manifest_atomically(dir, "routes.yaml", &routes_yaml(0..3, "/p0"))?;
    let ok = wait_status(&system.url("/p2"), Some("r2.example"), 200, WAIT).await?;
    ensure!(ok.header("x-backend") == "echo");
    // And the first ones still are.
    for i in 0..2 {
        let host = format!("r{i}.example");
        let status = get(&system.url(&format!("/p{i}")), Some(&host)).await?.status.as_u16();
        ensure!(status == 200, "{host}: {status}");
    }
    Ok(())
}

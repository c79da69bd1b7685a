//! `kube_*`: gateway and discovery on the Kubernetes source against a real kube-apiserver
//! (issue 8). With the small size's routes created through the API server: a new
//! HTTPRoute's time from its create to its first 200, the status writes one route change
//! causes per kind (goal: 1 for the HTTPRoute, 0 for everything else), and the gateway's
//! RSS. The backend runs in a test host namespace (the API server refuses loopback
//! endpoints).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kgw_harness::kube::KubeCluster;
use kgw_harness::kube::apply::{apply_yaml, chart_crd_dir, install_crds};
use kgw_harness::manifest::{gateway_yaml, route_yaml, service_yaml};
use kgw_harness::netns::TestHost;
use kgw_harness::system::Source;
use kgw_harness::{Component, System, SystemConfig, wait_status};
use serde_json::json;

use super::{Plan, Report, ms, round3, summary};
use crate::procstat;

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let n = plan.sizes[0];
    let cluster = KubeCluster::start().await?;
    let client = cluster.client();
    install_crds(&client, &chart_crd_dir()).await?;
    apply_yaml(&client, &gateway_yaml()).await?;
    let mut host = TestHost::create()?;
    let backend = host.spawn_echo("echo", 9001)?;
    apply_yaml(&client, &service_yaml("echo", &[backend.ip()], backend.port())).await?;
    let system = System::start(SystemConfig {
        source: Source::Kubernetes {
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        },
        ..Default::default()
    })
    .await?;

    let loading = Instant::now();
    for i in 0..n {
        apply_yaml(
            &client,
            &route_yaml(&format!("r{i}"), &format!("/r{i}/"), &[("echo", 1)]),
        )
        .await?;
    }
    wait_status(&system.url(&format!("/r{}/x", n - 1)), None, 200, plan.load_timeout).await?;
    let load_seconds = loading.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut samples = Vec::new();
    for i in 0..plan.samples.min(20) {
        let name = format!("new{i}");
        let created = Instant::now();
        apply_yaml(&client, &route_yaml(&name, &format!("/{name}/"), &[("echo", 1)])).await?;
        wait_status(&system.url(&format!("/{name}/x")), None, 200, Duration::from_secs(30)).await?;
        samples.push(ms(created.elapsed()));
        tokio::time::sleep(plan.sample_gap).await;
    }

    // One route change: how many status writes, per kind.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = system.gateway_status_writes().await?;
    apply_yaml(&client, &route_yaml("r0", "/r0-moved/", &[("echo", 1)])).await?;
    wait_status(&system.url("/r0-moved/x"), None, 200, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = system.gateway_status_writes().await?;
    let per_change: BTreeMap<&String, u64> = after
        .iter()
        .map(|(kind, n)| (kind, n - before.get(kind).copied().unwrap_or(0)))
        .collect();

    let rss = system
        .pid(Component::Gateway)
        .map(procstat::rss_mib)
        .transpose()?
        .map(round3);
    let size = Plan::key(n);
    report.set_in("kube_route_create_to_200_ms", &size, summary(&samples));
    report.set("kube_status_writes_per_route_change", json!(per_change));
    report.set_in("kube_gateway_rss_mib", &size, json!(rss));
    report.detail(
        "kube",
        json!({"routes": n, "load_seconds": round3(load_seconds), "apiserver": "kube-apiserver v1.37.2 (built here), etcd v3.6.17"}),
    );
    drop(system);
    drop(host);
    Ok(())
}

//! Manifest builders and a started system with backends, shared by the e2e tests.
use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Result;
use kgw_harness::{Layout, System, SystemConfig, spawn_echo, write_manifest_atomically};

pub const WAIT: Duration = Duration::from_secs(20);

pub use kgw_harness::manifest::{gateway_yaml, route_yaml};

/// A Service `name` on port 80 whose EndpointSlice lists `backends` (all on the first's port).
pub fn service_yaml(name: &str, backends: &[SocketAddr]) -> String {
    let port = backends.first().map(|b| b.port()).unwrap_or(9000);
    let ips: Vec<_> = backends.iter().map(|b| b.ip()).collect();
    kgw_harness::manifest::service_yaml(name, &ips, port)
}

pub struct Running {
    pub system: System,
    /// Backend addresses, in the order of `backend_names`.
    pub backends: Vec<SocketAddr>,
}

/// Starts echo backends named `names` on the block's backend addresses, writes the Gateway
/// and one Service per backend into a fresh config dir, and starts the system.
pub async fn start(names: &[&str]) -> Result<Running> {
    start_with(names, SystemConfig::default()).await
}

/// [`start`], with `config` for everything but the config dir and the placement.
pub async fn start_with(names: &[&str], config: SystemConfig) -> Result<Running> {
    let lease = kgw_harness::addr::allocate()?;
    let layout: Layout = lease.layout.clone();
    let config_dir = tempfile::tempdir()?.keep();
    let mut backends = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let addr = layout.backend(i as u8 + 1);
        spawn_echo(addr, name).await?;
        backends.push(addr);
        write_manifest_atomically(&config_dir, &format!("svc-{name}.yaml"), &service_yaml(name, &[addr]))?;
    }
    write_manifest_atomically(&config_dir, "gateway.yaml", &gateway_yaml())?;
    let system = System::start(SystemConfig {
        config_dir: Some(config_dir),
        placement: kgw_harness::Placement::Lease(lease),
        ..config
    })
    .await?;
    Ok(Running { system, backends })
}

pub fn config_dir(system: &System) -> &Path {
    system.config_dir()
}

/// Sends `n` GETs to `path` and counts answers per `x-backend` header (status 200 only).
pub async fn spread(system: &System, path: &str, n: usize) -> Result<std::collections::BTreeMap<String, usize>> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let response = kgw_harness::get(&system.url(path), None).await?;
        anyhow::ensure!(
            response.status.as_u16() == 200,
            "GET {path}: {} {}",
            response.status,
            response.text()
        );
        *counts.entry(response.header("x-backend")).or_insert(0) += 1;
    }
    Ok(counts)
}

/// A nats-server alone, a client of it with the admin's rights, and the shutdown of the
/// tasks a test starts on it (the server stops when the [`System`] is dropped).
pub async fn nats_alone() -> Result<(System, kgw_common::bus::Bus, kgw_common::shutdown::Shutdown)> {
    let system = System::start(SystemConfig {
        components: vec![kgw_harness::Component::Nats],
        ..Default::default()
    })
    .await?;
    let bus = kgw_common::bus::connect(&system.nats_url(), "test", &system.admin_nats_auth()?).await?;
    Ok((system, bus, kgw_common::shutdown::Shutdown::new()))
}

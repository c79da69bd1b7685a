//! The generated route sets: N HTTPRoutes over N/5 Services whose EndpointSlices point at
//! local echo backends. Route `i` has its own hostname (`r<i>.bench.local`) and path prefix
//! (`/p<i>`), as routes spread over hostnames in real life; it sends to Service `svc-<i/5>`.
//! One file per resource (`routes/route-<i>.yaml`, `services/svc-<j>.yaml`), so a route is
//! added, edited or removed by writing one file. [`Shape::OneHost`] puts every route under
//! one hostname instead (one virtual host of N routes: the worst case of a route change).

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use kgw_common::resources::{Change, Index, decode};
use kgw_harness::write_manifest_atomically;
use serde::Deserialize;

/// Port every Service exposes.
pub const SERVICE_PORT: u16 = 80;
/// Routes per Service.
pub const ROUTES_PER_SERVICE: usize = 5;
/// Endpoints per Service (taken in turn from the backend pool).
pub const ENDPOINTS_PER_SERVICE: usize = 3;

/// Where the echo backends listen: one port on several loopback addresses.
#[derive(Clone, Debug)]
pub struct Backends {
    pub ips: Vec<IpAddr>,
    pub port: u16,
}

impl Backends {
    /// The `k` endpoints of Service `j`, taken in turn from the pool.
    pub fn endpoints(&self, j: usize, k: usize) -> Vec<IpAddr> {
        (0..k.min(self.ips.len()))
            .map(|e| self.ips[(j + e) % self.ips.len()])
            .collect()
    }
}

/// How the routes of a set spread over hostnames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Each route its own hostname (`r<i>.bench.local`).
    Spread,
    /// Every route under `one.bench.local`.
    OneHost,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::Spread, Shape::OneHost];

    /// Its JSON key.
    pub fn key(self) -> &'static str {
        match self {
            Shape::Spread => "spread",
            Shape::OneHost => "one_host",
        }
    }

    /// The hostname of route `name` in this shape.
    pub fn host(self, name: &str) -> String {
        match self {
            Shape::Spread => host(name),
            Shape::OneHost => ONE_HOST.to_string(),
        }
    }
}

/// The hostname of every route of a [`Shape::OneHost`] set.
pub const ONE_HOST: &str = "one.bench.local";

pub fn services_for(routes: usize) -> usize {
    routes.div_ceil(ROUTES_PER_SERVICE)
}

pub fn host(name: &str) -> String {
    format!("{name}.bench.local")
}

pub fn route_name(i: usize) -> String {
    format!("r{i}")
}

pub fn service_name(j: usize) -> String {
    format!("svc-{j}")
}

pub fn route_file(name: &str) -> String {
    format!("routes/{name}.yaml")
}

pub fn service_file(name: &str) -> String {
    format!("services/{name}.yaml")
}

/// The path a request to route `name` uses.
pub fn request_path(name: &str) -> String {
    format!("/{name}/x")
}

/// `<upstream>_<namespace>`, as the controller names the cluster of Service `svc`.
pub fn cluster_name(svc: &str) -> String {
    format!("default-{svc}-{SERVICE_PORT}_default")
}

pub use kgw_harness::manifest::gateway_yaml;

pub use kgw_harness::manifest::service_yaml;

/// An HTTPRoute for host `<name>.bench.local`, prefix `/<name>`, to Service `svc`.
/// `variant` > 0 adds a second rule (prefix `/<name>-v<variant>`): a real change of the
/// route table that leaves the first rule serving.
pub fn route_yaml(name: &str, svc: &str, variant: usize) -> String {
    shaped_route_yaml(Shape::Spread, name, svc, variant)
}

/// [`route_yaml`], its hostname that of `shape`.
pub fn shaped_route_yaml(shape: Shape, name: &str, svc: &str, variant: usize) -> String {
    let extra = if variant == 0 {
        String::new()
    } else {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /{name}-v{variant}}}}}]
    backendRefs: [{{name: {svc}, port: {SERVICE_PORT}}}]
"
        )
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [\"{host}\"]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
    backendRefs: [{{name: {svc}, port: {SERVICE_PORT}}}]
{extra}",
        host = shape.host(name)
    )
}

/// The Service route `i` sends to, for a set of `services` Services.
pub fn service_of(i: usize, services: usize) -> String {
    service_name((i / ROUTES_PER_SERVICE) % services.max(1))
}

/// Writes Services `from..to` (each file atomically).
pub fn write_services(dir: &Path, backends: &Backends, from: usize, to: usize) -> Result<()> {
    for j in from..to {
        let name = service_name(j);
        let yaml = service_yaml(&name, &backends.endpoints(j, ENDPOINTS_PER_SERVICE), backends.port);
        write_manifest_atomically(dir, &service_file(&name), &yaml)?;
    }
    Ok(())
}

/// Writes routes `from..to` over `services` Services (each file atomically).
pub fn write_routes(dir: &Path, services: usize, from: usize, to: usize) -> Result<()> {
    write_shaped_routes(dir, Shape::Spread, services, from, to)
}

/// [`write_routes`] in `shape`.
pub fn write_shaped_routes(dir: &Path, shape: Shape, services: usize, from: usize, to: usize) -> Result<()> {
    for i in from..to {
        let name = route_name(i);
        let yaml = shaped_route_yaml(shape, &name, &service_of(i, services), 0);
        write_manifest_atomically(dir, &route_file(&name), &yaml)?;
    }
    Ok(())
}

/// The resource index of a whole set of `n` routes, as the config source would fill it.
pub fn index(n: usize, backends: &Backends) -> Result<Index> {
    shaped_index(n, Shape::Spread, backends)
}

/// [`index`] in `shape`.
pub fn shaped_index(n: usize, shape: Shape, backends: &Backends) -> Result<Index> {
    let services = services_for(n);
    let mut text = gateway_yaml();
    for j in 0..services {
        let name = service_name(j);
        text.push_str("---\n");
        text.push_str(&service_yaml(
            &name,
            &backends.endpoints(j, ENDPOINTS_PER_SERVICE),
            backends.port,
        ));
    }
    for i in 0..n {
        let name = route_name(i);
        text.push_str("---\n");
        text.push_str(&shaped_route_yaml(shape, &name, &service_of(i, services), 0));
    }
    let mut index = Index::default();
    apply_yaml(&mut index, &text)?;
    Ok(index)
}

/// Decodes every document of `text` into `index`.
pub fn apply_yaml(index: &mut Index, text: &str) -> Result<()> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).context("generated YAML")?;
        if let Some((key, resource)) = decode(value).context("generated resource")? {
            index.apply(&Change::Upsert(key, resource));
        }
    }
    Ok(())
}

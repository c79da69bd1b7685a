//! Gateway API → Proxy: a pure function of the resource index. One Proxy per accepted
//! Gateway; Gateway listeners sharing a port become one Proxy listener whose virtual hosts
//! come from the hostnames of the routes attached to them. Status is computed here, beside
//! the translation, so what is reported is what was translated.
mod filters;
mod hostnames;
mod route_option;
mod routes;
pub mod status;

use std::collections::BTreeMap;

use gateway_api::apis::standard::{gateways::Gateway, httproutes::HttpRoute};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, listener::ListenerType};

pub use status::{Condition, StatusReport};

/// Knobs of the translation that come from the process's configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub controller_name: String,
    /// Address Envoy's listeners bind (0.0.0.0 in a pod; a loopback address locally).
    pub listener_bind_address: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_name: "kgateway.dev/kgateway".into(),
            listener_bind_address: "0.0.0.0".into(),
        }
    }
}

/// Everything one translation produces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// KV key (`<ns>.<gateway>`) → Proxy.
    pub proxies: BTreeMap<String, pb::Proxy>,
    pub status: StatusReport,
}

/// Ports below 1024 need privileges Envoy should not have: as kgateway does, a Gateway
/// listener on port P < 1024 is served by Envoy on P + 8000 (80 → 8080, 443 → 8443).
pub fn envoy_port(port: i32) -> u32 {
    let port = port.max(0) as u32;
    if port < 1024 { port + 8000 } else { port }
}

pub fn translate(index: &Index, options: &Options) -> Output {
    let mut output = Output::default();
    let routes: Vec<&HttpRoute> = index.http_routes.values().map(|r| r.as_ref()).collect();
    for ((namespace, name), gateway) in &index.gateways {
        let class = gateway.spec.gateway_class_name.as_str();
        let ours = index
            .gateway_classes
            .get(class)
            .is_some_and(|c| c.spec.controller_name == options.controller_name);
        if !ours {
            tracing::debug!(%namespace, %name, class, "gateway of another (or missing) class; skipped");
            continue;
        }
        let proxy = translate_gateway(namespace, name, gateway, &routes, index, options, &mut output.status);
        output.proxies.insert(kgw_proto::nats::key(namespace, name), proxy);
    }
    for (name, class) in &index.gateway_classes {
        if class.spec.controller_name == options.controller_name {
            output.status.gateway_class_accepted(name);
        }
    }
    output.status.finish_routes(&routes);
    route_option::report_route_options(index, &routes, &mut output.status);
    output
}

fn translate_gateway(
    namespace: &str,
    name: &str,
    gateway: &Gateway,
    routes: &[&HttpRoute],
    index: &Index,
    options: &Options,
    status: &mut StatusReport,
) -> pb::Proxy {
    let gateway_ref = status::GatewayRef {
        namespace: namespace.into(),
        name: name.into(),
    };
    status.gateway_seen(&gateway_ref);
    // Envoy port → (gateway listener names, virtual host builder)
    let mut by_port: BTreeMap<u32, (Vec<pb::ResourceRef>, routes::VirtualHosts)> = BTreeMap::new();
    for listener in &gateway.spec.listeners {
        if !matches!(listener.protocol.as_str(), "HTTP") {
            status.listener_unsupported(&gateway_ref, &listener.name, &listener.protocol);
            continue;
        }
        let attached: Vec<&HttpRoute> = routes
            .iter()
            .copied()
            .filter(|route| routes::attaches(route, namespace, name, listener))
            .collect();
        status.listener_ready(&gateway_ref, &listener.name, attached.len());
        let (sources, vhosts) = by_port.entry(envoy_port(listener.port)).or_default();
        sources.push(pb::ResourceRef {
            kind: "Gateway".into(),
            namespace: namespace.into(),
            name: format!("{name}/{}", listener.name),
        });
        for route in attached {
            vhosts.add_route(route, listener.hostname.as_deref(), index, &gateway_ref, status);
        }
    }
    let listeners = by_port
        .into_iter()
        .map(|(port, (sources, vhosts))| pb::Listener {
            name: format!("listener~{port}"),
            bind_address: options.listener_bind_address.clone(),
            bind_port: port,
            listener_type: Some(ListenerType::HttpListener(pb::HttpListener {
                virtual_hosts: vhosts.build(port),
            })),
            ssl_configurations: Vec::new(),
            sources,
        })
        .collect();
    pb::Proxy {
        metadata: Some(pb::Metadata {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::from([("created_by".into(), "kgw-gateway".into())]),
        }),
        listeners,
        source_hash: String::new(),
    }
}

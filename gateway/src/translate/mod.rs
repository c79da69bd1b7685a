//! Gateway API → Proxy: a pure function of the resource index. One Proxy per accepted
//! Gateway; Gateway listeners sharing a port become one Proxy listener whose virtual hosts
//! come from the hostnames of the routes attached to them. Status is computed here, beside
//! the translation, so what is reported is what was translated.
mod encoded;
mod filters;
mod grants;
mod hostnames;
mod incremental;
mod route_option;
mod routes;
mod selectors;
pub mod status;
mod tls;

use std::collections::BTreeMap;

use gateway_api::apis::experimental::{
    gateways::{Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom},
    httproutes::HttpRoute,
};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, listener::ListenerType};

pub use encoded::{EncodedProxies, encode_proxies};
pub use incremental::{Changed, Incremental};
use status::GatewayRef;
pub use status::{Condition, StatusReport};

/// Knobs of the translation that come from the process's configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub controller_name: String,
    /// Address Envoy's listeners bind (0.0.0.0 in a pod; a loopback address locally), for
    /// Gateways that do not ask for an address of their own in `spec.addresses`.
    pub listener_bind_address: String,
    /// Added to a listener port below 1024 to get the port Envoy binds (see [`Options::envoy_port`]).
    pub low_port_offset: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_name: "kgateway.dev/kgateway".into(),
            listener_bind_address: "0.0.0.0".into(),
            low_port_offset: DEFAULT_LOW_PORT_OFFSET,
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
pub const DEFAULT_LOW_PORT_OFFSET: u32 = 8000;

impl Options {
    /// The port Envoy binds for a Gateway listener on `port`: P + `low_port_offset` below
    /// 1024 (an offset of 0 binds the declared port, for an Envoy allowed to).
    pub fn envoy_port(&self, port: i32) -> u32 {
        let port = port.max(0) as u32;
        if port < 1024 { port + self.low_port_offset } else { port }
    }

    /// The address Envoy's listeners for `gateway` bind: the first IP address the Gateway
    /// asks for in `spec.addresses` (type IPAddress, or no type), else the default.
    pub fn bind_address(&self, gateway: &Gateway) -> String {
        requested_address(gateway).unwrap_or_else(|| self.listener_bind_address.clone())
    }
}

/// The first IP address in a Gateway's `spec.addresses` (type IPAddress or unset).
pub fn requested_address(gateway: &Gateway) -> Option<String> {
    gateway
        .spec
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.r#type.as_deref().is_none_or(|t| t == "IPAddress"))
        .find_map(|a| {
            a.value
                .as_deref()?
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| ip.to_string())
        })
}

/// The whole translation, from scratch: the reference the [`Incremental`] one is checked
/// against (both are made of the same per-route [`routes::translate_route`]).
pub fn translate(index: &Index, options: &Options) -> Output {
    let mut output = Output::default();
    let routes: Vec<&HttpRoute> = index.http_routes.values().map(|r| r.as_ref()).collect();
    for ((namespace, name), gateway) in &index.gateways {
        if !is_ours(gateway, index, options) {
            tracing::debug!(%namespace, %name, class = %gateway.spec.gateway_class_name, "gateway of another (or missing) class; skipped");
            continue;
        }
        let proxy = translate_gateway(namespace, name, gateway, &routes, index, options, &mut output.status);
        output.proxies.insert(kgw_proto::nats::key(namespace, name), proxy);
    }
    report_gateway_classes(index, options, &mut output.status);
    output.status.finish_routes(&routes);
    route_option::report_route_options(index, &routes, &mut output.status);
    output
}

/// Whether `gateway`'s GatewayClass exists and names our controller.
fn is_ours(gateway: &Gateway, index: &Index, options: &Options) -> bool {
    index
        .gateway_classes
        .get(gateway.spec.gateway_class_name.as_str())
        .is_some_and(|c| c.spec.controller_name == options.controller_name)
}

/// The GatewayClasses of ours, Accepted.
fn report_gateway_classes(index: &Index, options: &Options, status: &mut StatusReport) {
    for (name, class) in &index.gateway_classes {
        if class.spec.controller_name == options.controller_name {
            status.gateway_class_accepted(name);
        }
    }
}

/// HTTP and HTTPS listeners carry HTTPRoutes; the others are reported unsupported.
fn is_http(listener: &GatewayListeners) -> bool {
    matches!(listener.protocol.as_str(), "HTTP" | "HTTPS")
}

/// Whether Envoy serves the listener. HTTPS listeners are translated and reported (their
/// routes, their certificates) but not served yet: they wait for TLS in the controller.
fn is_served(listener: &GatewayListeners) -> bool {
    listener.protocol == "HTTP"
}

/// Whether a listener of `gateway` selects route namespaces by label.
fn selects_namespaces(gateway: &Gateway) -> bool {
    gateway.spec.listeners.iter().any(|listener| {
        listener
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.as_ref())
            .is_some_and(|from| matches!(from, GatewayListenersAllowedRoutesNamespacesFrom::Selector))
    })
}

/// (namespace, name) of a route, as the translation names it.
fn route_name(route: &HttpRoute) -> (String, String) {
    (
        route.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        route.metadata.name.clone().unwrap_or_default(),
    )
}

/// A Gateway's own status: its conditions, the address its listeners bind, and each
/// listener's conditions, with `attached(i)` routes on listener `i`.
fn report_gateway(
    status: &mut StatusReport,
    index: &Index,
    gateway_ref: &GatewayRef,
    gateway: &Gateway,
    address: &str,
    attached: impl Fn(usize) -> usize,
) {
    status.gateway_seen(gateway_ref, address);
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        if is_served(listener) {
            status.listener_ready(gateway_ref, &listener.name, attached(i));
        } else if is_http(listener) {
            let problem = tls::check_certificates(index, &gateway_ref.namespace, listener);
            status.listener_https(gateway_ref, &listener.name, attached(i), problem);
        } else {
            status.listener_unsupported(gateway_ref, &listener.name, &listener.protocol);
        }
    }
}

/// The Proxy of Gateway `namespace/name`: one Envoy listener per port, with the Gateway
/// listeners it serves and its virtual hosts.
fn proxy(
    namespace: &str,
    name: &str,
    gateway: &Gateway,
    by_port: BTreeMap<u32, (Vec<pb::ResourceRef>, Vec<pb::VirtualHost>)>,
    options: &Options,
) -> pb::Proxy {
    let served: std::collections::BTreeSet<u32> = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| is_served(l))
        .map(|l| options.envoy_port(l.port))
        .collect();
    let listeners = by_port
        .into_iter()
        .filter(|(port, _)| served.contains(port))
        .map(|(port, (sources, virtual_hosts))| pb::Listener {
            name: format!("listener~{port}"),
            bind_address: options.bind_address(gateway),
            bind_port: port,
            listener_type: Some(ListenerType::HttpListener(pb::HttpListener { virtual_hosts })),
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

/// What names Gateway listener `listener` among an Envoy listener's sources.
fn listener_source(namespace: &str, name: &str, listener: &GatewayListeners) -> pb::ResourceRef {
    pb::ResourceRef {
        kind: "Gateway".into(),
        namespace: namespace.into(),
        name: format!("{name}/{}", listener.name),
    }
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
    let gateway_ref = GatewayRef {
        namespace: namespace.into(),
        name: name.into(),
    };
    // Envoy port → (gateway listener names, virtual host builder)
    let mut by_port: BTreeMap<u32, (Vec<pb::ResourceRef>, routes::VirtualHosts)> = BTreeMap::new();
    let mut attached_counts = Vec::new();
    for listener in &gateway.spec.listeners {
        if !is_http(listener) {
            attached_counts.push(0);
            continue;
        }
        let attached: Vec<&HttpRoute> = routes
            .iter()
            .copied()
            .filter(|route| routes::attaches(route, namespace, name, listener, index))
            .collect();
        attached_counts.push(attached.len());
        let (sources, vhosts) = by_port.entry(options.envoy_port(listener.port)).or_default();
        sources.push(listener_source(namespace, name, listener));
        for route in attached {
            let piece = routes::translate_route(route, listener.hostname.as_deref(), index);
            let (route_ns, route_name) = route_name(route);
            status.route_translated(&route_ns, &route_name, &gateway_ref, &piece.unresolved);
            vhosts.add(&piece);
        }
    }
    report_gateway(
        status,
        index,
        &gateway_ref,
        gateway,
        &options.bind_address(gateway),
        |i| attached_counts[i],
    );
    let by_port = by_port
        .into_iter()
        .map(|(port, (sources, vhosts))| (port, (sources, vhosts.build(port))))
        .collect();
    proxy(namespace, name, gateway, by_port, options)
}

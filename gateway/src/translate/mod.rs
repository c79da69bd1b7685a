//! Gateway API → Proxy: a pure function of the resource index. One Proxy per accepted
//! Gateway; its HTTP listeners sharing a port become one Proxy listener, each HTTPS listener
//! whose certificates resolve one of its own (see proxy.proto); virtual hosts come from the
//! hostnames of the routes attached to them. Status is computed here, beside
//! the translation, so what is reported is what was translated.
mod addresses;
mod backend_tls;
mod encoded;
mod filters;
mod frontend;
mod gateway_status;
mod grants;
mod hostnames;
mod incremental;
mod listener_sets;
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
    /// asks for in `spec.addresses` (type IPAddress, or no type) that Envoy can bind here,
    /// else the default.
    pub fn bind_address(&self, gateway: &Gateway) -> String {
        requested_addresses(gateway)
            .find(|ip| self.can_bind(*ip))
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| self.listener_bind_address.clone())
    }

    /// Whether Envoy can bind `ip`: a loopback address (local runs give each Gateway its
    /// own), or the address it is configured to bind. In a pod Envoy binds 0.0.0.0 and the
    /// platform gives the Service its address, so another specific one cannot be honoured.
    pub fn can_bind(&self, ip: std::net::IpAddr) -> bool {
        ip.is_loopback()
            || self
                .listener_bind_address
                .parse::<std::net::IpAddr>()
                .is_ok_and(|bind| bind == ip)
    }
}

/// The IP addresses in a Gateway's `spec.addresses` (type IPAddress or unset), in order.
fn requested_addresses(gateway: &Gateway) -> impl Iterator<Item = std::net::IpAddr> + '_ {
    gateway
        .spec
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.r#type.as_deref().is_none_or(|t| t == "IPAddress"))
        .filter_map(|a| a.value.as_deref()?.parse::<std::net::IpAddr>().ok())
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
        let (gateway, sets) = listener_sets::effective(namespace, name, gateway, index);
        let proxy = translate_gateway(namespace, name, &gateway, &routes, index, options, &mut output.status);
        listener_sets::report(&mut output.status, &format!("{namespace}/{name}"), &sets);
        output.proxies.insert(kgw_proto::nats::key(namespace, name), proxy);
    }
    report_gateway_classes(index, options, &mut output.status);
    output.status.finish_routes(&routes);
    route_option::report_route_options(index, &routes, &mut output.status);
    let users = backend_tls::report::service_users(&routes);
    backend_tls::report::report(
        index,
        |service| users.get(service).cloned().unwrap_or_default(),
        &mut output.status,
    );
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

/// Whether Envoy serves the listener of `gateway` in `gw_ns`: HTTP ones always, HTTPS ones
/// when their certificates resolve (else they would be served without TLS, or not at all)
/// and their client validation, if any, has a CA (else any client would be let in).
fn is_served(listener: &GatewayListeners, index: &Index, gw_ns: &str, gateway: &Gateway) -> bool {
    match listener.protocol.as_str() {
        "HTTP" => true,
        "HTTPS" => {
            tls::check_certificates(index, gw_ns, listener).is_none()
                && !matches!(
                    frontend::resolve(index, gw_ns, gateway, listener),
                    frontend::Frontend::NoValidCa(_)
                )
        }
        _ => false,
    }
}

/// The Proxy listener that serves Gateway listener `listener`: the HTTP listeners of a port
/// share `listener~<port>`; each HTTPS one has `listener~<port>~<name>`, so that its routes
/// stay its own (one filter chain, chosen by SNI; see proxy.proto).
fn proxy_listener_name(listener: &GatewayListeners, options: &Options) -> String {
    let port = options.envoy_port(listener.port);
    if listener.protocol == "HTTPS" {
        format!("listener~{port}~{}", listener.name)
    } else {
        format!("listener~{port}")
    }
}

/// The name of the one route of a virtual host that answers 421 (Misdirected Request): no
/// HTTPRoute's route is named so (theirs are `<ns>/<name>/rule/...`).
const MISDIRECTED_ROUTE: &str = "misdirected-request";

/// Whether `vhost` is one that answers 421 (see [`add_misdirected`]).
fn is_misdirected(vhost: &pb::VirtualHost) -> bool {
    vhost.routes.first().is_some_and(|r| r.name == MISDIRECTED_ROUTE)
}

fn misdirected_vhost(listener: &str, host: &str) -> pb::VirtualHost {
    pb::VirtualHost {
        name: routes::vhost_name(listener, host),
        domains: vec![host.to_string()],
        routes: vec![pb::Route {
            name: MISDIRECTED_ROUTE.into(),
            matchers: vec![pb::Matcher {
                path_specifier: Some(pb::matcher::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }],
            action: Some(pb::route::Action::DirectResponseAction(pb::DirectResponseAction {
                status: 421,
                body: String::new(),
            })),
            ..Default::default()
        }],
    }
}

/// Envoy picks an HTTPS listener's filter chain by SNI, and a client may reuse a connection
/// for another host (HTTP/2 coalescing): each HTTPS listener answers 421 for the hostnames
/// that select another HTTPS listener of its port (`*`: one without hostname), replacing
/// its own virtual host of the same hostname (a request for it belongs to the other).
fn add_misdirected(listeners: &mut BTreeMap<(u32, String), pb::Listener>) {
    let sni = |l: &pb::Listener| -> String {
        l.ssl_configurations
            .first()
            .and_then(|s| s.sni_domains.first())
            .cloned()
            .unwrap_or_else(|| "*".into())
    };
    let https: Vec<((u32, String), String)> = listeners
        .iter()
        .filter(|(_, l)| !l.ssl_configurations.is_empty())
        .map(|(key, l)| (key.clone(), sni(l)))
        .collect();
    for (key, own) in &https {
        // Two listeners of one hostname conflict; neither sends the other's requests away.
        let others: std::collections::BTreeSet<&String> = https
            .iter()
            .filter(|(other, host)| other.0 == key.0 && other.1 != key.1 && host != own)
            .map(|(_, host)| host)
            .collect();
        let Some(ListenerType::HttpListener(http)) = listeners.get_mut(key).and_then(|l| l.listener_type.as_mut())
        else {
            continue;
        };
        if others.is_empty() {
            continue;
        }
        let names: std::collections::BTreeSet<String> =
            others.iter().map(|host| routes::vhost_name(&key.1, host)).collect();
        http.virtual_hosts.retain(|v| !names.contains(&v.name));
        http.virtual_hosts
            .extend(others.iter().map(|host| misdirected_vhost(&key.1, host)));
        http.virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    }
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
    options: &Options,
    attached: impl Fn(usize) -> usize,
) {
    let address = options.bind_address(gateway);
    status.gateway_seen(gateway_ref, &address);
    for (i, listener) in gateway.spec.listeners.iter().enumerate() {
        if listener.protocol == "HTTP" {
            status.listener_ready(gateway_ref, &listener.name, attached(i));
        } else if is_http(listener) {
            let problem = tls::check_certificates(index, &gateway_ref.namespace, listener);
            status.listener_https(gateway_ref, &listener.name, attached(i), problem);
        } else {
            status.listener_unsupported(gateway_ref, &listener.name, &listener.protocol);
        }
    }
    gateway_status::refine(status, index, gateway_ref, gateway);
    backend_tls::client_cert::report(status, index, gateway_ref, gateway);
    let key = format!("{}/{}", gateway_ref.namespace, gateway_ref.name);
    addresses::report(status, &key, gateway, options);
}

/// Virtual hosts per Proxy listener name ([`proxy_listener_name`]).
type ListenerHosts = BTreeMap<String, Vec<pb::VirtualHost>>;

/// The Proxy of Gateway `namespace/name`: one Proxy listener per port for its HTTP
/// listeners and one per served HTTPS listener (see proxy.proto), each with its virtual
/// hosts from `hosts`.
fn proxy(
    namespace: &str,
    name: &str,
    gateway: &Gateway,
    mut hosts: ListenerHosts,
    index: &Index,
    options: &Options,
) -> pb::Proxy {
    let bind_address = options.bind_address(gateway);
    // By (port, name): numeric port order, as Envoy's listeners are listed.
    let mut listeners: BTreeMap<(u32, String), pb::Listener> = BTreeMap::new();
    let served = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| is_served(l, index, namespace, gateway));
    for listener in served {
        let port = options.envoy_port(listener.port);
        let listener_name = proxy_listener_name(listener, options);
        let proxy_listener = listeners
            .entry((port, listener_name.clone()))
            .or_insert_with(|| pb::Listener {
                listener_type: Some(ListenerType::HttpListener(pb::HttpListener {
                    virtual_hosts: hosts.remove(&listener_name).unwrap_or_default(),
                })),
                name: listener_name,
                bind_address: bind_address.clone(),
                bind_port: port,
                ssl_configurations: tls::ssl_configurations(namespace, listener),
                client_validation: frontend::validation(index, namespace, gateway, listener),
                sources: Vec::new(),
            });
        proxy_listener.sources.push(listener_source(namespace, name, listener));
    }
    add_misdirected(&mut listeners);
    pb::Proxy {
        metadata: Some(pb::Metadata {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::from([("created_by".into(), "kgw-gateway".into())]),
        }),
        listeners: listeners.into_values().collect(),
        source_hash: String::new(),
        backend_client_certificate: backend_tls::client_cert::proxy_ref(index, namespace, gateway),
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
    // Proxy listener name → its virtual hosts.
    let mut by_listener: BTreeMap<String, routes::VirtualHosts> = BTreeMap::new();
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
        let vhosts = by_listener.entry(proxy_listener_name(listener, options)).or_default();
        let (parent_ns, parent_name) = routes::listener_parent(listener, namespace, name);
        let parent_ref = GatewayRef {
            namespace: parent_ns,
            name: parent_name,
        };
        for route in attached {
            let mut piece = routes::translate_route(route, listener.hostname.as_deref(), listener.port, index);
            hostnames::isolate(&mut piece.hosts, listener, &gateway.spec.listeners);
            let (route_ns, route_name) = route_name(route);
            status.route_translated(&route_ns, &route_name, &parent_ref, &piece.unresolved);
            vhosts.add(&piece);
        }
    }
    for route in routes {
        for parent in routes::named_parents(route, namespace, name, gateway) {
            if let Some(why) = routes::rejection(route, namespace, name, &parent, gateway, index) {
                let (route_ns, route_name) = route_name(route);
                let parent_ref = GatewayRef {
                    namespace: parent.0,
                    name: parent.1,
                };
                status.route_rejected(&route_ns, &route_name, &parent_ref, why);
            }
        }
    }
    report_gateway(status, index, &gateway_ref, gateway, options, |i| attached_counts[i]);
    let hosts = by_listener
        .into_iter()
        .map(|(listener, vhosts)| {
            let built = vhosts.build(&listener);
            (listener, built)
        })
        .collect();
    proxy(namespace, name, gateway, hosts, index, options)
}

//! Services + EndpointSlices → Upstreams, as Gloo's upstream discovery (UDS) does: one
//! kube Upstream per Service port, named `<namespace>-<service>-<port>`; and the Upstreams
//! users declare (`gloo.solo.io/v1`, see [`crate::gloo`]), under their own names, a kube one
//! with its Service's endpoints. A declared Upstream wins over a discovered one of the same
//! name. A pure function of the [`Index`]; the same index always gives the same bytes.
//! Shared by discovery (which writes them all: every key has one writer) and the gateway
//! (whose validation checks what a change would leave).
use std::collections::BTreeMap;

use crate::resources::Index;
use k8s_openapi::api::{
    core::v1::{Service, ServicePort},
    discovery::v1::EndpointSlice,
};
use kgw_proto::v1::{
    AwsUpstream, Endpoint, Function, HostPort, KubeUpstream, LambdaFunction, Metadata, ResourceRef, StaticUpstream,
    Upstream, function, upstream::UpstreamType,
};

use crate::gloo;

/// The value of `Upstream.written_by` for everything this process writes.
pub const WRITTEN_BY: &str = "discovery";
/// The label Kubernetes puts on an EndpointSlice to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label Gloo puts on the Upstreams it discovers.
pub const DISCOVERED_BY_LABEL: (&str, &str) = ("discovered_by", "kubernetesplugin");

/// Every Upstream the index implies, by KV key (`<namespace>.<upstream name>`).
pub fn upstreams(index: &Index) -> BTreeMap<String, Upstream> {
    let slices = slices_by_service(index);
    let mut out = BTreeMap::new();
    for ((namespace, name), service) in &index.services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            tracing::debug!(namespace, name, "skipping ExternalName service");
            continue;
        }
        let slices = slices
            .get(&(namespace.as_str(), name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            let Some(number) = port_number(port.port) else {
                tracing::debug!(namespace, name, port = port.port, "skipping service port out of range");
                continue;
            };
            let upstream = upstream(namespace, name, service, port, number, slices);
            let key = kgw_proto::nats::key(namespace, &upstream_name(namespace, name, number));
            out.insert(key, upstream);
        }
    }
    for ((namespace, name), declared) in &index.upstreams {
        if let Some(upstream) = declared_upstream(namespace, name, declared, index, &slices) {
            out.insert(kgw_proto::nats::key(namespace, name), upstream);
        }
    }
    out
}

/// A declared Upstream as the bus carries it; `None` when its spec is unusable (the config
/// source has reported that already: decoding validates it).
fn declared_upstream(
    namespace: &str,
    name: &str,
    declared: &gloo::Upstream,
    index: &Index,
    slices: &BTreeMap<(&str, &str), Vec<&EndpointSlice>>,
) -> Option<Upstream> {
    let spec = &declared.spec;
    spec.validate().ok()?;
    let http2 = if spec.use_http2 == Some(true) { "HTTP2" } else { "" };
    let mut functions = Vec::new();
    let upstream_type = if let Some(kube) = &spec.kube {
        let service_namespace = kube.service_namespace.as_deref().unwrap_or(namespace);
        let service = index
            .services
            .get(&(service_namespace.to_string(), kube.service_name.clone()));
        // The Service's port of that number, for its name (slices name ports) and its
        // appProtocol; without the Service, no endpoints.
        let port = service
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| port_number(p.port) == Some(kube.service_port)));
        let endpoints = match port {
            Some(port) => {
                let slices = slices
                    .get(&(service_namespace, kube.service_name.as_str()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                endpoints(port, slices)
            }
            None => Vec::new(),
        };
        let protocol = port.map(app_protocol).filter(|p| !p.is_empty()).unwrap_or(http2);
        UpstreamType::Kube(KubeUpstream {
            service_name: kube.service_name.clone(),
            service_namespace: service_namespace.to_string(),
            service_port: kube.service_port,
            selector: kube.selector.clone(),
            endpoints,
            app_protocol: protocol.to_string(),
        })
    } else if let Some(hosts) = &spec.static_ {
        UpstreamType::Static(StaticUpstream {
            hosts: hosts
                .hosts
                .iter()
                .map(|h| HostPort {
                    address: h.addr.clone(),
                    port: h.port,
                    sni: h.sni_addr.clone().unwrap_or_default(),
                })
                .collect(),
            use_tls: hosts.use_tls == Some(true),
            app_protocol: http2.to_string(),
        })
    } else {
        let aws = spec.aws.as_ref()?;
        functions = aws
            .lambda_functions
            .iter()
            .map(|f| Function {
                name: f.logical_name.clone().unwrap_or_else(|| f.lambda_function_name.clone()),
                kind: "lambda".into(),
                spec: Some(function::Spec::Lambda(LambdaFunction {
                    function_name: f.lambda_function_name.clone(),
                    qualifier: f.qualifier.clone().unwrap_or_else(|| "$LATEST".into()),
                    arn: String::new(),
                })),
            })
            .collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        functions.dedup_by(|later, kept| later.name == kept.name);
        UpstreamType::Aws(AwsUpstream {
            region: aws.region.clone(),
            secret_ref: Some(ResourceRef {
                kind: "Secret".into(),
                namespace: aws
                    .secret_ref
                    .namespace
                    .clone()
                    .unwrap_or_else(|| namespace.to_string()),
                name: aws.secret_ref.name.clone(),
            }),
        })
    };
    Some(Upstream {
        metadata: Some(Metadata {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels: declared.metadata.labels.clone().unwrap_or_default(),
        }),
        upstream_type: Some(upstream_type),
        functions,
        written_by: WRITTEN_BY.to_string(),
        grpc_descriptors: Vec::new(),
    })
}

/// Gloo's name for a discovered Upstream.
pub fn upstream_name(namespace: &str, service: &str, port: u32) -> String {
    format!("{namespace}-{service}-{port}")
}

/// `HTTP2` for ports that speak h2c or gRPC, `WS` for WebSocket ones (HTTP/1.1 with
/// upgrades), else "" (HTTP/1.1).
pub fn app_protocol(port: &ServicePort) -> &'static str {
    match port.app_protocol.as_deref() {
        Some("kubernetes.io/h2c" | "grpc" | "http2") => "HTTP2",
        Some("kubernetes.io/ws" | "kubernetes.io/wss") => "WS",
        _ => "",
    }
}

fn upstream(
    namespace: &str,
    name: &str,
    service: &Service,
    port: &ServicePort,
    number: u32,
    slices: &[&EndpointSlice],
) -> Upstream {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(DISCOVERED_BY_LABEL.0.into(), DISCOVERED_BY_LABEL.1.into());
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    Upstream {
        metadata: Some(Metadata {
            namespace: namespace.to_string(),
            name: upstream_name(namespace, name, number),
            labels,
        }),
        upstream_type: Some(UpstreamType::Kube(KubeUpstream {
            service_name: name.to_string(),
            service_namespace: namespace.to_string(),
            service_port: number,
            selector,
            endpoints: endpoints(port, slices),
            app_protocol: app_protocol(port).to_string(),
        })),
        functions: Vec::new(),
        written_by: WRITTEN_BY.to_string(),
        grpc_descriptors: Vec::new(),
    }
}

/// EndpointSlices by the (namespace, Service name) their label names.
fn slices_by_service(index: &Index) -> BTreeMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut out: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for ((namespace, _), slice) in &index.endpoint_slices {
        let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            out.entry((namespace.as_str(), service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    out
}

/// The endpoints of one Service port: every address of every endpoint, on the port number
/// of each slice port with the same name (and protocol). Sorted by (address, port) and
/// deduplicated (an address listed twice is ready if any copy is), so equal sets encode to
/// equal bytes whatever the slices' order.
fn endpoints(port: &ServicePort, slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let name = port.name.as_deref().unwrap_or("");
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            tracing::debug!(slice = ?slice.metadata.name, address_type = slice.address_type, "skipping slice: not an IP address type");
            continue;
        }
        let numbers =
            slice.ports.iter().flatten().filter(|p| {
                p.name.as_deref().unwrap_or("") == name && p.protocol.as_deref().unwrap_or("TCP") == protocol
            });
        for number in numbers.filter_map(|p| p.port.and_then(port_number)) {
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                // As Kubernetes: ready unless said otherwise; a terminating endpoint is not.
                let ready = conditions.and_then(|c| c.ready) != Some(false)
                    && conditions.and_then(|c| c.terminating) != Some(true);
                for address in &endpoint.addresses {
                    out.push(Endpoint {
                        address: address.clone(),
                        port: number,
                        ready,
                        zone: endpoint.zone.clone().unwrap_or_default(),
                        hostname: endpoint.hostname.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
    // Ready copies first, so dedup keeps them.
    out.sort_by(|a, b| {
        (&a.address, a.port, !a.ready, &a.zone, &a.hostname).cmp(&(&b.address, b.port, !b.ready, &b.zone, &b.hostname))
    });
    out.dedup_by(|later, kept| later.address == kept.address && later.port == kept.port);
    out
}

fn port_number(port: i32) -> Option<u32> {
    u32::try_from(port).ok().filter(|p| (1..=65535).contains(p))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions, EndpointPort};
    use prost::Message as _;

    use super::*;

    fn service(ports: &[(&str, i32)]) -> Service {
        let mut service = Service::default();
        service.metadata.name = Some("web".into());
        service.metadata.namespace = Some("default".into());
        service.spec = Some(ServiceSpec {
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.to_string()),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        service
    }

    fn slice(name: &str, port: i32, addresses: &[(&str, Option<bool>)]) -> EndpointSlice {
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            ..Default::default()
        };
        slice.metadata.name = Some(name.into());
        slice.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into());
        slice.ports = Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port),
            ..Default::default()
        }]);
        slice.endpoints = addresses
            .iter()
            .map(|(address, ready)| SliceEndpoint {
                addresses: vec![address.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        slice
    }

    fn index(slices: Vec<(&str, EndpointSlice)>) -> Index {
        let mut index = Index::default();
        index
            .services
            .insert(("default".into(), "web".into()), Arc::new(service(&[("http", 80)])));
        for (name, slice) in slices {
            index
                .endpoint_slices
                .insert(("default".into(), name.into()), Arc::new(slice));
        }
        index
    }

    fn bytes(index: &Index) -> Vec<Vec<u8>> {
        upstreams(index).values().map(|u| u.encode_to_vec()).collect()
    }

    #[test]
    fn equal_endpoint_sets_encode_to_equal_bytes_whatever_the_slices() {
        let a = slice("a", 8080, &[("10.0.0.2", None), ("10.0.0.1", Some(true))]);
        let b = slice("b", 8080, &[("10.0.0.3", None)]);
        let one = index(vec![("web-a", a.clone()), ("web-b", b.clone())]);
        let swapped = index(vec![("web-a", b), ("web-b", a)]);
        assert_eq!(bytes(&one), bytes(&swapped));
    }

    #[test]
    fn duplicate_address_is_ready_if_any_copy_is() {
        let a = slice("a", 8080, &[("10.0.0.1", Some(false))]);
        let b = slice("b", 8080, &[("10.0.0.1", Some(true))]);
        let all = upstreams(&index(vec![("web-a", a), ("web-b", b)]));
        let Some(UpstreamType::Kube(kube)) = all["default.default-web-80"].upstream_type.clone() else {
            panic!("kube upstream")
        };
        assert_eq!(kube.endpoints.len(), 1);
        assert!(kube.endpoints[0].ready);
    }

    #[test]
    fn app_protocols() {
        let port = |p: Option<&str>| ServicePort {
            app_protocol: p.map(Into::into),
            ..Default::default()
        };
        assert_eq!(app_protocol(&port(Some("kubernetes.io/h2c"))), "HTTP2");
        assert_eq!(app_protocol(&port(Some("grpc"))), "HTTP2");
        assert_eq!(app_protocol(&port(Some("http2"))), "HTTP2");
        assert_eq!(app_protocol(&port(Some("kubernetes.io/ws"))), "WS");
        assert_eq!(app_protocol(&port(Some("http"))), "");
        assert_eq!(app_protocol(&port(None)), "");
    }
}

//! Upstreams → Envoy Clusters and ClusterLoadAssignments.
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster},
            core::v3::{HealthStatus, Http2ProtocolOptions, TransportSocket, transport_socket},
            endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
        },
        extensions::{
            transport_sockets::tls::v3::UpstreamTlsContext,
            upstreams::http::v3::{HttpProtocolOptions, http_protocol_options},
        },
    },
    google::protobuf::Duration,
};
use envoy_types::util::pack_any;
use kgw_proto::v1 as pb;

use super::listeners::{ads_config_source, socket_address};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn connect_timeout() -> Option<Duration> {
    Some(Duration { seconds: 5, nanos: 0 })
}

fn http2(cluster: &mut Cluster) {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    cluster
        .typed_extension_protocol_options
        .insert(HTTP_PROTOCOL_OPTIONS.into(), pack_any(options));
}

fn discovery_type(t: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(t as i32))
}

fn load_assignment<'a>(name: &str, hosts: impl Iterator<Item = (&'a str, u32, bool)>) -> ClusterLoadAssignment {
    let lb_endpoints = hosts
        .map(|(address, port, ready)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(address, port)),
                ..Default::default()
            })),
            health_status: if ready {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            } as i32,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One Cluster per Upstream; kube upstreams are EDS clusters with their endpoints as a
/// separate ClusterLoadAssignment, static upstreams carry their hosts inline.
pub(super) fn cluster(name: &str, upstream: &pb::Upstream) -> (Cluster, Option<ClusterLoadAssignment>) {
    let mut out = Cluster {
        name: name.to_string(),
        connect_timeout: connect_timeout(),
        ..Default::default()
    };
    match &upstream.upstream_type {
        Some(pb::upstream::UpstreamType::Kube(kube)) => {
            out.cluster_discovery_type = discovery_type(cluster::DiscoveryType::Eds);
            out.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: String::new(),
            });
            if kube.app_protocol == "HTTP2" {
                http2(&mut out);
            }
            let ready = kube.endpoints.iter().filter(|e| e.ready);
            let endpoints = load_assignment(name, ready.map(|e| (e.address.as_str(), e.port, true)));
            (out, Some(endpoints))
        }
        Some(pb::upstream::UpstreamType::Static(hosts)) => {
            let all_ips = hosts
                .hosts
                .iter()
                .all(|h| h.address.parse::<std::net::IpAddr>().is_ok());
            let kind = if all_ips {
                cluster::DiscoveryType::Static
            } else {
                cluster::DiscoveryType::StrictDns
            };
            out.cluster_discovery_type = discovery_type(kind);
            out.load_assignment = Some(load_assignment(
                name,
                hosts.hosts.iter().map(|h| (h.address.as_str(), h.port, true)),
            ));
            if hosts.app_protocol == "HTTP2" {
                http2(&mut out);
            }
            if hosts.use_tls {
                out.transport_socket = Some(upstream_tls(&hosts.hosts));
            }
            (out, None)
        }
        // Routing to Lambda functions is not translated yet: the cluster exists (routes to
        // it are valid) and has no hosts, so a request to it is answered 503.
        Some(pb::upstream::UpstreamType::Aws(_)) | None => {
            out.cluster_discovery_type = discovery_type(cluster::DiscoveryType::Static);
            out.load_assignment = Some(load_assignment(name, std::iter::empty()));
            (out, None)
        }
    }
}

/// TLS to a static upstream (Gloo's `useTls`): the SNI is the first host's `sni`, else its
/// address when that is a name. The server's certificate is not verified, as in Gloo
/// without an `sslConfig`.
fn upstream_tls(hosts: &[pb::HostPort]) -> TransportSocket {
    let sni = hosts
        .iter()
        .find_map(|h| (!h.sni.is_empty()).then(|| h.sni.clone()))
        .or_else(|| {
            hosts
                .iter()
                .find(|h| h.address.parse::<std::net::IpAddr>().is_err())
                .map(|h| h.address.clone())
        })
        .unwrap_or_default();
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            UpstreamTlsContext {
                sni,
                ..Default::default()
            },
        ))),
    }
}

/// One gRPC access-log sink replica (cluster `name`, see `access_log_cluster_name`),
/// reached over HTTP/2.
pub(super) fn access_log_cluster(name: &str, address: &str) -> Cluster {
    static_http_cluster(name, address, true)
}

/// A cluster of one `host:port` (an IP: STATIC; a name: STRICT_DNS), for our own services.
pub(super) fn static_http_cluster(name: &str, address: &str, http2_only: bool) -> Cluster {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "80"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().unwrap_or(80);
    let kind = if host.parse::<std::net::IpAddr>().is_ok() {
        cluster::DiscoveryType::Static
    } else {
        cluster::DiscoveryType::StrictDns
    };
    let mut out = Cluster {
        name: name.into(),
        connect_timeout: connect_timeout(),
        cluster_discovery_type: discovery_type(kind),
        load_assignment: Some(load_assignment(name, std::iter::once((host, port, true)))),
        ..Default::default()
    };
    if http2_only {
        http2(&mut out);
    }
    out
}

//! Proxy listeners → Envoy Listeners: one per bind address and port, with one filter chain
//! (an HTTP connection manager: RDS over ADS, router, gRPC access log) per Proxy listener
//! there. An HTTPS Proxy listener's chain is chosen by SNI (`filter_chain_match.server_names`;
//! none: the default chain) and terminates TLS with the Secrets it names, served over SDS on
//! the same ADS stream (see `crate::secrets` and proxy.proto), validating client
//! certificates against the CAs the Proxy listener carries, if any.
//!
//! Every HTTP connection manager runs the on-demand filter first: an Envoy on delta ADS gets
//! its virtual hosts over VHDS (see `xds::vhds`), and the filter holds a request whose host
//! matches none of them while Envoy asks for it, instead of answering 404. With a route
//! table that does not use VHDS (state of the world, REST) the filter lets the request on
//! at once, so both protocols share one listener.
use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{AccessLog, access_log},
        core::v3::{
            Address, AggregatedConfigSource, ApiVersion, ConfigSource, GrpcService, SocketAddress, address,
            config_source, grpc_service, socket_address,
        },
        core::v3::{DataSource, TransportSocket, data_source},
        listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter},
    },
    extensions::{
        access_loggers::grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
        filters::listener::tls_inspector::v3::TlsInspector,
        filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
            },
        },
        transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
            certificate_validation_context, common_tls_context,
        },
    },
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration};
use envoy_types::util::pack_any;
use kgw_proto::v1 as pb;

use super::{Settings, access_log_cluster_name};

/// Configuration delivered over the same ADS stream as everything else.
pub(super) fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

pub(super) fn socket_address(address: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// How often Envoy sends what its gRPC access loggers buffered (unless 16 KiB fill first).
/// Short, so that little waits in Envoy; the replicas make it lossless anyway.
pub(super) const ACCESS_LOG_FLUSH_MS: i32 = 200;

/// An access logger sending every entry to the sink replica behind `cluster`. Each replica
/// has its own logger, so each receives every entry.
fn grpc_access_log(log_name: &str, cluster: &str) -> AccessLog {
    AccessLog {
        name: "envoy.access_loggers.http_grpc".into(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack_any(HttpGrpcAccessLogConfig {
            common_config: Some(CommonGrpcAccessLogConfig {
                log_name: log_name.to_string(),
                grpc_service: Some(GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                        cluster_name: cluster.to_string(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                transport_api_version: ApiVersion::V3 as i32,
                buffer_flush_interval: Some(Duration {
                    seconds: 0,
                    nanos: ACCESS_LOG_FLUSH_MS * 1_000_000,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// The filter chain of Proxy listener `listener`; `wasm_filters` run before the router,
/// disabled unless a route enables them. `secrets`: the SDS names of an HTTPS listener's
/// certificates (empty: plain HTTP).
pub(super) fn http_filter_chain(
    listener: &pb::Listener,
    settings: &Settings,
    wasm_filters: Vec<HttpFilter>,
    secrets: &[String],
) -> FilterChain {
    let access_log = (0..settings.access_log_addresses.len())
        .map(|i| grpc_access_log(&listener.name, &access_log_cluster_name(i)))
        .collect();
    let hcm = HttpConnectionManager {
        stat_prefix: listener.name.replace('~', "_"),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: listener.name.clone(),
        })),
        // No `on_demand` filter: Envoy's VHDS watch is a wildcard, so every virtual host is
        // pushed as it changes and there is nothing to fetch on demand. With the filter each
        // request no route matches (a scan of unknown hosts, a poller's 404s) made Envoy ask,
        // and each answer, even "none", made it copy and rebuild its whole route table: one
        // 404 cost a rebuild of thousands of virtual hosts (see `xds/vhds.rs`).
        http_filters: wasm_filters
            .into_iter()
            // Off unless a route to a gRPC Upstream with discovered methods turns it on.
            .chain(std::iter::once(super::grpc_json::http_filter()))
            // Does nothing on routes without a CORS policy (their per-route config).
            .chain(std::iter::once(HttpFilter {
                name: super::route_features::CORS_FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors::default(),
                ))),
                ..Default::default()
            }))
            .chain(std::iter::once(HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Router::default()))),
                ..Default::default()
            }))
            .collect(),
        access_log,
        // A host with a port matches its virtual host by RouteConfiguration's
        // ignore_port_in_host_matching, which leaves the Host as sent.
        // WebSocket upgrades pass (as Gloo allows them by default): backends with
        // appProtocol kubernetes.io/ws need them; others answer an upgrade as they see fit.
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let server_names: Vec<String> = listener
        .ssl_configurations
        .iter()
        .flat_map(|ssl| ssl.sni_domains.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let tls = !secrets.is_empty();
    FilterChain {
        // Only TLS chains are told apart (by SNI); a plain chain matches every connection.
        filter_chain_match: (tls && !server_names.is_empty()).then(|| FilterChainMatch {
            server_names,
            ..Default::default()
        }),
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
        }],
        transport_socket: tls.then(|| downstream_tls(secrets, listener.client_validation.as_ref())),
        name: if tls { listener.name.clone() } else { String::new() },
        ..Default::default()
    }
}

/// TLS termination with the certificates of SDS resources `secrets` (over ADS, so that the
/// listener carries no key); ALPN offers HTTP/2 first, then HTTP/1.1. With `client`
/// validation, clients are asked for a certificate (see [`client_validation_context`]).
fn downstream_tls(secrets: &[String], client: Option<&pb::ClientValidation>) -> TransportSocket {
    let context = DownstreamTlsContext {
        // Without the fallback a client lacking a certificate fails the handshake; with it,
        // the certificate is asked for but optional.
        require_client_certificate: client
            .filter(|c| !c.allow_insecure_fallback)
            .map(|_| BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: client.map(client_validation_context),
            tls_certificate_sds_secret_configs: secrets
                .iter()
                .map(|name| SdsSecretConfig {
                    name: name.clone(),
                    sds_config: Some(ads_config_source()),
                })
                .collect(),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(pack_any(context)),
        ),
    }
}

/// Client certificates must chain to the listener's CAs (inline: CA certificates are
/// public, so unlike keys they need no SDS). With the insecure fallback, a certificate that
/// does not verify is accepted as well (the handshake never fails on it).
fn client_validation_context(client: &pb::ClientValidation) -> common_tls_context::ValidationContextType {
    let trust_chain_verification = if client.allow_insecure_fallback {
        certificate_validation_context::TrustChainVerification::AcceptUntrusted
    } else {
        certificate_validation_context::TrustChainVerification::VerifyTrustChain
    };
    common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
        trusted_ca: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(client.trusted_ca_pem.clone())),
            ..Default::default()
        }),
        trust_chain_verification: trust_chain_verification as i32,
        ..Default::default()
    })
}

/// The Envoy listener `name` on `address:port` with `chains`. With TLS chains it reads the
/// ClientHello first (TLS inspector), to choose a chain by SNI.
pub(super) fn envoy_listener(name: &str, address: &str, port: u32, chains: Vec<FilterChain>) -> Listener {
    let tls = chains.iter().any(|c| c.transport_socket.is_some());
    let listener_filters = tls
        .then(|| ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        })
        .into_iter()
        .collect();
    Listener {
        name: name.to_string(),
        address: Some(socket_address(address, port)),
        filter_chains: chains,
        listener_filters,
        ..Default::default()
    }
}

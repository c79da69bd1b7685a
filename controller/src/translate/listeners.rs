//! Proxy listener → Envoy Listener with an HTTP connection manager (RDS over ADS, router,
//! gRPC access log).
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
        listener::v3::{Filter, FilterChain, Listener, filter},
    },
    extensions::{
        access_loggers::grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
        filters::{
            http::{on_demand::v3::OnDemand, router::v3::Router},
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
            },
        },
    },
};
use envoy_types::pb::google::protobuf::Duration;
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

/// `wasm_filters` run before the router, disabled unless a route enables them.
pub(super) fn http_listener(listener: &pb::Listener, settings: &Settings, wasm_filters: Vec<HttpFilter>) -> Listener {
    let access_log = (0..settings.access_log_addresses.len())
        .map(|i| grpc_access_log(&listener.name, &access_log_cluster_name(i)))
        .collect();
    let hcm = HttpConnectionManager {
        stat_prefix: listener.name.replace('~', "_"),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: listener.name.clone(),
        })),
        http_filters: std::iter::once(HttpFilter {
            name: "envoy.filters.http.on_demand".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(OnDemand::default()))),
            ..Default::default()
        })
        .chain(wasm_filters)
        // Off unless a route to a gRPC Upstream with discovered methods turns it on.
        .chain(std::iter::once(super::grpc_json::http_filter()))
        .chain(std::iter::once(HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Router::default()))),
            ..Default::default()
        }))
        .collect(),
        access_log,
        // Host "a.example:8080" matches virtual host domain "a.example".
        strip_port_mode: Some(http_connection_manager::StripPortMode::StripAnyHostPort(true)),
        ..Default::default()
    };
    Listener {
        name: listener.name.clone(),
        address: Some(socket_address(&listener.bind_address, listener.bind_port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

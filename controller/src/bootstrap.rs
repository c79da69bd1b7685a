//! Envoy's bootstrap: node identity (with the `role` that picks its Proxy), the ADS cluster
//! pointing at the controller, and the admin listener. Everything else comes over xDS.
use serde_json::json;

/// What the bootstrap names.
#[derive(Clone, Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Envoy node id (unique per Envoy).
    #[arg(long, default_value = "gateway-proxy")]
    pub node_id: String,
    /// Envoy node cluster.
    #[arg(long, default_value = "gateway-proxy")]
    pub node_cluster: String,
    /// `<namespace>~<gateway>`: the Gateway whose Proxy this Envoy serves.
    #[arg(long)]
    pub role: String,
    /// host:port of the controller's xDS (ADS) server.
    #[arg(long, default_value = "127.0.0.1:9977")]
    pub xds_addr: String,
    /// host:port Envoy's admin interface binds.
    #[arg(long, default_value = "127.0.0.1:19000")]
    pub admin_addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{flag}: expected host:port, got {value:?}")]
    Address { flag: &'static str, value: String },
    #[error("--role: expected <namespace>~<gateway>, got {0:?}")]
    Role(String),
}

fn split(flag: &'static str, value: &str) -> Result<(String, u16), BootstrapError> {
    let bad = || BootstrapError::Address {
        flag,
        value: value.to_string(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// The bootstrap as JSON (which is also YAML).
pub fn bootstrap(args: &BootstrapArgs) -> Result<serde_json::Value, BootstrapError> {
    if kgw_proto::nats::role_to_key(&args.role).is_none() {
        return Err(BootstrapError::Role(args.role.clone()));
    }
    let (xds_host, xds_port) = split("--xds-addr", &args.xds_addr)?;
    let (admin_host, admin_port) = split("--admin-addr", &args.admin_addr)?;
    let xds_type = if xds_host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    Ok(json!({
        "node": {
            "id": args.node_id,
            "cluster": args.node_cluster,
            "metadata": { "role": args.role },
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": {
                        "cluster_name": "xds_cluster",
                        // Reconnect quickly when the controller comes back.
                        "retry_policy": { "retry_back_off": { "base_interval": "0.1s", "max_interval": "1s" } },
                    },
                }],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": {
            "clusters": [{
                "name": "xds_cluster",
                "type": xds_type,
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} },
                    },
                },
                "load_assignment": {
                    "cluster_name": "xds_cluster",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "socket_address": { "address": xds_host, "port_value": xds_port },
                    } } }] }],
                },
            }],
        },
        "admin": {
            "address": { "socket_address": { "address": admin_host, "port_value": admin_port } },
        },
    }))
}

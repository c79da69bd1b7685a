//! Envoy configured without our control plane: a static bootstrap equivalent to what our
//! xDS serves for a generated route set (one listener, a virtual host per route's hostname,
//! a cluster per Service), its route table inline or from a watched file (RDS from the
//! filesystem), with our gRPC access log, Envoy's own file log, or none.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kgw_harness::{Process, envoy, tools};
use serde_json::{Value, json};

use crate::routeset::{self, Backends};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const ROUTE_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// The cluster our controller names for the access-log sink.
const ACCESS_LOG_CLUSTER: &str = "kgw-access-log";

pub enum AccessLog {
    None,
    /// Envoy's own file access log (default text format).
    File(PathBuf),
    /// The gRPC access log service at this address (our `access-log` process), over mTLS
    /// with the certificate in the SDS files of `sds_dir` (the system's Envoy's, as the
    /// controller configures it) unless `None` (mTLS off).
    Grpc {
        addr: SocketAddr,
        sds_dir: Option<PathBuf>,
    },
}

pub enum Routes {
    Inline(Vec<Value>),
    /// RDS from `dir/file`, reloaded when a file is moved into `dir`.
    File {
        path: PathBuf,
        dir: PathBuf,
    },
    /// RDS over ADS (state of the world) from the gRPC server at this address.
    Ads(SocketAddr),
}

/// The cluster of [`Routes::Ads`]' server.
const ADS_CLUSTER: &str = "kgw-bench-ads";

/// The virtual host of route `name`: its hostname, its prefix, its Service's cluster.
pub fn virtual_host(name: &str, svc: &str) -> Value {
    json!({
        "name": name,
        "domains": [routeset::host(name)],
        "routes": [{"match": {"prefix": format!("/{name}")}, "route": {"cluster": routeset::cluster_name(svc)}}],
    })
}

/// Virtual hosts of routes `0..n` of a set.
pub fn virtual_hosts(n: usize) -> Vec<Value> {
    let services = routeset::services_for(n);
    (0..n)
        .map(|i| virtual_host(&routeset::route_name(i), &routeset::service_of(i, services)))
        .collect()
}

fn socket(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

fn static_cluster(name: &str, endpoints: &[SocketAddr], http2: bool) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|a| json!({"endpoint": {"address": socket(*a)}}))
        .collect();
    let mut c = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]},
    });
    if http2 {
        c["typed_extension_protocol_options"] = json!({HTTP_OPTIONS: {
            "@type": format!("type.googleapis.com/{HTTP_OPTIONS}"),
            "explicit_http_config": {"http2_protocol_options": {}},
        }});
    }
    c
}

/// A cluster per Service of a set of `n` routes, endpoints as the generator gives them.
pub fn service_clusters(n: usize, backends: &Backends) -> Vec<Value> {
    (0..routeset::services_for(n))
        .map(|j| {
            let eps: Vec<SocketAddr> = backends
                .endpoints(j, routeset::ENDPOINTS_PER_SERVICE)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, backends.port))
                .collect();
            static_cluster(&routeset::cluster_name(&routeset::service_name(j)), &eps, false)
        })
        .collect()
}

pub fn bootstrap(
    admin: SocketAddr,
    listen: SocketAddr,
    routes: Routes,
    mut clusters: Vec<Value>,
    log: AccessLog,
) -> Result<Value> {
    let listener_name = format!("listener~{}", listen.port());
    let access_log = match log {
        AccessLog::None => json!([]),
        AccessLog::File(path) => json!([{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
        }}]),
        AccessLog::Grpc { addr, sds_dir } => {
            let mut cluster = static_cluster(ACCESS_LOG_CLUSTER, &[addr], true);
            if let Some(dir) = sds_dir {
                // The transport socket the controller gives its own access-log clusters.
                let socket = controller::translate::proxy_tls::transport_socket(
                    &dir.display().to_string(),
                    kgw_proto::nats::users::ACCESS_LOG,
                );
                cluster["transport_socket"] = controller::json::message_to_json(&socket)?;
            }
            clusters.push(cluster);
            json!([{"name": "envoy.access_loggers.http_grpc", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                "common_config": {
                    "log_name": listener_name,
                    "grpc_service": {"envoy_grpc": {"cluster_name": ACCESS_LOG_CLUSTER}},
                    "transport_api_version": "V3",
                },
            }}])
        }
    };
    let mut hcm = json!({
        "@type": HCM,
        "stat_prefix": listener_name.replace('~', "_"),
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        "access_log": access_log,
        "strip_any_host_port": true,
    });
    let mut dynamic = json!({});
    match routes {
        Routes::Inline(vhosts) => hcm["route_config"] = json!({"name": listener_name, "virtual_hosts": vhosts}),
        Routes::File { path, dir } => {
            hcm["rds"] = json!({"route_config_name": listener_name, "config_source": {
                "path_config_source": {"path": path.display().to_string(), "watched_directory": {"path": dir.display().to_string()}},
                "resource_api_version": "V3",
            }})
        }
        Routes::Ads(server) => {
            hcm["rds"] = json!({"route_config_name": listener_name, "config_source": {
                "ads": {}, "resource_api_version": "V3",
            }});
            clusters.push(static_cluster(ADS_CLUSTER, &[server], true));
            dynamic = json!({"ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": ADS_CLUSTER}}],
            }});
        }
    }
    Ok(json!({
        "node": {"id": format!("bench-static-{listen}"), "cluster": "gw", "metadata": {"role": "default~gw"}},
        "admin": {"address": socket(admin)},
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": socket(listen),
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
        "dynamic_resources": dynamic,
    }))
}

/// An RDS file (a DiscoveryResponse) holding one route table.
pub fn rds_file(name: &str, version: usize, vhosts: &[Value]) -> Value {
    json!({"version_info": version.to_string(), "resources": [{
        "@type": ROUTE_CONFIG, "name": name, "virtual_hosts": vhosts,
    }]})
}

/// An Envoy of our own (same flags as the system's: one worker), stopped on drop.
pub struct StaticEnvoy {
    pub process: Process,
    pub listen: SocketAddr,
}

impl StaticEnvoy {
    pub async fn start(name: &str, dir: &Path, config: &Value, listen: SocketAddr) -> Result<Self> {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(config)?).with_context(|| format!("writing {}", path.display()))?;
        let mut process = Process::new(
            name,
            tools::ensure_envoy()?,
            envoy::args(&path, "warn"),
            dir.join(format!("{name}.log")),
        );
        process.start()?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if !process.is_running() || started.elapsed() > Duration::from_secs(60) {
                bail!("{name} does not listen on {listen}: {}", process.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(StaticEnvoy { process, listen })
    }
}

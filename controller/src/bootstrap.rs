//! Envoy's bootstrap: node identity (with the `role` that picks its Proxy), the ADS cluster
//! pointing at the controller, and the admin listener. Everything else comes over xDS.
use serde_json::json;

use crate::translate::proxy_tls;

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
    /// Envoy's certificate folder (`ca.crt`, `tls.crt`, `tls.key`; the certificate's
    /// common name `kgw-proxy:<role>`): Envoy reaches xDS with it. Without it, the
    /// bootstrap is plain text and needs `--insecure-no-mtls`.
    #[arg(long)]
    pub proxy_tls_dir: Option<String>,
    /// Where the SDS files naming those certificates are (the controller's
    /// `--proxy-sds-dir`); default: the certificate folder.
    #[arg(long)]
    pub proxy_sds_dir: Option<String>,
    /// Also write the SDS files (`sds-cert.json`, `sds-ca.json`) into the SDS folder.
    #[arg(long)]
    pub write_sds: bool,
    /// Incremental xDS: ADS over `DELTA_GRPC` (only changed resources are sent), instead of
    /// state of the world (`GRPC`).
    #[arg(long)]
    pub delta: bool,
}

impl BootstrapArgs {
    /// The SDS folder, if mTLS.
    pub fn sds_dir(&self) -> Option<&str> {
        self.proxy_sds_dir.as_deref().or(self.proxy_tls_dir.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{flag}: expected host:port, got {value:?}")]
    Address { flag: &'static str, value: String },
    #[error("--role: expected <namespace>~<gateway>, got {0:?}")]
    Role(String),
    #[error("no --proxy-tls-dir: Envoy needs its certificate to reach an mTLS controller (or --insecure-no-mtls)")]
    NoTls,
    #[error("cannot write the SDS file {path}")]
    WriteSds {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the SDS file")]
    Json(#[from] crate::json::JsonError),
}

/// Writes the SDS files for the certificates in `--proxy-tls-dir` into the SDS folder, each
/// atomically (a rename), so a running Envoy never reads half a file.
pub fn write_sds_files(args: &BootstrapArgs) -> Result<(), BootstrapError> {
    let (Some(tls_dir), Some(sds_dir)) = (args.proxy_tls_dir.as_deref(), args.sds_dir()) else {
        return Err(BootstrapError::NoTls);
    };
    for (file, secret) in proxy_tls::sds_secrets(tls_dir) {
        let body = json!({ "resources": [crate::json::any_to_json(&secret)?] });
        let path = format!("{sds_dir}/{file}");
        let staged = format!("{path}.tmp");
        let write = |source| BootstrapError::WriteSds {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(sds_dir).map_err(write)?;
        std::fs::write(&staged, serde_json::to_vec_pretty(&body).unwrap_or_default()).map_err(write)?;
        std::fs::rename(&staged, &path).map_err(write)?;
    }
    Ok(())
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

/// The bootstrap as JSON (which is also YAML). `insecure`: no certificate, plain text.
pub fn bootstrap(args: &BootstrapArgs, insecure: bool) -> Result<serde_json::Value, BootstrapError> {
    if kgw_proto::nats::role_to_key(&args.role).is_none() {
        return Err(BootstrapError::Role(args.role.clone()));
    }
    let transport_socket = match args.sds_dir() {
        Some(sds_dir) if args.proxy_tls_dir.is_some() => Some(crate::json::message_to_json(
            &proxy_tls::transport_socket(sds_dir, kgw_proto::nats::users::CONTROLLER),
        )?),
        _ if insecure => None,
        _ => return Err(BootstrapError::NoTls),
    };
    let (xds_host, xds_port) = split("--xds-addr", &args.xds_addr)?;
    let (admin_host, admin_port) = split("--admin-addr", &args.admin_addr)?;
    // Both protocols are served on the same port; see `xds::delta` for what delta brings.
    let api_type = if args.delta { "DELTA_GRPC" } else { "GRPC" };
    let xds_type = if xds_host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let mut bootstrap = json!({
        "node": {
            "id": args.node_id,
            "cluster": args.node_cluster,
            "metadata": { "role": args.role },
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
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
    });
    if let Some(socket) = transport_socket {
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] = socket;
    }
    Ok(bootstrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tls: Option<&str>) -> BootstrapArgs {
        BootstrapArgs {
            node_id: "n".into(),
            node_cluster: "c".into(),
            role: "default~gw".into(),
            xds_addr: "127.0.0.1:9977".into(),
            admin_addr: "127.0.0.1:19000".into(),
            proxy_tls_dir: tls.map(String::from),
            proxy_sds_dir: None,
            write_sds: false,
            delta: false,
        }
    }

    #[test]
    fn delta_asks_for_incremental_ads() {
        let mut delta = args(None);
        delta.delta = true;
        let value = bootstrap(&delta, true).unwrap();
        let dynamic = &value["dynamic_resources"];
        assert_eq!(dynamic["ads_config"]["api_type"], "DELTA_GRPC");
        assert_eq!(dynamic["ads_config"]["transport_api_version"], "V3");
        for config in ["cds_config", "lds_config"] {
            assert_eq!(dynamic[config]["resource_api_version"], "V3");
            assert!(dynamic[config]["ads"].is_object());
        }
        let plain = bootstrap(&args(None), true).unwrap();
        assert_eq!(plain["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    }

    #[test]
    fn xds_over_mtls_with_certificates_from_sds_files() {
        let value = bootstrap(&args(Some("/etc/kgw/tls")), false).unwrap();
        let socket = &value["static_resources"]["clusters"][0]["transport_socket"];
        let context = &socket["typedConfig"];
        assert_eq!(context["sni"], "controller.kgw.internal");
        let cert = &context["commonTlsContext"]["tlsCertificateSdsSecretConfigs"][0];
        assert_eq!(cert["name"], proxy_tls::CERT_SECRET);
        assert_eq!(
            cert["sdsConfig"]["pathConfigSource"]["path"],
            "/etc/kgw/tls/sds-cert.json"
        );
    }

    #[test]
    fn plain_text_only_when_asked() {
        assert!(matches!(bootstrap(&args(None), false), Err(BootstrapError::NoTls)));
        let plain = bootstrap(&args(None), true).unwrap();
        assert!(
            plain["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );
    }

    #[test]
    fn sds_files_name_the_certificate_folder() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().display().to_string();
        let mut with_files = args(Some(&tls));
        with_files.write_sds = true;
        write_sds_files(&with_files).unwrap();
        let cert: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(proxy_tls::CERT_SDS_FILE)).unwrap()).unwrap();
        let secret = &cert["resources"][0];
        assert_eq!(secret["name"], proxy_tls::CERT_SECRET);
        assert_eq!(
            secret["tlsCertificate"]["privateKey"]["filename"],
            format!("{tls}/tls.key")
        );
        assert_eq!(secret["tlsCertificate"]["watchedDirectory"]["path"], tls);
    }
}

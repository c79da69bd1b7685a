//! Envoy's command line and bootstraps.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Envoy's arguments: no hot restart (so no shared memory, no base id to pick), one
/// worker thread.
pub fn args(bootstrap: &Path, log_level: &str) -> Vec<String> {
    vec![
        "-c".into(),
        bootstrap.display().to_string(),
        "--disable-hot-restart".into(),
        "--concurrency".into(),
        "1".into(),
        "--log-level".into(),
        log_level.into(),
    ]
}

/// Which ADS protocol Envoy speaks to the controller (both are served on the same port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdsProtocol {
    /// State of the world (`api_type: GRPC`): every response carries every resource of its type.
    #[default]
    StateOfTheWorld,
    /// Incremental (`api_type: DELTA_GRPC`): only changed resources, and the names of removed ones.
    Delta,
}

impl XdsProtocol {
    /// The bootstrap's `ads_config.api_type`.
    pub fn api_type(self) -> &'static str {
        match self {
            XdsProtocol::StateOfTheWorld => "GRPC",
            XdsProtocol::Delta => "DELTA_GRPC",
        }
    }
}

/// The identity and addresses of one gateway-proxy.
#[derive(Clone, Debug)]
pub struct BootstrapParams {
    pub node_id: String,
    /// `<namespace>~<gateway name>`: picks the Proxy the controller serves.
    pub role: String,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    /// Envoy's certificate folder (mTLS; the SDS files are written beside it); `None`:
    /// plain text.
    pub tls_dir: Option<std::path::PathBuf>,
    /// The ADS protocol of the bootstrap.
    pub xds_protocol: XdsProtocol,
}

/// Writes to `out` the bootstrap printed by `controller bootstrap` (allowed 10 s); if that
/// subcommand fails, the equivalent from [`fallback_bootstrap`] (with a warning on stderr).
pub fn write_bootstrap(controller: &Path, p: &BootstrapParams, out: &Path) -> Result<()> {
    let err_path = out.with_extension("stderr");
    let file = |p: &Path| File::create(p).with_context(|| format!("creating {}", p.display()));
    let mut child = Command::new(controller)
        .arg("bootstrap")
        .args(["--node-id", &p.node_id, "--role", &p.role])
        .args(["--xds-addr", &p.xds.to_string(), "--admin-addr", &p.admin.to_string()])
        .args(match &p.tls_dir {
            Some(dir) => vec![
                "--proxy-tls-dir".to_string(),
                dir.display().to_string(),
                "--write-sds".into(),
            ],
            None => vec!["--insecure-no-mtls".to_string()],
        })
        .args((p.xds_protocol == XdsProtocol::Delta).then_some("--delta"))
        .stdin(Stdio::null())
        .stdout(file(out)?)
        .stderr(file(&err_path)?)
        .spawn()
        .with_context(|| format!("running {} bootstrap", controller.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let yaml = std::fs::read_to_string(out).unwrap_or_default();
    let why = match status {
        Some(st) if st.success() && !yaml.trim().is_empty() => return Ok(()),
        Some(st) => {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            format!("{st}: {}", stderr.lines().next().unwrap_or("it printed nothing"))
        }
        None => "no answer in 10 s".into(),
    };
    if p.tls_dir.is_some() {
        anyhow::bail!("`controller bootstrap` with mTLS failed ({why}); the harness has no plain fallback for it");
    }
    eprintln!("kgw-harness: no bootstrap from `controller bootstrap` ({why}); using the harness's own");
    std::fs::write(out, fallback_bootstrap(p)).with_context(|| format!("writing {}", out.display()))
}

/// ADS from the controller over gRPC, admin on `admin`, node metadata `role`.
pub fn fallback_bootstrap(p: &BootstrapParams) -> String {
    let cluster = p.role.rsplit('~').next().unwrap_or("gateway-proxy");
    format!(
        r#"node:
  id: "{id}"
  cluster: "{cluster}"
  metadata:
    role: "{role}"
admin:
  address:
    socket_address: {{ address: "{admin_ip}", port_value: {admin_port} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds_cluster }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: "{xds_ip}", port_value: {xds_port} }}
"#,
        id = p.node_id,
        role = p.role,
        api_type = p.xds_protocol.api_type(),
        admin_ip = p.admin.ip(),
        admin_port = p.admin.port(),
        xds_ip = p.xds.ip(),
        xds_port = p.xds.port(),
    )
}

/// A static bootstrap: one listener on `listen` answering every request `status` with
/// `body`, admin on `admin`. Proves the Envoy launch path; a baseline for benchmarks.
pub fn direct_response_bootstrap(admin: SocketAddr, listen: SocketAddr, status: u16, body: &str) -> Result<String> {
    if body.contains(['"', '\\', '\n']) {
        bail!("keep the body plain");
    }
    Ok(format!(
        r#"admin:
  address:
    socket_address: {{ address: "{admin_ip}", port_value: {admin_port} }}
static_resources:
  listeners:
  - name: direct
    address:
      socket_address: {{ address: "{ip}", port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: direct
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response:
                  status: {status}
                  body: {{ inline_string: "{body}" }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        admin_ip = admin.ip(),
        admin_port = admin.port(),
        ip = listen.ip(),
        port = listen.port(),
    ))
}

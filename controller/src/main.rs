#![forbid(unsafe_code)]
use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use controller::{
    bootstrap, run,
    translate::{Settings, wasm::WasmModules},
};
use kgw_common::{
    config::CommonArgs,
    monitoring::serve_monitoring,
    shutdown::{self, Shutdown},
    telemetry,
};

/// Proxy + Upstreams → Envoy configuration, served over xDS.
#[derive(Parser, Debug)]
#[command(name = "controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the xDS (ADS) gRPC server.
    #[arg(long, env = "KGW_XDS_ADDR", default_value = "127.0.0.1:9977")]
    xds_addr: SocketAddr,
    /// host:port of the access-log sink Envoy streams its access logs to; empty: none.
    #[arg(long, env = "KGW_ACCESS_LOG_ADDR", default_value = "127.0.0.1:8083")]
    access_log_addr: String,
    /// Address of the WASM filter cache (HTTP): Envoy fetches modules from it.
    #[arg(long, env = "KGW_WASM_CACHE_ADDR", default_value = "127.0.0.1:9979")]
    wasm_cache_addr: SocketAddr,
    /// Directory where fetched and verified WASM modules are kept.
    #[arg(long, env = "KGW_WASM_CACHE_DIR", default_value = "/tmp/kgw-wasm-cache")]
    wasm_cache_dir: std::path::PathBuf,
    /// host:port Envoy fetches cached WASM modules from (the gloo Service in a cluster);
    /// default: the --wasm-cache-addr.
    #[arg(long, env = "KGW_WASM_CACHE_ADVERTISE_ADDR")]
    wasm_cache_advertise_addr: Option<String>,
    /// Folder that file:// WASM module URLs must point into (symlinks resolved); unset:
    /// file:// URLs are refused, so a route cannot make the controller read its host's files.
    #[arg(long, env = "KGW_WASM_FILE_ROOT")]
    wasm_file_root: Option<std::path::PathBuf>,
    /// The most a WASM module may weigh, in bytes (http(s) and file).
    #[arg(long, env = "KGW_WASM_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    wasm_max_bytes: usize,
    /// The longest a WASM module download may take, in seconds.
    #[arg(long, env = "KGW_WASM_FETCH_TIMEOUT_SECONDS", default_value_t = 30)]
    wasm_fetch_timeout_seconds: u64,
    /// Address of REST xDS (HTTP/JSON: POST /v3/discovery:{listeners,routes,clusters,endpoints,secrets}).
    #[arg(long, env = "KGW_REST_XDS_ADDR", default_value = "127.0.0.1:9976")]
    rest_xds_addr: SocketAddr,
    /// Address of the proxy debug gRPC server (kgw.v1.ProxyDebugService).
    #[arg(long, env = "KGW_DEBUG_ADDR", default_value = "127.0.0.1:9966")]
    debug_addr: SocketAddr,
    /// Address of the validation gRPC server (kgw.v1.ValidationService).
    #[arg(long, env = "KGW_VALIDATION_ADDR", default_value = "127.0.0.1:9988")]
    validation_addr: SocketAddr,
    /// Address of /healthz, /readyz and /metrics (HTTP).
    #[arg(long, env = "KGW_MONITORING_ADDR", default_value = "127.0.0.1:9092")]
    monitoring_addr: SocketAddr,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print an Envoy bootstrap (JSON, which is also YAML) that connects to this controller.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Print the Proxies a running controller holds (from its proxy debug server), as YAML or JSON.
    Proxies(controller::debug::ProxiesArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Bootstrap(args)) = &cli.command {
        println!("{}", serde_json::to_string_pretty(&bootstrap::bootstrap(args)?)?);
        return Ok(());
    }
    if let Some(Command::Proxies(args)) = &cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        print!("{}", runtime.block_on(controller::debug::fetch_and_render(args))?);
        return Ok(());
    }
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    actix::System::with_tokio_rt(move || runtime().expect("tokio runtime")).block_on(async move {
        let _telemetry = telemetry::init("controller", cli.common.log_format);
        let stop = Shutdown::new();
        let config = run::RunConfig {
            nats_url: cli.common.nats_url.clone(),
            nats_auth: cli.common.nats_auth(),
            xds_addr: cli.xds_addr,
            settings: Settings {
                access_log_address: cli.access_log_addr.clone(),
                wasm: WasmModules {
                    cache_address: cli.wasm_cache_addr.to_string(),
                    ..Default::default()
                },
            },
            wasm_cache_addr: cli.wasm_cache_addr,
            wasm_cache_dir: cli.wasm_cache_dir.clone(),
            wasm_limits: controller::wasm::FetchLimits {
                file_root: cli.wasm_file_root.clone(),
                max_bytes: cli.wasm_max_bytes,
                timeout: std::time::Duration::from_secs(cli.wasm_fetch_timeout_seconds),
            },
            rest_xds_addr: cli.rest_xds_addr,
            debug_addr: cli.debug_addr,
            validation_addr: cli.validation_addr,
        };
        let running = run::start(config, stop.clone()).await?;
        let _monitoring = serve_monitoring(
            cli.monitoring_addr,
            controller::metrics::monitoring(&running),
            stop.clone(),
        )
        .await?;
        tokio::select! {
            _ = shutdown::signal() => tracing::info!("shutting down"),
            result = running.server => {
                result??;
            }
        }
        stop.trigger();
        Ok(())
    })
}

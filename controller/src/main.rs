#![forbid(unsafe_code)]
use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use controller::{
    bootstrap, run,
    translate::{Settings, wasm::WasmModules},
};
use kgw_common::{
    config::{CommonArgs, SourceArgs, SourceKind},
    monitoring::serve_monitoring,
    process::{self, Started},
};

/// jemalloc, unless built without the default feature `jemalloc` (see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Proxy + Upstreams → Envoy configuration, served over xDS.
#[derive(Parser, Debug)]
#[command(name = "controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonArgs,
    /// Where the TLS Secrets of HTTPS listeners are read (the controller reads them itself;
    /// they never travel over NATS). Without `--config-dir` on the directory source, none.
    #[command(flatten)]
    source: SourceArgs,
    /// Address of the xDS (ADS) gRPC server.
    #[arg(long, env = "KGW_XDS_ADDR", default_value = "127.0.0.1:9977")]
    xds_addr: SocketAddr,
    /// host:port of each access-log sink replica (repeat the flag, or separate with commas):
    /// Envoy streams every access-log entry to every one; empty: no access log.
    #[arg(
        long,
        env = "KGW_ACCESS_LOG_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:8083"
    )]
    access_log_addr: Vec<String>,
    /// With mTLS: the folder where Envoys keep their SDS files (`sds-cert.json`,
    /// `sds-ca.json`, written by `controller bootstrap --proxy-tls-dir`); Envoy reaches the
    /// access-log sink and the WASM cache with the certificate they name. `{role}` is
    /// replaced by the Envoy's role, for hosts with Envoys of several roles.
    #[arg(long, env = "KGW_PROXY_SDS_DIR", default_value = "/etc/kgw/sds")]
    proxy_sds_dir: String,
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
        let printed = bootstrap::bootstrap(args, cli.common.insecure_no_mtls)?;
        if args.write_sds {
            bootstrap::write_sds_files(args)?;
        }
        println!("{}", serde_json::to_string_pretty(&printed)?);
        return Ok(());
    }
    if let Some(Command::Proxies(args)) = &cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let rendered = runtime.block_on(async {
            let tls = cli.common.tls_mode()?;
            anyhow::Ok(controller::debug::fetch_and_render(args, &tls).await?)
        })?;
        print!("{rendered}");
        return Ok(());
    }
    let common = cli.common.clone();
    process::run("controller", &common, |Started { shutdown: stop, tls }| async move {
        let proxy_tls = tls.mtls().map(|_| controller::translate::proxy_tls::ProxyTls {
            sds_dir: cli.proxy_sds_dir.clone(),
        });
        let config = run::RunConfig {
            nats_url: cli.common.nats_url.clone(),
            nats_auth: cli.common.nats_auth(&tls),
            tls,
            xds_addr: cli.xds_addr,
            settings: Settings {
                access_log_addresses: cli
                    .access_log_addr
                    .iter()
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect(),
                wasm: WasmModules {
                    cache_address: cli.wasm_cache_addr.to_string(),
                    ..Default::default()
                },
                proxy_tls,
                secrets: Default::default(),
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
            source: match (&cli.source.source, &cli.source.config_dir) {
                (SourceKind::Directory, None) => None,
                _ => Some(cli.source.spec()?),
            },
        };
        let running = run::start(config, stop.clone()).await?;
        let _monitoring = serve_monitoring(
            cli.monitoring_addr,
            controller::monitoring::monitoring(&running),
            stop.clone(),
        )
        .await?;
        tokio::select! {
            _ = stop.wait() => {}
            result = running.server => {
                result??;
            }
        }
        stop.trigger();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_addresses_repeat_or_split_on_commas() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["controller"], args].concat())
                .expect("parses")
                .access_log_addr
        };
        assert_eq!(parse(&[]), ["127.0.0.1:8083"]);
        assert_eq!(parse(&["--access-log-addr", "a:8083,b:8083"]), ["a:8083", "b:8083"]);
        assert_eq!(
            parse(&["--access-log-addr", "a:8083", "--access-log-addr", "b:8083"]),
            ["a:8083", "b:8083"]
        );
        assert_eq!(parse(&["--access-log-addr="]), [""]);
    }
}

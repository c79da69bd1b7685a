#![forbid(unsafe_code)]
use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use controller::{bootstrap, run, translate::Settings};
use kgw_common::{
    config::CommonArgs,
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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print an Envoy bootstrap (JSON, which is also YAML) that connects to this controller.
    Bootstrap(bootstrap::BootstrapArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Bootstrap(args)) = &cli.command {
        println!("{}", serde_json::to_string_pretty(&bootstrap::bootstrap(args)?)?);
        return Ok(());
    }
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    actix::System::with_tokio_rt(move || runtime().expect("tokio runtime")).block_on(async move {
        let _telemetry = telemetry::init("controller", cli.common.log_format);
        let stop = Shutdown::new();
        let config = run::RunConfig {
            nats_url: cli.common.nats_url.clone(),
            xds_addr: cli.xds_addr,
            settings: Settings {
                access_log_address: cli.access_log_addr.clone(),
            },
        };
        let running = run::start(config, stop.clone()).await?;
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

#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};
use gateway::{run, status_cmd, translate::Options};
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    shutdown::{self, Shutdown},
    telemetry,
};

/// Gateway API + policies → Proxy (KV kgw_proxies), and status.
#[derive(Parser, Debug)]
#[command(name = "gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// Address Envoy's listeners bind (the Proxy's bindAddress).
    #[arg(long, env = "KGW_LISTENER_BIND_ADDRESS", default_value = "0.0.0.0")]
    listener_bind_address: String,
    /// GatewayClasses with this controllerName are served.
    #[arg(long, env = "KGW_CONTROLLER_NAME", default_value = "kgateway.dev/kgateway")]
    controller_name: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the status of every resource (from NATS), as YAML.
    Status {
        /// Only keys containing this text (e.g. `httproute.default`).
        filter: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let result: anyhow::Result<()> =
        actix::System::with_tokio_rt(move || runtime().expect("tokio runtime")).block_on(async move {
            if let Some(Command::Status { filter }) = &cli.command {
                print!(
                    "{}",
                    status_cmd::print_status(&cli.common.nats_url, filter.as_deref()).await?
                );
                return Ok(());
            }
            let _telemetry = telemetry::init("gateway", cli.common.log_format);
            let config = run::RunConfig {
                config_dir: cli.source.directory()?,
                nats_url: cli.common.nats_url.clone(),
                options: Options {
                    controller_name: cli.controller_name.clone(),
                    listener_bind_address: cli.listener_bind_address.clone(),
                },
            };
            let stop = Shutdown::new();
            let _running = run::start(config, stop.clone()).await?;
            tracing::info!("gateway running");
            shutdown::signal().await;
            tracing::info!("shutting down");
            stop.trigger();
            Ok(())
        });
    result
}

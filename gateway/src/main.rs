#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};
use gateway::{run, status_cmd, translate::Options, validate_cmd, validation::grpc::GrpcValidator, webhook};
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    monitoring::serve_monitoring,
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
    /// Address of /healthz, /readyz and /metrics (HTTP).
    #[arg(long, env = "KGW_MONITORING_ADDR", default_value = "127.0.0.1:9091")]
    monitoring_addr: std::net::SocketAddr,
    #[command(flatten)]
    validation: webhook::args::ValidationArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the status of every resource (from NATS), as YAML.
    Status {
        /// Only keys containing this text (e.g. `httproute.default`).
        filter: Option<String>,
    },
    /// Validate YAML files or directories against a running controller (--validation-addr):
    /// prints problems per resource; exits 1 on errors (and on warnings with --strict).
    Validate {
        /// Files or directories of Kubernetes YAML (multi-document).
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
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
            if let Some(Command::Validate { paths, strict }) = &cli.command {
                let options = Options {
                    controller_name: cli.controller_name.clone(),
                    listener_bind_address: cli.listener_bind_address.clone(),
                };
                let addr = &cli.validation.validation_addr;
                let validator = GrpcValidator::new(addr, std::time::Duration::from_secs(30))?;
                let report = validate_cmd::run(&validator, &options, paths).await?;
                print!("{}", report.render(addr, &options.controller_name));
                std::io::Write::flush(&mut std::io::stdout())?;
                std::process::exit(report.exit_code(*strict));
            }
            let _telemetry = telemetry::init("gateway", cli.common.log_format);
            let config = run::RunConfig {
                config_dir: cli.source.directory()?,
                nats_url: cli.common.nats_url.clone(),
                options: Options {
                    controller_name: cli.controller_name.clone(),
                    listener_bind_address: cli.listener_bind_address.clone(),
                },
                validation: cli.validation.config(),
            };
            let stop = Shutdown::new();
            let running = run::start(config, stop.clone()).await?;
            let _monitoring = serve_monitoring(
                cli.monitoring_addr,
                gateway::metrics::monitoring(&running),
                stop.clone(),
            )
            .await?;
            tracing::info!("gateway running");
            shutdown::signal().await;
            tracing::info!("shutting down");
            stop.trigger();
            Ok(())
        });
    result
}

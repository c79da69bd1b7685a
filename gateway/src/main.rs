#![forbid(unsafe_code)]
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::{run, status_cmd, translate::Options, validate_cmd, validation::grpc::GrpcValidator, webhook};
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    leader::LeaseConfig,
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
    #[command(flatten)]
    leader: LeaderArgs,
}

/// Leader election (Kubernetes source): one replica writes Proxies and status at a time.
#[derive(clap::Args, Debug)]
struct LeaderArgs {
    /// Elect a leader with a coordination.k8s.io Lease (Kubernetes source only); `false`:
    /// this replica always writes (run one replica only).
    #[arg(long, env = "KGW_LEADER_ELECTION", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    leader_election: bool,
    /// Namespace of the Lease (the chart passes the pod's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "KGW_LEADER_ELECTION_ID", default_value = "kgw-gateway")]
    leader_election_id: String,
    /// Seconds a leader holds the Lease without renewing it: at most this long passes
    /// between a leader's death and its successor's first write.
    #[arg(long, env = "KGW_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15)]
    leader_election_lease_seconds: u64,
}

impl LeaderArgs {
    fn lease(&self) -> Option<LeaseConfig> {
        if !self.leader_election {
            return None;
        }
        // Unique per replica: the pod's name in a cluster, else host and pid.
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let lease = Duration::from_secs(self.leader_election_lease_seconds.max(3));
        Some(LeaseConfig {
            lease_duration: lease,
            // As client-go's defaults: renew deadline 2/3 of the lease, retry every 2/15.
            renew_deadline: lease * 2 / 3,
            retry_period: lease * 2 / 15,
            ..LeaseConfig::new(&self.leader_election_namespace, &self.leader_election_id, &identity)
        })
    }
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
                    status_cmd::print_status(&cli.common.nats_url, &cli.common.nats_auth(), filter.as_deref()).await?
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
                source: cli.source.spec()?,
                nats_url: cli.common.nats_url.clone(),
                nats_auth: cli.common.nats_auth(),
                options: Options {
                    controller_name: cli.controller_name.clone(),
                    listener_bind_address: cli.listener_bind_address.clone(),
                },
                validation: cli.validation.config(),
                leader_election: cli.leader.lease(),
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
            // Hand the lease over at once rather than after it expires.
            if let Some(election) = running.election {
                let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
            }
            Ok(())
        });
    result
}

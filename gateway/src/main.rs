#![forbid(unsafe_code)]
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::{run, status_cmd, translate::Options, validate_cmd, validation::grpc::GrpcValidator, webhook};
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    leader::LeaseConfig,
    monitoring::serve_monitoring,
    process::{self, Started},
};

/// jemalloc, unless built without the default feature `jemalloc` (see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Added to Gateway listener ports below 1024 to get the port Envoy binds (80 → 8080);
    /// 0 binds the declared ports, for an Envoy allowed to bind privileged ports.
    #[arg(long, env = "KGW_LOW_PORT_OFFSET", default_value_t = gateway::translate::DEFAULT_LOW_PORT_OFFSET)]
    low_port_offset: u32,
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
    if cli.command.is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(command(&cli));
    }
    let common = cli.common.clone();
    process::run("gateway", &common, |started| serve(cli, started))
}

/// `gateway status` and `gateway validate`.
async fn command(cli: &Cli) -> anyhow::Result<()> {
    let tls = cli.common.tls_mode()?;
    match &cli.command {
        Some(Command::Status { filter }) => {
            let auth = cli.common.nats_auth(&tls);
            print!(
                "{}",
                status_cmd::print_status(&cli.common.nats_url, &auth, filter.as_deref()).await?
            );
            Ok(())
        }
        Some(Command::Validate { paths, strict }) => {
            let options = Options {
                controller_name: cli.controller_name.clone(),
                listener_bind_address: cli.listener_bind_address.clone(),
                low_port_offset: cli.low_port_offset,
            };
            let addr = &cli.validation.validation_addr;
            let validator = GrpcValidator::new(addr, Duration::from_secs(30), &tls)?;
            let report = validate_cmd::run(&validator, &options, paths).await?;
            print!("{}", report.render(addr, &options.controller_name));
            std::io::Write::flush(&mut std::io::stdout())?;
            std::process::exit(report.exit_code(*strict));
        }
        None => Ok(()),
    }
}

async fn serve(cli: Cli, Started { shutdown: stop, tls }: Started) -> anyhow::Result<()> {
    let config = run::RunConfig {
        source: cli.source.spec()?,
        nats_url: cli.common.nats_url.clone(),
        nats_auth: cli.common.nats_auth(&tls),
        options: Options {
            controller_name: cli.controller_name.clone(),
            listener_bind_address: cli.listener_bind_address.clone(),
            low_port_offset: cli.low_port_offset,
        },
        validation: cli.validation.config(tls),
        leader_election: cli.leader.lease(),
    };
    let running = run::start(config, stop.clone()).await?;
    let _monitoring = serve_monitoring(
        cli.monitoring_addr,
        gateway::monitoring::monitoring(&running),
        stop.clone(),
    )
    .await?;
    tracing::info!("gateway running");
    stop.wait().await;
    // Hand the lease over at once rather than after it expires.
    if let Some(election) = running.election {
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
    Ok(())
}

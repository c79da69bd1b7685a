//! discovery: Services + EndpointSlices → Upstreams in NATS KV. Listens on nothing.
#![forbid(unsafe_code)]

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    process::{self, Started},
};

/// jemalloc, unless built without the default feature `jemalloc` (see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Upstream discovery (UDS): one Upstream per Service port, with its endpoints, and the
/// Upstreams users declare; function discovery (FDS) on them.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonArgs,
    /// Where Services and EndpointSlices come from.
    #[command(flatten)]
    source: SourceArgs,
    /// File rewritten every 5 s while connected to NATS with the config read (content:
    /// unix ms), for an exec probe that checks its age; removed on shutdown.
    #[arg(long, env = "KGW_HEALTH_FILE", default_value = "/tmp/kgw-discovery-healthy")]
    health_file: PathBuf,
    /// Which Services function discovery probes, as Gloo's `fdsMode`: BLACKLIST (all but
    /// those labelled `discovery.solo.io/function_discovery=disabled`), WHITELIST (only
    /// those labelled `enabled`) or DISABLED.
    #[arg(long, env = "KGW_FDS_MODE", default_value = "BLACKLIST")]
    fds_mode: discovery::fds::schedule::FdsMode,
    /// The Lambda API that lists the functions of Lambda (`aws`) Upstreams, for an
    /// emulator or a VPC endpoint: `http(s)://host[:port]`, no path. Unset: AWS's
    /// `https://lambda.<region>.amazonaws.com`.
    #[arg(long, env = "KGW_AWS_LAMBDA_ENDPOINT", value_parser = lambda_endpoint)]
    aws_lambda_endpoint: Option<String>,
    /// Accept any certificate from the Services and static Upstreams that function
    /// discovery probes over TLS. By default their certificates are verified against the
    /// system's roots (`SSL_CERT_FILE` adds a private CA), as Gloo's probes did.
    #[arg(long, env = "KGW_FDS_TLS_INSECURE_SKIP_VERIFY")]
    fds_tls_insecure_skip_verify: bool,
}

/// An `http://` or `https://` URL with a host and no path.
fn lambda_endpoint(value: &str) -> Result<String, String> {
    let uri: hyper::Uri = value.parse().map_err(|e| format!("{e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let path_ok = uri
        .path_and_query()
        .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
    if !scheme_ok || uri.host().is_none() || !path_ok {
        return Err("expected http(s)://host[:port] without a path".into());
    }
    Ok(value.trim_end_matches('/').to_string())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the replicas running, the shards each owns, and per Upstream its owner and
    /// what function discovery last found (from NATS).
    Replicas {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Replicas { output }) = &args.command {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(print_replicas(&args.common, *output));
    }
    let common = args.common.clone();
    process::run("discovery", &common, |started| async_main(args, started))
}

async fn print_replicas(common: &CommonArgs, output: Output) -> anyhow::Result<()> {
    let tls = common.tls_mode()?;
    let bus = kgw_common::bus::connect(&common.nats_url, "discovery-replicas", &common.nats_auth(&tls)).await?;
    let report = discovery::replicas_cmd::read(&bus).await?;
    match output {
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

async fn async_main(args: Args, Started { shutdown, tls }: Started) -> anyhow::Result<()> {
    let config = discovery::Config {
        source: args.source.spec()?,
        nats_auth: args.common.nats_auth(&tls),
        nats_url: args.common.nats_url,
        health_file: args.health_file,
        heartbeat_every: Duration::from_secs(5),
        fds_mode: args.fds_mode,
        aws_lambda_endpoint: args.aws_lambda_endpoint,
        fds_tls_insecure_skip_verify: args.fds_tls_insecure_skip_verify,
    };
    let running = discovery::start(config, shutdown.clone())
        .await
        .context("cannot start discovery")?;
    tracing::info!("discovery running");
    shutdown.wait().await;
    running.stopped(Duration::from_secs(5)).await;
    Ok(())
}

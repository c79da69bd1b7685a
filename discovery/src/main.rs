//! discovery: Services + EndpointSlices → Upstreams in NATS KV. Listens on nothing.
#![forbid(unsafe_code)]

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    process::{self, Started},
};

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
    };
    let running = discovery::start(config, shutdown.clone())
        .await
        .context("cannot start discovery")?;
    tracing::info!("discovery running");
    shutdown.wait().await;
    running.stopped(Duration::from_secs(5)).await;
    Ok(())
}

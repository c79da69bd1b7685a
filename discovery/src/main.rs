//! discovery: Services + EndpointSlices → Upstreams in NATS KV. Listens on nothing.
#![forbid(unsafe_code)]

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use kgw_common::{
    config::{CommonArgs, SourceArgs},
    process::{self, Started},
};

/// Upstream discovery (UDS): one Upstream per Service port, with its endpoints.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Where Services and EndpointSlices come from.
    #[command(flatten)]
    source: SourceArgs,
    /// File rewritten every 5 s while connected to NATS with the config read (content:
    /// unix ms), for an exec probe that checks its age; removed on shutdown.
    #[arg(long, env = "KGW_HEALTH_FILE", default_value = "/tmp/kgw-discovery-healthy")]
    health_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common = args.common.clone();
    process::run("discovery", &common, |started| async_main(args, started))
}

async fn async_main(args: Args, Started { shutdown, tls }: Started) -> anyhow::Result<()> {
    let config = discovery::Config {
        source: args.source.spec()?,
        nats_auth: args.common.nats_auth(&tls),
        nats_url: args.common.nats_url,
        health_file: args.health_file,
        heartbeat_every: Duration::from_secs(5),
    };
    let running = discovery::start(config, shutdown.clone())
        .await
        .context("cannot start discovery")?;
    tracing::info!("discovery running");
    shutdown.wait().await;
    running.stopped(Duration::from_secs(5)).await;
    Ok(())
}

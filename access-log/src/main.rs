//! access-log: the Envoy access-log sink (gRPC ALS on 8083 → JSON lines + NATS).
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use access_log::{Flush, Stats, WriterConfig};
use anyhow::Context as _;
use clap::Parser;
use kgw_common::{
    config::CommonArgs,
    monitoring::{Monitoring, serve_monitoring},
    shutdown::{self, Shutdown},
    telemetry,
};

/// Envoy access-log sink: serves envoy.service.accesslog.v3.AccessLogService, writes one JSON
/// line per entry and publishes it on NATS kgw.accesslog.<namespace>.<gateway>.
#[derive(Debug, Parser)]
#[command(name = "access-log", version, about)]
struct Config {
    /// Address the gRPC access-log service listens on.
    #[arg(long, env = "KGW_ACCESS_LOG_LISTEN", default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// File the JSON lines are appended to (parent directories are created); stdout if unset.
    #[arg(long, env = "KGW_ACCESS_LOG_OUTPUT")]
    output: Option<PathBuf>,
    /// NATS (the lines are also published there; unreachable is fine: lines are then only
    /// written, and the dropped publishes counted), its credentials, and the log format.
    #[command(flatten)]
    common: CommonArgs,
    /// Address of /healthz, /readyz and /metrics (HTTP). Ready means listening for Envoy:
    /// NATS is not required, since lines are written to the output without it.
    #[arg(long, env = "KGW_MONITORING_ADDR", default_value = "127.0.0.1:9093")]
    monitoring_addr: SocketAddr,
}

/// How long open streams get to end after SIGTERM before the server is abandoned.
const DRAIN: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("cannot build the tokio runtime")
    })
    .block_on(async_main(config))
}

async fn async_main(config: Config) -> anyhow::Result<()> {
    let telemetry = telemetry::init("access-log", config.common.log_format);
    let result = run(config).await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "access-log failed");
    }
    // The OTLP exporter flushes on drop, which blocks: keep it off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let writer = access_log::start_writer(
        &WriterConfig {
            output: config.output.clone(),
            nats_url: Some(config.common.nats_url.clone()),
            nats_auth: config.common.nats_auth(),
        },
        stats.clone(),
    )
    .await?;

    let shutdown = Shutdown::new();
    // The monitoring port outlives the drain (readiness turns 503 while draining).
    let monitoring_stop = Shutdown::new();
    let draining = shutdown.clone();
    let monitoring = Monitoring::new(access_log::metrics::registry(stats.clone(), writer.bus.as_ref()))
        .ready_when("shutting down", move || !draining.is_triggered());
    let _monitoring = serve_monitoring(config.monitoring_addr, monitoring, monitoring_stop.clone()).await?;
    let mut server = tokio::spawn(access_log::serve(
        listener,
        writer.addr.clone(),
        stats.clone(),
        shutdown.clone(),
    ));
    let served = tokio::select! {
        _ = shutdown::signal() => {
            tracing::info!("shutting down: no new streams, draining");
            shutdown.trigger();
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(joined) => joined,
                Err(_) => {
                    tracing::warn!("streams did not end in time; closing them");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
        joined = &mut server => joined,
    };
    // Flush the file whatever happened to the server.
    if let Err(error) = writer.addr.send(Flush).await.context("log writer gone")? {
        tracing::error!(%error, "cannot flush the access-log output");
    }
    if let Some(bus) = &writer.bus
        && bus.is_connected()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), bus.client.flush()).await;
    }
    monitoring_stop.trigger();
    tracing::info!(stats = ?stats.snapshot(), "access-log stopped");
    served.context("server task failed")??;
    Ok(())
}

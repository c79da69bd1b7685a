//! access-log: the Envoy access-log sink (gRPC ALS on 8083 → JSON lines + NATS).
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use access_log::{Flush, Stats, WriterConfig};
use anyhow::Context as _;
use clap::Parser;
use kgw_common::{
    config::CommonArgs,
    monitoring::{Monitoring, serve_monitoring},
    process::{self, Started},
    serve::{Listener, ServerTls},
    shutdown::Shutdown,
    tls::Alpn,
};

/// jemalloc, unless built without the default feature `jemalloc` (see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Lines waiting to be published on NATS (JetStream); beyond, lines are dropped
    /// (`kgw_access_log_publishes_dropped_total{reason="queue_full"}`).
    #[arg(long, env = "KGW_ACCESS_LOG_PUBLISH_QUEUE", default_value_t = access_log::publish::QUEUE)]
    publish_queue: usize,
    /// Retention of the access-log stream (kgw_access_log) when the sink creates it.
    #[arg(long, env = "KGW_ACCESS_LOG_STREAM_MAX_AGE_SECONDS", default_value_t = 24 * 3600)]
    stream_max_age_seconds: u64,
    /// Size limit of the access-log stream when the sink creates it (oldest entries go).
    #[arg(long, env = "KGW_ACCESS_LOG_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    stream_max_bytes: i64,
    /// How long a graceful stop (SIGTERM) may spend publishing what it holds, after its
    /// streams ended.
    #[arg(long, env = "KGW_ACCESS_LOG_DRAIN_SECONDS", default_value_t = 15)]
    drain_seconds: u64,
    /// Also export every entry as an OpenTelemetry log record to this OTLP/gRPC endpoint
    /// (an OpenTelemetry collector, `http://collector:4317`); off when unset.
    #[arg(long, env = "KGW_ACCESS_LOG_OTLP_LOGS_ENDPOINT")]
    otlp_logs_endpoint: Option<String>,
}

/// How long open streams get to end after SIGTERM before the server is abandoned.
const DRAIN: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    process::run("access-log", &common, |started| run(config, started))
}

async fn run(config: Config, Started { shutdown, tls }: Started) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let listener = Listener::bind("access-log", config.listen, ServerTls::for_mode(&tls, Alpn::H2)).await?;
    let writer = access_log::start_writer(
        &WriterConfig {
            output: config.output.clone(),
            nats_url: Some(config.common.nats_url.clone()),
            nats_auth: config.common.nats_auth(&tls),
            publish: access_log::publish::PublishConfig {
                queue: config.publish_queue,
                stream: access_log::publish::StreamSettings {
                    max_age: Duration::from_secs(config.stream_max_age_seconds),
                    max_bytes: config.stream_max_bytes,
                    ..Default::default()
                },
                ..Default::default()
            },
            otlp_logs_endpoint: config.otlp_logs_endpoint.clone(),
        },
        stats.clone(),
    )
    .await?;

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
        _ = shutdown.wait() => {
            tracing::info!("no new streams, draining");
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
    // Publish what it holds: queued lines, retries and pending acks (the other replicas
    // have the same entries, but this one's may be the only copy of a recent batch).
    if let Some(drainer) = writer.drainer {
        tracing::info!(within_seconds = config.drain_seconds, "publishing what is left");
        drainer.drain(Duration::from_secs(config.drain_seconds)).await;
    }
    if let Some(bus) = &writer.bus
        && bus.is_connected()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), bus.client.flush()).await;
    }
    if let Some(otlp) = writer.otlp.clone() {
        // The SDK's shutdown blocks until the last batch is exported.
        let _ = tokio::task::spawn_blocking(move || otlp.shutdown()).await;
    }
    monitoring_stop.trigger();
    tracing::info!(stats = ?stats.snapshot(), "access-log stopped");
    served.context("server task failed")??;
    Ok(())
}

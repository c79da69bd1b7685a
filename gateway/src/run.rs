//! Wiring: config source → actor → KV writers.
use std::sync::Arc;

use actix::Actor as _;
use kgw_common::{
    bus::{self, Bus, KvState},
    config::ConfigError,
    resources::Index,
    shutdown::Shutdown,
    source::{SourceError, spawn_dir_source},
};
use kgw_proto::nats::{PROXIES_BUCKET, STATUS_BUCKET};
use tokio::sync::{mpsc, watch};

use crate::{
    actor::{GatewayActor, Outputs, SourceBatch, ValidationReport},
    metrics::GatewayMetrics,
    translate::Options,
    webhook,
};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config source failed")]
    Source(#[from] SourceError),
    #[error("NATS")]
    Bus(#[from] bus::BusError),
    #[error("validation")]
    Validation(#[from] webhook::StartError),
}

/// What `run` needs.
pub struct RunConfig {
    pub config_dir: std::path::PathBuf,
    pub nats_url: String,
    pub options: Options,
    /// The 8443 admission webhook and the background validation.
    pub validation: webhook::ValidationConfig,
}

/// Handles to the running pipeline, for health and tests.
pub struct Running {
    pub bus: Bus,
    pub synced: watch::Receiver<bool>,
    pub proxies: watch::Receiver<KvState>,
    pub proxy_writes: watch::Receiver<bus::WriterStats>,
    pub metrics: Arc<GatewayMetrics>,
    /// The resource index after each batch.
    pub index: watch::Receiver<Arc<Index>>,
    /// The admission webhook's address and certificate, when it runs.
    pub webhook: webhook::Started,
}

/// Starts the pipeline. Call on the actix System thread (it starts an actor).
pub async fn start(config: RunConfig, shutdown: Shutdown) -> Result<Running, GatewayError> {
    let bus = bus::connect(&config.nats_url, "gateway").await?;
    let (proxies_tx, proxies) = watch::channel(KvState::default());
    let (status_tx, status) = watch::channel(KvState::default());
    let (synced_tx, synced) = watch::channel(false);
    let (index_tx, index) = watch::channel(Arc::new(Index::default()));
    let options = config.options.clone();
    let outputs = Outputs {
        proxies: proxies_tx,
        status: status_tx,
        synced: synced_tx,
        index: index_tx,
    };
    let metrics = Arc::new(GatewayMetrics::default());
    let actor = GatewayActor::new(config.options, outputs)
        .with_metrics(metrics.clone())
        .start();

    let report_to = actor.clone();
    let webhook = webhook::start(
        &config.validation,
        options,
        index.clone(),
        synced.clone(),
        move |findings| report_to.do_send(ValidationReport(findings)),
        shutdown.clone(),
    )
    .await?;

    let (batches_tx, mut batches) = mpsc::channel(16);
    spawn_dir_source(config.config_dir, batches_tx, shutdown.clone())?;
    tokio::spawn(async move {
        // Batches that arrive while the actor translates are merged: under churn the actor
        // translates once per round, not once per file event.
        while let Some(mut batch) = batches.recv().await {
            while let Ok(more) = batches.try_recv() {
                batch.changes.extend(more.changes);
                batch.problems = more.problems;
                batch.initial |= more.initial;
            }
            if actor.send(SourceBatch(batch)).await.is_err() {
                break;
            }
        }
    });

    // Proxies and status are ours alone: every key in these buckets belongs to us. The
    // writers start after the first full translation: before it, the desired state is
    // empty and writing it would delete every Proxy on a restart.
    let everything: bus::Owns = Arc::new(|_, _| true);
    let (writes_tx, proxy_writes) = watch::channel(bus::WriterStats::default());
    let mut ready = synced.clone();
    let (writer_bus, writer_proxies) = (bus.clone(), proxies.clone());
    tokio::spawn(async move {
        if ready.wait_for(|synced| *synced).await.is_err() {
            return;
        }
        let mut stats = bus::spawn_kv_writer(
            writer_bus.clone(),
            PROXIES_BUCKET,
            writer_proxies,
            everything.clone(),
            shutdown.clone(),
        );
        bus::spawn_kv_writer(writer_bus, STATUS_BUCKET, status, everything, shutdown);
        while stats.changed().await.is_ok() {
            writes_tx.send_replace(stats.borrow().clone());
        }
    });
    Ok(Running {
        bus,
        synced,
        proxies,
        proxy_writes,
        metrics,
        index,
        webhook,
    })
}

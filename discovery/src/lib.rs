//! discovery: Services + EndpointSlices → Upstreams in KV `kgw_upstreams` (Gloo's UDS), and
//! the Upstreams users declare, passed through (discovery is the one writer of the bucket).
//! Listens on nothing: its health is a NATS heartbeat and a file (see [`health`]).
//!
//! Pipeline: config source → [`actor::Discovery`] (index, translation by
//! [`kgw_common::upstreams`], the one place Services become Upstreams) → desired state
//! (`watch`) → KV writer (writes only the keys whose bytes changed).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod actor;
pub mod fds;
mod health;
mod probing;
pub mod replicas_cmd;
pub mod shards;

use std::{path::PathBuf, sync::Arc, time::Duration};

use actix::Addr;
use kgw_common::{
    bus::{self, Bus, BusError, KvState, Owns, WriterStats},
    config::SourceSpec,
    resources::Kind,
    shutdown::Shutdown,
    source::{self, Batch, SourceError},
    upstreams,
};
use kgw_proto::{
    nats::{DISCOVERY_PROBES_BUCKET, UPSTREAMS_BUCKET},
    v1::Upstream,
};
use prost::Message as _;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::actor::Discovery;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start the config source")]
    Source(#[source] SourceError),
    #[error("cannot connect to NATS")]
    Bus(#[source] BusError),
}

/// The kinds discovery reads from the Kubernetes source. Secrets: the credentials of
/// Lambda Upstreams (only their AWS keys are kept; see `probing::secret_change`).
pub const KINDS: &[Kind] = &[
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Upstream,
    Kind::Namespace,
    Kind::Secret,
];

pub struct Config {
    /// Where Services and EndpointSlices come from (`--source`).
    pub source: SourceSpec,
    pub nats_url: String,
    /// The credentials for that NATS.
    pub nats_auth: bus::NatsAuth,
    pub health_file: PathBuf,
    /// Heartbeat and health-file period.
    pub heartbeat_every: Duration,
    /// Which Services function discovery probes (Gloo's `fdsMode`).
    pub fds_mode: fds::schedule::FdsMode,
    /// The Lambda API for Lambda Upstreams (an emulator, a VPC endpoint); `None`: AWS's
    /// regional endpoint.
    pub aws_lambda_endpoint: Option<String>,
    /// Accept any certificate when probing Services over TLS.
    pub fds_tls_insecure_skip_verify: bool,
}

/// A running pipeline. Stop it by triggering the [`Shutdown`] given to [`start`], then
/// awaiting [`Running::stopped`].
pub struct Running {
    pub addr: Addr<Discovery>,
    pub bus: Bus,
    /// Desired content of the keys discovery owns.
    pub desired: watch::Receiver<KvState>,
    /// The KV writer's counters (all zero until the first state is read).
    pub writer: watch::Receiver<WriterStats>,
    /// The shards of the Upstream keys this replica owns (see [`shards`]).
    pub ownership: watch::Receiver<shards::Ownership>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the pipeline. Must be called on the actix System thread (it starts an actor).
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, DiscoveryError> {
    let bus = bus::connect(&config.nats_url, health::PROCESS, &config.nats_auth)
        .await
        .map_err(DiscoveryError::Bus)?;
    let (batches_tx, batches) = mpsc::channel::<Batch>(16);
    source::spawn_only(config.source, KINDS, batches_tx, shutdown.clone())
        .await
        .map_err(DiscoveryError::Source)?;
    let (actor, outputs) = Discovery::new(config.fds_mode);
    // The actor reads the source's batches itself; no task forwards them.
    let addr = actor.start_on(batches);
    let replica = health::instance_name();
    let probe_config = fds::ProbeConfig {
        lambda_endpoint: config.aws_lambda_endpoint,
        tls_insecure_skip_verify: config.fds_tls_insecure_skip_verify,
        ..Default::default()
    };
    let (writer, ownership, mut tasks) = spawn_writer(
        bus.clone(),
        outputs.clone(),
        probe_config,
        replica.clone(),
        shutdown.clone(),
    );
    let health = tokio::spawn(health::run(
        bus.clone(),
        health::HealthConfig {
            file: config.health_file,
            every: config.heartbeat_every,
            instance: replica,
        },
        outputs.desired.clone(),
        outputs.initialized,
        shutdown,
    ));
    tasks.push(health);
    Ok(Running {
        addr,
        bus,
        desired: outputs.desired,
        writer,
        ownership,
        tasks,
    })
}

impl Running {
    /// Waits (at most `limit`) for the tasks to end after shutdown and flushes NATS.
    pub async fn stopped(self, limit: Duration) {
        let drain = async {
            for task in self.tasks {
                let _ = task.await;
            }
            if let Err(error) = self.bus.client.flush().await {
                tracing::debug!(%error, "cannot flush NATS on shutdown");
            }
        };
        if tokio::time::timeout(limit, drain).await.is_err() {
            tracing::warn!(?limit, "shutdown did not finish in time");
        }
    }
}

/// Starts the shard leases and, once the first state is known (before that the desired
/// state is empty, and writing it would delete every discovered upstream), the KV writer of
/// the shards owned; relays the writer's counters.
fn spawn_writer(
    bus: Bus,
    outputs: actor::Outputs,
    probe_config: fds::ProbeConfig,
    replica: String,
    shutdown: Shutdown,
) -> (
    watch::Receiver<WriterStats>,
    watch::Receiver<shards::Ownership>,
    Vec<JoinHandle<()>>,
) {
    let (stats_tx, stats) = watch::channel(WriterStats::default());
    // The writer outlives the leases: it confirms it stopped writing the shards given back.
    let writer_stop = Shutdown::new();
    let replica_name = replica.clone();
    let (ownership, leases) = shards::spawn_leases(bus.clone(), replica, stats.clone(), shutdown, writer_stop.clone());
    let scoped = shards::spawn_scoped(outputs.desired, ownership.clone(), writer_stop.clone());
    let prober = fds::Prober::new(probe_config);
    let probing = probing::spawn(
        bus.clone(),
        scoped,
        outputs.probe_inputs,
        prober,
        replica_name,
        writer_stop.clone(),
    );
    let task = tokio::spawn(async move {
        let mut initialized = outputs.initialized;
        let mut functions_read = probing.ready;
        let ready = tokio::select! {
            _ = writer_stop.wait() => false,
            ready = async {
                initialized.wait_for(|i| *i).await.is_ok() && functions_read.wait_for(|r| *r).await.is_ok()
            } => ready,
        };
        if !ready {
            return;
        }
        // What function discovery found, per Upstream, for `discovery replicas`.
        bus::spawn_kv_writer(
            bus.clone(),
            DISCOVERY_PROBES_BUCKET,
            probing.statuses,
            Arc::new(|_: &str, _: &[u8]| true),
            writer_stop.clone(),
        );
        let mut inner = bus::spawn_kv_writer(bus, UPSTREAMS_BUCKET, probing.enriched, owns(), writer_stop);
        loop {
            stats_tx.send_replace(inner.borrow_and_update().clone());
            if inner.changed().await.is_err() {
                return;
            }
        }
    });
    (stats, ownership, vec![leases, task])
}

/// Discovery owns the upstreams it wrote; never those of gateway (user-declared).
pub fn owns() -> Owns {
    Arc::new(|_key: &str, value: &[u8]| Upstream::decode(value).is_ok_and(|u| u.written_by == upstreams::WRITTEN_BY))
}

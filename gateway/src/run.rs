//! Wiring: config source → actor → KV writers.
use std::sync::Arc;

use kgw_common::{
    bus::{self, Bus, KvState},
    config::{ConfigError, SourceSpec},
    leader::{LeaseConfig, spawn_leader_election},
    resources::{Index, Kind},
    shutdown::Shutdown,
    source::{self, SourceError},
};
use kgw_proto::nats::{PROXIES_BUCKET, STATUS_BUCKET};
use tokio::sync::{mpsc, watch};

use crate::{
    actor::{GatewayActor, Outputs, OwnFindings, ValidationReport},
    kube_status::{self, StatusWriteStats},
    metrics::GatewayMetrics,
    translate::{Options, StatusReport},
    webhook,
};

/// The kinds the gateway reads from the Kubernetes source.
pub const KINDS: &[Kind] = &[
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::ReferenceGrant,
    Kind::Service,
    Kind::RouteOption,
    Kind::Upstream,
    Kind::ListenerSet,
    // Their labels select the namespaces of routes and ListenerSets.
    Kind::Namespace,
    // Upstream TLS of the Services they target, with their CA ConfigMaps.
    Kind::BackendTlsPolicy,
    Kind::ConfigMap,
];

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
    /// Where resources come from (`--source`).
    pub source: SourceSpec,
    pub nats_url: String,
    pub nats_auth: bus::NatsAuth,
    pub options: Options,
    /// The 8443 admission webhook and the background validation.
    pub validation: webhook::ValidationConfig,
    /// With the Kubernetes source: the Lease that picks the one replica that writes Proxies
    /// and status. None: this replica always writes (directory mode, or one replica).
    pub leader_election: Option<LeaseConfig>,
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
    /// Status written to the API server (Kubernetes source; zero in directory mode).
    pub status_writes: watch::Receiver<StatusWriteStats>,
    /// True while this replica writes (leads, or has no election).
    pub leading: watch::Receiver<bool>,
    /// The election, which releases the lease after shutdown: await it before exiting.
    pub election: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the pipeline. Call on the actix System thread (it starts an actor).
pub async fn start(config: RunConfig, shutdown: Shutdown) -> Result<Running, GatewayError> {
    let bus = bus::connect(&config.nats_url, "gateway", &config.nats_auth).await?;
    let (proxies_tx, proxies) = watch::channel(KvState::default());
    let (status_tx, status) = watch::channel(KvState::default());
    let (synced_tx, synced) = watch::channel(false);
    let (index_tx, index) = watch::channel(Arc::new(Index::default()));
    let (report_tx, report) = watch::channel(Arc::new(StatusReport::default()));
    let options = config.options.clone();
    let outputs = Outputs {
        proxies: proxies_tx,
        status: status_tx,
        synced: synced_tx,
        index: index_tx,
        report: report_tx,
    };
    let metrics = Arc::new(GatewayMetrics::default());
    let (batches_tx, batches) = mpsc::channel(16);
    // The actor reads the source's batches itself; no task forwards them.
    // On Kubernetes the gateway may not read Secrets (least privilege; only the controller
    // does), so certificate references are checked without them.
    let secrets_withheld = matches!(config.source, SourceSpec::Kubernetes(_));
    let actor = GatewayActor::new(config.options.clone(), outputs)
        .with_secrets_withheld(secrets_withheld)
        .with_metrics(metrics.clone())
        .start_on(batches);

    let report_to = actor.clone();
    let webhook = webhook::start(
        &config.validation,
        options,
        crate::validation::background::Outputs {
            index: index.clone(),
            own: {
                let actor = actor.clone();
                Arc::new(move || {
                    let actor = actor.clone();
                    Box::pin(async move { actor.send(OwnFindings).await.ok() })
                })
            },
            proxies: proxies.clone(),
        },
        synced.clone(),
        move |findings| report_to.do_send(ValidationReport(findings)),
        shutdown.clone(),
    )
    .await?;

    let started = source::spawn(config.source, KINDS, batches_tx, shutdown.clone()).await?;
    let (leading, election) = match (started.kube_client(), config.leader_election) {
        (Some(client), Some(lease)) => {
            let (leading, task) = spawn_leader_election(client.clone(), lease, shutdown.clone());
            (leading, Some(task))
        }
        // A sender dropped at once: the value stays true for good.
        _ => (watch::channel(true).1, None),
    };

    // Proxies and status are written by one replica at a time (the leader); they are ours
    // alone: every key in these buckets belongs to us.
    let (proxy_writes_tx, proxy_writes) = watch::channel(bus::WriterStats::default());
    let (status_writes_tx, status_writes) = watch::channel(StatusWriteStats::default());
    tokio::spawn(write_while_leading(
        Writers {
            bus: bus.clone(),
            proxies: proxies.clone(),
            status,
            kube: started.kube_client().cloned().map(|client| KubeStatus {
                client,
                controller_name: config.options.controller_name.clone(),
                report,
                index: index.clone(),
            }),
            proxy_writes: proxy_writes_tx,
            status_writes: status_writes_tx,
        },
        synced.clone(),
        leading.clone(),
        shutdown,
    ));
    Ok(Running {
        bus,
        synced,
        proxies,
        proxy_writes,
        metrics,
        index,
        webhook,
        status_writes,
        leading,
        election,
    })
}

/// What the leader writes, and where the counts go.
struct Writers {
    bus: Bus,
    proxies: watch::Receiver<KvState>,
    status: watch::Receiver<KvState>,
    /// Status on the resources themselves (Kubernetes source).
    kube: Option<KubeStatus>,
    proxy_writes: watch::Sender<bus::WriterStats>,
    status_writes: watch::Sender<StatusWriteStats>,
}

struct KubeStatus {
    client: kube::Client,
    controller_name: String,
    report: watch::Receiver<Arc<StatusReport>>,
    index: watch::Receiver<Arc<Index>>,
}

/// Runs the writers for each term this replica leads, after the first full translation
/// (before it, the desired state is empty and writing it would delete every Proxy on a
/// restart). A term ends when leadership is lost: the writers stop before another replica
/// may start, and a new leader's writers rewrite nothing that is already right (they read
/// the bucket and the objects' status first), so no write is lost or doubled.
async fn write_while_leading(
    writers: Writers,
    mut synced: watch::Receiver<bool>,
    mut leading: watch::Receiver<bool>,
    shutdown: Shutdown,
) {
    if synced.wait_for(|synced| *synced).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            led = leading.wait_for(|leading| *leading) => if led.is_err() { return },
        }
        let term = Shutdown::new();
        start_term(&writers, &term);
        tokio::select! {
            _ = shutdown.wait() => {}
            // A closed election (no election at all) never ends the term.
            _ = async {
                if leading.wait_for(|leading| !*leading).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => tracing::warn!("leadership lost: stopped writing Proxies and status"),
        }
        term.trigger();
        if shutdown.is_triggered() {
            return;
        }
    }
}

fn start_term(writers: &Writers, term: &Shutdown) {
    let everything: bus::Owns = Arc::new(|_, _| true);
    let proxies = bus::spawn_kv_writer(
        writers.bus.clone(),
        PROXIES_BUCKET,
        writers.proxies.clone(),
        everything.clone(),
        term.clone(),
    );
    forward(proxies, writers.proxy_writes.clone());
    bus::spawn_kv_writer(
        writers.bus.clone(),
        STATUS_BUCKET,
        writers.status.clone(),
        everything,
        term.clone(),
    );
    if let Some(kube) = &writers.kube {
        let writes = kube_status::spawn(
            kube.client.clone(),
            kube.controller_name.clone(),
            kube.report.clone(),
            kube.index.clone(),
            term.clone(),
        );
        forward(writes, writers.status_writes.clone());
    }
}

/// Counts that add up across leadership terms (each term's writers count from zero).
trait Counts: Clone + Send + Sync + 'static {
    fn plus(&self, other: &Self) -> Self;
}

impl Counts for bus::WriterStats {
    fn plus(&self, o: &Self) -> Self {
        Self {
            puts: self.puts + o.puts,
            deletes: self.deletes + o.deletes,
            errors: self.errors + o.errors,
            unchanged: self.unchanged + o.unchanged,
            repairs: self.repairs + o.repairs,
            stale_parts_removed: self.stale_parts_removed + o.stale_parts_removed,
            // Not a count: the later term's (the gateway writes without scopes anyway).
            scope_generation: o.scope_generation,
        }
    }
}

impl Counts for StatusWriteStats {
    fn plus(&self, o: &Self) -> Self {
        Self {
            gateway_classes: self.gateway_classes + o.gateway_classes,
            gateways: self.gateways + o.gateways,
            http_routes: self.http_routes + o.http_routes,
            route_options: self.route_options + o.route_options,
            errors: self.errors + o.errors,
        }
    }
}

/// Adds a term's counts to those of the terms before, until its writer ends.
fn forward<T: Counts>(mut from: watch::Receiver<T>, to: watch::Sender<T>) {
    let before = to.borrow().clone();
    tokio::spawn(async move {
        loop {
            to.send_replace(before.plus(&from.borrow_and_update()));
            if from.changed().await.is_err() {
                return;
            }
        }
    });
}

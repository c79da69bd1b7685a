//! The gateway's state owner: an actix actor holding the resource index. Each batch from
//! the config source is applied, translated, and published as the desired contents of the
//! `kgw_proxies` and `kgw_status` buckets (watch channels read by the KV writers).
use std::{collections::BTreeMap, sync::Arc};

use actix::{Actor, AsyncContext as _, Context, Handler, Message};
use bytes::Bytes;
use kgw_common::{
    bus::KvState,
    resources::Index,
    source::{Batch, Problem},
};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::{
    metrics::GatewayMetrics,
    translate::{self, Options, Output, StatusReport, status::RouteParentStatus},
    validation::background::Reported,
};

/// Desired bucket contents, published for the writers.
pub(crate) struct Outputs {
    pub proxies: watch::Sender<KvState>,
    pub status: watch::Sender<KvState>,
    /// Set once the first full state has been translated (readiness).
    pub synced: watch::Sender<bool>,
    /// The index after each batch, for the admission webhook and the background validation
    /// (each review works on its own copy of one consistent state).
    pub index: watch::Sender<Arc<Index>>,
    /// The status of the last translation, for the Kubernetes status writer. Sent before
    /// `index` (only when it changed): a reader woken by `index` sees the matching report.
    pub report: watch::Sender<Arc<StatusReport>>,
}

pub(crate) struct GatewayActor {
    index: Index,
    problems: Arc<Vec<Problem>>,
    options: Options,
    outputs: Outputs,
    last: Option<Output>,
    metrics: Arc<GatewayMetrics>,
    /// The last background validation report (`problems.validation`).
    validation: Arc<Vec<Reported>>,
    /// Encoded route statuses, reused while unchanged (most of them, on any one edit).
    route_status: RouteStatusCache,
}

impl GatewayActor {
    pub(crate) fn new(options: Options, outputs: Outputs) -> Self {
        Self {
            index: Index::default(),
            problems: Arc::default(),
            options,
            outputs,
            last: None,
            metrics: Arc::default(),
            validation: Arc::default(),
            route_status: RouteStatusCache::new(),
        }
    }

    /// Counts translations into `metrics` (else into a private set nobody reads).
    pub(crate) fn with_metrics(mut self, metrics: Arc<GatewayMetrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Actor for GatewayActor {
    type Context = Context<Self>;
}

/// The most source batches taken at once (then merged into one translation).
const MAX_BATCHES: usize = 64;

impl GatewayActor {
    /// Starts the actor on the config source's batches: those that queued up while it
    /// translated are merged, so under churn it translates once per round, not once per
    /// file event.
    pub(crate) fn start_on(self, batches: tokio::sync::mpsc::Receiver<Batch>) -> actix::Addr<Self> {
        use futures::StreamExt as _;
        Self::create(move |ctx| {
            ctx.add_stream(
                tokio_stream::wrappers::ReceiverStream::new(batches)
                    .ready_chunks(MAX_BATCHES)
                    .map(SourceBatches),
            );
            self
        })
    }
}

/// Batches from the config source, in arrival order.
pub(crate) struct SourceBatches(Vec<Batch>);

impl actix::StreamHandler<SourceBatches> for GatewayActor {
    fn handle(&mut self, SourceBatches(batches): SourceBatches, ctx: &mut Context<Self>) {
        if let Some(merged) = Batch::merge(batches) {
            Handler::handle(self, SourceBatch(merged), ctx);
        }
    }

    /// The source ends only at shutdown; the actor stops with the system.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// A batch from the config source.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SourceBatch(pub Batch);

impl Handler<SourceBatch> for GatewayActor {
    type Result = ();

    fn handle(&mut self, SourceBatch(batch): SourceBatch, _: &mut Context<Self>) {
        let span = tracing::info_span!(
            parent: &batch.span,
            "gateway.translate",
            changes = batch.changes.len(),
            proxies = tracing::field::Empty,
            proxies_changed = tracing::field::Empty,
        );
        let _in_span = span.enter();
        for change in &batch.changes {
            self.index.apply(change);
        }
        self.problems = batch.problems.clone();
        let started = std::time::Instant::now();
        let output = translate::translate(&self.index, &self.options);
        let took = started.elapsed();
        self.metrics.translated(took, output.proxies.len(), self.problems.len());
        tracing::debug!(
            proxies = output.proxies.len(),
            micros = took.as_micros() as u64,
            "translated"
        );
        let proxies_changed = self.last.as_ref().map(|l| &l.proxies) != Some(&output.proxies);
        span.record("proxies", output.proxies.len());
        span.record("proxies_changed", proxies_changed);
        if proxies_changed {
            self.outputs
                .proxies
                .send_replace(KvState::traced(encode_proxies(&output)));
        }
        self.outputs.status.send_replace(KvState::traced(encode_status(
            &output,
            &self.problems,
            &self.validation,
            &mut self.route_status,
        )));
        if self.last.as_ref().map(|l| &l.status) != Some(&output.status) {
            self.outputs.report.send_replace(Arc::new(output.status.clone()));
        }
        self.outputs.index.send_replace(Arc::new(self.index.clone()));
        self.outputs.synced.send_replace(true);
        self.last = Some(output);
    }
}

/// The background validation's findings for the current state.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ValidationReport(pub Vec<Reported>);

impl Handler<ValidationReport> for GatewayActor {
    type Result = ();

    fn handle(&mut self, ValidationReport(findings): ValidationReport, _: &mut Context<Self>) {
        self.validation = Arc::new(findings);
        if let Some(output) = &self.last {
            self.outputs.status.send_replace(KvState::traced(encode_status(
                output,
                &self.problems,
                &self.validation,
                &mut self.route_status,
            )));
        }
    }
}

/// The Proxies as KV values (the layout in `kgw_proto::nats`): each Proxy's head under its
/// key, stamped with the hash of its own content, and each of its virtual hosts under a
/// key of its own, so that a change to one host changes one value.
pub(crate) fn encode_proxies(output: &Output) -> BTreeMap<String, Bytes> {
    let mut values = BTreeMap::new();
    for (key, proxy) in &output.proxies {
        let (mut head, parts) = kgw_common::proxy_parts::split(key, proxy);
        head.source_hash.clear();
        head.source_hash = hex::encode(&Sha256::digest(head.encode_to_vec())[..8]);
        values.insert(key.clone(), Bytes::from(head.encode_to_vec()));
        for (part_key, part) in parts {
            values.insert(part_key, Bytes::from(part.encode_to_vec()));
        }
    }
    values
}

/// Status as YAML per resource, key `<kind>.<namespace>.<name>`; config problems under
/// `problems.config`, what the validating webhook would deny under `problems.validation`.
/// Route key → its status and that status encoded.
pub(crate) type RouteStatusCache = BTreeMap<String, (Vec<RouteParentStatus>, Bytes)>;

pub(crate) fn encode_status(
    output: &Output,
    problems: &[Problem],
    validation: &[Reported],
    cache: &mut RouteStatusCache,
) -> BTreeMap<String, Bytes> {
    let yaml = |value: &dyn erased::Yaml| Bytes::from(value.to_yaml());
    let mut out = BTreeMap::new();
    for (name, conditions) in &output.status.gateway_classes {
        out.insert(format!("gatewayclass.{name}"), yaml(conditions));
    }
    for (key, status) in &output.status.gateways {
        out.insert(format!("gateway.{}", key.replacen('/', ".", 1)), yaml(status));
    }
    let mut fresh = RouteStatusCache::new();
    for (key, status) in &output.status.http_routes {
        let bytes = match cache.remove(key) {
            Some((cached, bytes)) if cached == *status => bytes,
            _ => yaml(status),
        };
        out.insert(format!("httproute.{}", key.replacen('/', ".", 1)), bytes.clone());
        fresh.insert(key.clone(), (status.clone(), bytes));
    }
    *cache = fresh;
    for (key, ancestors) in &output.status.route_options {
        out.insert(format!("routeoption.{}", key.replacen('/', ".", 1)), yaml(ancestors));
    }
    if !problems.is_empty() {
        out.insert("problems.config".into(), yaml(&problems.to_vec()));
    }
    if !validation.is_empty() {
        out.insert("problems.validation".into(), yaml(&validation.to_vec()));
    }
    out
}

mod erased {
    /// serde_yaml of any Serialize, behind a trait object to keep `encode_status` short.
    pub(super) trait Yaml {
        fn to_yaml(&self) -> String;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn to_yaml(&self) -> String {
            serde_yaml::to_string(self).unwrap_or_else(|e| format!("error: {e}\n"))
        }
    }
}

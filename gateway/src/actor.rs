//! The gateway's state owner: an actix actor holding the resource index. Each batch from
//! the config source is applied, translated, and published as the desired contents of the
//! `kgw_proxies` and `kgw_status` buckets (watch channels read by the KV writers).
use std::{collections::BTreeSet, sync::Arc};

use actix::{Actor, AsyncContext as _, Context, Handler, Message};
use kgw_common::{
    bus::KvState,
    resources::{Change, Index},
    source::{Batch, Problem},
};
use tokio::sync::watch;

mod values;

use values::{Published, StatusValues};

use crate::{
    metrics::GatewayMetrics,
    translate::{EncodedProxies, Incremental, Options, StatusReport},
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
    /// The copy of the index published for the webhook before the last one, and the changes
    /// of the last batch: when nobody else holds that copy any more, it is brought up to date
    /// by applying those and the next batch's changes, instead of cloning the whole index.
    spare_index: Option<Arc<Index>>,
    spare_lag: Vec<Change>,
    problems: Arc<Vec<Problem>>,
    outputs: Outputs,
    /// Translation per route, cached: a batch translates again only what it touches.
    translator: Incremental,
    /// The Proxies' KV values, encoded again only where the translation changed them.
    encoded: EncodedProxies,
    /// Set once the first batch is translated.
    translated: bool,
    metrics: Arc<GatewayMetrics>,
    /// The last background validation report (`problems.validation`).
    validation: Arc<Vec<Reported>>,
    /// The status values, encoded again where they changed.
    status_values: StatusValues,
    /// The proxies' and the status values as sent, without a whole copy per batch.
    proxies_published: Published,
    status_published: Published,
}

impl GatewayActor {
    /// The source gives this gateway no Secrets (see `Index::secrets_withheld`).
    pub(crate) fn with_secrets_withheld(mut self, withheld: bool) -> Self {
        self.index.secrets_withheld = withheld;
        self
    }

    pub(crate) fn new(options: Options, outputs: Outputs) -> Self {
        Self {
            status_values: StatusValues::new(&options.controller_name),
            index: Index::default(),
            spare_index: None,
            spare_lag: Vec::new(),
            problems: Arc::default(),
            outputs,
            translator: Incremental::new(options),
            encoded: EncodedProxies::default(),
            translated: false,
            metrics: Arc::default(),
            validation: Arc::default(),
            proxies_published: Published::default(),
            status_published: Published::default(),
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
            retranslated_routes = tracing::field::Empty,
        );
        let _in_span = span.enter();
        for change in &batch.changes {
            self.index.apply(change);
        }
        self.problems = batch.problems.clone();
        let first = !self.translated;
        let started = std::time::Instant::now();
        self.translator
            .apply(&self.index, batch.changes.iter().map(Change::key));
        let (output, changed) = (self.translator.output(), self.translator.changed());
        let proxies_changed = self.encoded.update(output, changed) || first;
        let took = started.elapsed();
        self.metrics.translated(took, output.proxies.len(), self.problems.len());
        tracing::debug!(
            proxies = output.proxies.len(),
            retranslated_routes = changed.retranslated_routes,
            micros = took.as_micros() as u64,
            "translated"
        );
        span.record("proxies", output.proxies.len());
        span.record("proxies_changed", proxies_changed);
        span.record("retranslated_routes", changed.retranslated_routes);
        self.proxies_published.record(Some(self.encoded.updates()));
        if proxies_changed {
            self.proxies_published
                .send(&self.outputs.proxies, self.encoded.values());
        }
        let routes = (!first).then_some(&changed.route_status);
        self.status_values.update(
            &output.status,
            &self.index,
            routes,
            &self.problems,
            &self.validation,
            &crate::kube_status::now(),
        );
        self.status_published.record(self.status_values.updates());
        self.status_published
            .send(&self.outputs.status, self.status_values.values());
        // A whole copy of the report, for the Kubernetes status writer alone: none when
        // nobody reads it (directory mode).
        if (changed.status || first) && self.outputs.report.receiver_count() > 0 {
            self.outputs.report.send_replace(Arc::new(output.status.clone()));
        }
        self.publish_index(&batch.changes, first);
        self.outputs.synced.send_replace(true);
        self.translated = true;
    }
}

impl GatewayActor {
    /// Sends a copy of the index for the webhook and the status writer.
    fn publish_index(&mut self, changes: &[Change], first: bool) {
        let copy = match self.spare_index.take().map(Arc::try_unwrap) {
            Some(Ok(mut behind)) => {
                self.spare_lag
                    .iter()
                    .chain(changes)
                    .for_each(|change| behind.apply(change));
                behind
            }
            // Still read elsewhere (or none yet): a copy of the whole index.
            _ => self.index.clone(),
        };
        let previous = self.outputs.index.send_replace(Arc::new(copy));
        // Before the first batch the channel held no state of ours: nothing to catch up
        // (and no copy of the first batch's changes, the whole index, to keep for it).
        self.spare_index = (!first).then_some(previous);
        self.spare_lag = if first { Vec::new() } else { changes.to_vec() };
    }
}

/// The gateway's own findings on its current state (`validation::status_findings` of its
/// last translation's status), for the background validation.
#[derive(Message)]
#[rtype(result = "BTreeSet<crate::validation::Finding>")]
pub(crate) struct OwnFindings;

impl Handler<OwnFindings> for GatewayActor {
    type Result = actix::MessageResult<OwnFindings>;

    fn handle(&mut self, _: OwnFindings, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(crate::validation::status_findings(&self.translator.output().status))
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
        if self.translated {
            let status = &self.translator.output().status;
            self.status_values.update(
                status,
                &self.index,
                Some(&BTreeSet::new()),
                &self.problems,
                &self.validation,
                &crate::kube_status::now(),
            );
            self.status_published.record(self.status_values.updates());
            self.status_published
                .send(&self.outputs.status, self.status_values.values());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use kgw_common::resources::{Change, decode};
    use serde::Deserialize as _;

    use super::*;
    use crate::translate::{Options, translate};

    const BASE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgateway.dev/kgateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, port: 80, protocol: HTTP}]
";

    fn route(name: &str, service: &str) -> String {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]\n"
        )
    }

    fn index(yaml: &str) -> Index {
        let mut index = Index::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(doc).expect("yaml");
            let (key, resource) = decode(value).expect("valid").expect("known kind");
            index.apply(&Change::Upsert(key, resource));
        }
        index
    }

    /// The published copies of the index follow the actor's own, whether they are caught
    /// up by applying changes (nobody holds them) or cloned (a reader holds one).
    #[test]
    fn published_index_copies_follow_the_index() {
        let (proxies, _) = watch::channel(KvState::default());
        let (status, _) = watch::channel(KvState::default());
        let (synced, _) = watch::channel(false);
        let (index_tx, index_rx) = watch::channel(Arc::new(Index::default()));
        let (report, _) = watch::channel(Arc::new(StatusReport::default()));
        let outputs = Outputs {
            proxies,
            status,
            synced,
            index: index_tx,
            report,
        };
        let mut actor = GatewayActor::new(Options::default(), outputs);
        let mut held = None;
        for step in 0..8 {
            let yaml = format!("{BASE}{}", route(&format!("r{step}"), "s"));
            let changes: Vec<Change> = index(&yaml)
                .http_routes
                .into_iter()
                .filter(|(key, _)| key.1 == format!("r{step}") || step % 3 == 0)
                .map(|(key, route)| {
                    let key = kgw_common::resources::ResourceKey {
                        kind: kgw_common::resources::Kind::HttpRoute,
                        namespace: key.0,
                        name: key.1,
                    };
                    Change::Upsert(key, kgw_common::resources::Resource::HttpRoute(route))
                })
                .chain((step == 5).then(|| Change::Delete(route_key("r1"))))
                .collect();
            changes.iter().for_each(|c| actor.index.apply(c));
            actor.publish_index(&changes, step == 0);
            let published = index_rx.borrow().clone();
            assert_eq!(
                published.http_routes.keys().collect::<Vec<_>>(),
                actor.index.http_routes.keys().collect::<Vec<_>>(),
                "step {step}"
            );
            // Now and then a reader keeps a copy for two batches (the actor clones then).
            match step % 4 {
                1 => held = Some(published),
                3 => held = None,
                _ => {}
            }
        }
        drop(held);
    }

    /// What a `Published` sends is the live map, whether it caught a spare copy up or
    /// copied the map (a reader held the spare, or the updates were unknown).
    #[test]
    fn published_values_follow_the_live_map() {
        let (tx, rx) = watch::channel(KvState::default());
        let mut published = Published::default();
        let mut live = BTreeMap::new();
        let mut held = None;
        for step in 0..12u8 {
            let key = format!("k{}", step % 5);
            let update = if step % 3 == 2 {
                live.remove(&key);
                (key, None)
            } else {
                let value = Bytes::from(vec![step]);
                live.insert(key.clone(), value.clone());
                (key, Some(value))
            };
            let updates = [update];
            published.record((step != 7).then_some(&updates[..]));
            // Not every change is sent at once.
            if step % 4 != 1 {
                published.send(&tx, &live);
                assert_eq!(*rx.borrow().values, live, "step {step}");
            }
            match step % 5 {
                2 => held = Some(rx.borrow().values.clone()),
                4 => held = None,
                _ => {}
            }
        }
        drop(held);
    }

    fn route_key(name: &str) -> kgw_common::resources::ResourceKey {
        kgw_common::resources::ResourceKey {
            kind: kgw_common::resources::Kind::HttpRoute,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// Values patched for the routes that changed equal values encoded from scratch.
    #[test]
    fn status_values_patched_per_route_equal_a_full_encoding() {
        let options = Options::default();
        let (index_before, index_after) = (
            index(&format!("{BASE}{}{}", route("a", "s"), route("b", "s"))),
            index(&format!("{BASE}{}{}", route("a", "t"), route("c", "s"))),
        );
        let before = translate(&index_before, &options);
        let after = translate(&index_after, &options);
        let now = crate::kube_status::now();
        let mut values = StatusValues::new(&options.controller_name);
        values.update(&before.status, &index_before, None, &[], &[], &now);
        let mut replayed = values.values().clone();
        let routes: BTreeSet<String> = ["default/a", "default/b", "default/c"].map(String::from).into();
        values.update(&after.status, &index_after, Some(&routes), &[], &[], &now);
        let mut fresh = StatusValues::new(&options.controller_name);
        fresh.update(&after.status, &index_after, None, &[], &[], &now);
        let full = fresh.values().clone();
        assert_eq!(*values.values(), full);
        for (key, value) in values.updates().expect("known updates") {
            match value {
                Some(value) => replayed.insert(key.clone(), value.clone()),
                None => replayed.remove(key),
            };
        }
        assert_eq!(replayed, full);
        assert!(full.contains_key("httproute.default.c") && !full.contains_key("httproute.default.b"));
        assert!(full.contains_key("gateway.default.gw"));
    }
}

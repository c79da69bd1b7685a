//! The controller's state owner: an actix actor holding every Proxy and Upstream read from
//! NATS. A change re-translates only the Proxies it touches, and in them only the virtual
//! hosts and clusters it touches (`translate::cache`), and publishes their snapshots into
//! the cache (which ADS streams watch). A changed virtual-host value of KV costs that
//! virtual host's translation and a snapshot made from the previous one; the whole Proxy
//! is assembled only when its head changes (or an Upstream, a Secret, a WASM module).
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use actix::{Actor, AsyncContext as _, Context, Handler, Message};
use kgw_common::{bus::KvEvent, source::Batch};
use kgw_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::{
    metrics::ControllerMetrics,
    proxies::{ProxiesView, ProxyChange, ProxyStore},
    translate::{
        Settings,
        cache::{IncrementalTranslator, SnapshotTranslation},
    },
    wasm::{Fetched, WasmFetcher},
    xds::{
        SnapshotCache,
        snapshot::{CLUSTER, LISTENER},
    },
};

pub struct ControllerActor {
    settings: Settings,
    cache: SnapshotCache,
    /// Proxies as read from `kgw_proxies` (heads and virtual hosts): a changed virtual host
    /// is translated by itself (`IncrementalTranslator::translate_changed`), a changed head
    /// with its whole Proxy, assembled then.
    proxies: ProxyStore,
    upstreams: BTreeMap<String, pb::Upstream>,
    /// Translates each Proxy again from its last translation: only what changed.
    translator: IncrementalTranslator,
    /// Which buckets have delivered their first full read (readiness).
    synced: watch::Sender<(bool, bool)>,
    /// Fetches the WASM modules routes name; results arrive as [`WasmFetched`].
    wasm: Option<WasmFetcher>,
    /// Translations, counted for /metrics.
    metrics: Arc<ControllerMetrics>,
    /// Proxies, Upstreams and settings for readers outside the actor (debug, validation).
    published: watch::Sender<Published>,
    /// What changed since the last publication; a publication is pending when any is set.
    unpublished: Unpublished,
    /// Whether the Secrets of the config source have been read once (true without a
    /// source). Until then nothing is translated: an HTTPS listener translated without its
    /// Secret would be left out, and Envoy would drop it until they arrive.
    secrets_ready: bool,
}

/// What the actor publishes through a watch channel for the services that read its state
/// (proxy debug, validation). Each part sits behind an `Arc`: a reader's copy is cheap, and
/// a change copies only the part that changed.
#[derive(Clone, Debug)]
pub struct Published {
    /// The Proxies as the actor holds them (in parts), assembled when read.
    pub proxies: ProxiesView,
    pub upstreams: Arc<BTreeMap<String, pb::Upstream>>,
    pub settings: Arc<Settings>,
}

#[derive(Clone, Copy, Default)]
struct Unpublished {
    proxies: bool,
    upstreams: bool,
    settings: bool,
}

impl Unpublished {
    fn any(self) -> bool {
        self.proxies || self.upstreams || self.settings
    }
}

/// Changes are published at most this often: a burst of KV events (thousands of
/// Upstreams) copies the maps once, not once per event.
const PUBLISH_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

impl ControllerActor {
    pub fn new(settings: Settings, cache: SnapshotCache, synced: watch::Sender<(bool, bool)>) -> Self {
        let initial_settings = settings.clone();
        let proxies = ProxyStore::default();
        let view = proxies.view();
        let actor = Self {
            settings,
            cache,
            proxies,
            upstreams: BTreeMap::new(),
            translator: IncrementalTranslator::default(),
            synced,
            wasm: None,
            metrics: Arc::default(),
            published: watch::channel(Published {
                proxies: ProxiesView::default(),
                upstreams: Arc::default(),
                settings: Arc::new(initial_settings),
            })
            .0,
            unpublished: Unpublished::default(),
            secrets_ready: true,
        };
        actor.published.send_modify(|p| p.proxies = view);
        actor
    }

    /// Follows the actor's Proxies, Upstreams and settings (call before `start`).
    pub fn published(&self) -> watch::Receiver<Published> {
        self.published.subscribe()
    }

    /// Schedules the publication of what changed (see [`PUBLISH_DELAY`]).
    fn publish_later(&mut self, ctx: &mut Context<Self>, changed: Unpublished) {
        let pending = self.unpublished.any();
        self.unpublished = Unpublished {
            proxies: self.unpublished.proxies || changed.proxies,
            upstreams: self.unpublished.upstreams || changed.upstreams,
            settings: self.unpublished.settings || changed.settings,
        };
        if !pending && self.unpublished.any() {
            ctx.run_later(PUBLISH_DELAY, |actor, _| actor.publish());
        }
    }

    fn publish(&mut self) {
        let changed = std::mem::take(&mut self.unpublished);
        self.published.send_modify(|p| {
            if changed.proxies {
                // A view of the store, not a copy: it wakes the readers.
                p.proxies = self.proxies.view();
            }
            if changed.upstreams {
                p.upstreams = Arc::new(self.upstreams.clone());
            }
            if changed.settings {
                p.settings = Arc::new(self.settings.clone());
            }
        });
    }

    /// Counts translations into `metrics` (else into a private set nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<ControllerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Routes naming WASM modules get them fetched through `fetcher`.
    pub fn with_wasm(mut self, fetcher: WasmFetcher) -> Self {
        self.wasm = Some(fetcher);
        self
    }

    fn role(key: &str) -> String {
        kgw_proto::nats::key_to_role(key)
    }

    /// Translates the Proxies under `keys` again, whole.
    fn retranslate_whole(&mut self, keys: impl IntoIterator<Item = String>) {
        let changes = keys.into_iter().map(|key| (key, ProxyChange::Whole)).collect();
        self.retranslate(changes);
    }

    fn retranslate(&mut self, changes: BTreeMap<String, ProxyChange>) {
        if !self.secrets_ready {
            // Every Proxy is translated once they are (`on_secrets`).
            return;
        }
        for (key, change) in changes {
            let Some(head) = self.proxies.head(&key).filter(|_| change != ProxyChange::Removed) else {
                self.translator.forget(&key);
                self.proxies.record_served(&key, None);
                self.cache.set(&Self::role(&key), None);
                self.metrics.removed(&Self::role(&key));
                continue;
            };
            let span = tracing::info_span!("controller.translate", proxy = %key, role = %Self::role(&key));
            let _in_span = span.enter();
            let started = std::time::Instant::now();
            let by_parts = match &change {
                ProxyChange::VirtualHosts(hosts) => {
                    let store = &self.proxies;
                    let lookup = |listener: &str, name: &str| store.virtual_host(&key, listener, name);
                    self.translator
                        .translate_changed(&key, &head, hosts, &lookup, &self.upstreams, &self.settings)
                }
                ProxyChange::Whole | ProxyChange::Removed => None,
            };
            let translated = match by_parts {
                Some(translated) => translated,
                None => {
                    let Some(proxy) = self.proxies.assemble(&key) else {
                        continue;
                    };
                    if let Some(fetcher) = &self.wasm {
                        wasm_filters(&proxy).for_each(|filter| fetcher.want(&filter));
                    }
                    self.translator
                        .translate_whole(&key, Some(&head), &proxy, &self.upstreams, &self.settings)
                }
            };
            self.serve(&key, translated, started);
        }
    }

    /// Serves the translation `translated` of the Proxy under `key` (begun at `started`).
    fn serve(&mut self, key: &str, translated: SnapshotTranslation, started: std::time::Instant) {
        {
            let (snapshot, problems) = (translated.snapshot, translated.problems);
            let took = started.elapsed();
            self.metrics
                .translated(&Self::role(key), took, snapshot.bytes(), &problems);
            let reuse = self.translator.last_reuse();
            tracing::debug!(
                proxy = %key, listeners = snapshot.resources(LISTENER).map_or(0, |t| t.items.len()),
                clusters = snapshot.resources(CLUSTER).map_or(0, |t| t.items.len()),
                bytes = snapshot.bytes(), micros = started.elapsed().as_micros() as u64,
                virtual_hosts_translated = reuse.virtual_hosts_translated,
                virtual_hosts_reused = reuse.virtual_hosts_reused, "translated proxy"
            );
            // Problems reach status through validation (the gateway asks); here they are
            // counted and logged.
            for problem in &problems {
                tracing::debug!(proxy = %key, path = %problem.path, message = %problem.message, "translation problem");
            }
            // Kept for the gateway's background checks (`served_problems`), which then
            // need not send the whole Proxy to learn them.
            self.proxies.record_served(key, Some(problems));
            // The pushes to Envoy continue this span's trace.
            let _in_snapshot =
                tracing::info_span!("xds.snapshot", role = %Self::role(key), bytes = snapshot.bytes()).entered();
            let snapshot = snapshot.traced(kgw_common::trace::TraceHeaders::current());
            self.cache.set(&Self::role(key), Some(Arc::new(snapshot)));
        }
    }

    fn apply<T: prost::Message + Default>(
        map: &mut BTreeMap<String, T>,
        event: KvEvent,
        what: &str,
    ) -> BTreeSet<String> {
        let decode = |key: &str, bytes: &[u8]| match T::decode(bytes) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::error!(key, %error, "cannot decode {what}; ignored");
                None
            }
        };
        match event {
            KvEvent::Full(all) => {
                let mut changed: BTreeSet<String> = map.keys().cloned().collect();
                let fresh: BTreeMap<String, T> = all
                    .iter()
                    .filter_map(|(k, v)| decode(k, v).map(|v| (k.clone(), v)))
                    .collect();
                for (key, value) in &fresh {
                    if map.get(key).map(|old| old.encode_to_vec()) != Some(value.encode_to_vec()) {
                        changed.insert(key.clone());
                    } else {
                        changed.remove(key);
                    }
                }
                changed.retain(|k| fresh.contains_key(k) || map.contains_key(k));
                *map = fresh;
                changed
            }
            KvEvent::Put(key, bytes, _) => {
                let Some(value) = decode(&key, &bytes) else {
                    return BTreeSet::new();
                };
                map.insert(key.clone(), value);
                BTreeSet::from([key])
            }
            KvEvent::Delete(key, _) => {
                map.remove(&key);
                BTreeSet::from([key])
            }
        }
    }
}

impl Actor for ControllerActor {
    type Context = Context<Self>;
}

/// What the actor consumes itself: the two buckets' events, the WASM fetcher's results and
/// the config source's batches (for its Secrets; `None`: no source, no HTTPS listener).
pub struct Inputs {
    pub proxies: mpsc::Receiver<KvEvent>,
    pub upstreams: mpsc::Receiver<KvEvent>,
    pub wasm: mpsc::UnboundedReceiver<Fetched>,
    pub secrets: Option<mpsc::Receiver<Batch>>,
}

/// The most events taken from a bucket's queue at once (then merged per key).
const BATCH: usize = 1024;

impl ControllerActor {
    /// Starts the actor on its inputs: events that queued up while it translated arrive as
    /// one batch, merged per key, so a burst costs one translation per Proxy.
    pub fn start_on(mut self, inputs: Inputs) -> actix::Addr<Self> {
        use futures::StreamExt as _;
        use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
        self.secrets_ready = inputs.secrets.is_none();
        Self::create(move |ctx| {
            if let Some(secrets) = inputs.secrets {
                ctx.add_stream(ReceiverStream::new(secrets).map(SecretBatch));
            }
            ctx.add_stream(ReceiverStream::new(inputs.proxies).ready_chunks(BATCH).map(ProxyEvents));
            ctx.add_stream(
                ReceiverStream::new(inputs.upstreams)
                    .ready_chunks(BATCH)
                    .map(UpstreamEvents),
            );
            ctx.add_stream(UnboundedReceiverStream::new(inputs.wasm).map(WasmFetched));
            self
        })
    }
}

/// A batch of the config source (the controller reads its Secrets only).
pub struct SecretBatch(Batch);

impl actix::StreamHandler<SecretBatch> for ControllerActor {
    fn handle(&mut self, SecretBatch(batch): SecretBatch, ctx: &mut Context<Self>) {
        let span = tracing::info_span!(parent: &batch.span, "controller.secrets", changes = batch.changes.len());
        let _in_span = span.enter();
        self.on_secrets(&batch, ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// A batch of events of bucket `kgw_proxies`, in arrival order.
pub struct ProxyEvents(Vec<KvEvent>);
/// A batch of events of bucket `kgw_upstreams`, in arrival order.
pub struct UpstreamEvents(Vec<KvEvent>);

impl actix::StreamHandler<ProxyEvents> for ControllerActor {
    fn handle(&mut self, ProxyEvents(events): ProxyEvents, ctx: &mut Context<Self>) {
        let span = apply_span("kgw_proxies", &events);
        let _in_span = span.enter();
        self.on_proxies(kgw_common::bus::coalesce(events), ctx);
    }

    /// The KV mirror ends only at shutdown; the actor stops with the system.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl actix::StreamHandler<UpstreamEvents> for ControllerActor {
    fn handle(&mut self, UpstreamEvents(events): UpstreamEvents, ctx: &mut Context<Self>) {
        let span = apply_span("kgw_upstreams", &events);
        let _in_span = span.enter();
        self.on_upstreams(kgw_common::bus::coalesce(events), ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl actix::StreamHandler<WasmFetched> for ControllerActor {
    fn handle(&mut self, fetched: WasmFetched, ctx: &mut Context<Self>) {
        Handler::handle(self, fetched, ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// A change in bucket `kgw_proxies` (tests send these; running, the actor reads its inputs).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProxiesChanged(pub KvEvent);

/// A change in bucket `kgw_upstreams`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpstreamsChanged(pub KvEvent);

impl Handler<ProxiesChanged> for ControllerActor {
    type Result = ();

    fn handle(&mut self, ProxiesChanged(event): ProxiesChanged, ctx: &mut Context<Self>) {
        let events = vec![event];
        let span = apply_span("kgw_proxies", &events);
        let _in_span = span.enter();
        self.on_proxies(events, ctx);
    }
}

impl Handler<UpstreamsChanged> for ControllerActor {
    type Result = ();

    fn handle(&mut self, UpstreamsChanged(event): UpstreamsChanged, ctx: &mut Context<Self>) {
        let events = vec![event];
        let span = apply_span("kgw_upstreams", &events);
        let _in_span = span.enter();
        self.on_upstreams(events, ctx);
    }
}

/// `controller.apply`: the work on one batch of a bucket's events, a child of the change
/// that wrote the first of them and linked to the others.
fn apply_span(bucket: &'static str, events: &[KvEvent]) -> tracing::Span {
    let keys: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            KvEvent::Put(key, ..) | KvEvent::Delete(key, _) => Some(key.as_str()),
            KvEvent::Full(_) => None,
        })
        .collect();
    let span = tracing::info_span!(
        parent: None,
        "controller.apply",
        bucket,
        events = events.len(),
        full = events.iter().any(|e| matches!(e, KvEvent::Full(_))),
        keys = %keys.iter().take(10).copied().collect::<Vec<_>>().join(","),
    );
    kgw_common::trace::join(&span, events.iter().filter_map(KvEvent::trace));
    span
}

impl ControllerActor {
    /// Secrets changed: the Proxies naming one are translated again (all of them, the
    /// first time, once Upstreams are read too).
    fn on_secrets(&mut self, batch: &Batch, ctx: &mut Context<Self>) {
        let changed = self.settings.secrets.apply(&batch.changes);
        if !changed.is_empty() {
            tracing::info!(secrets = changed.len(), "TLS Secrets changed");
            // Validation's dry runs translate with the settings, Secrets included.
            self.publish_later(
                ctx,
                Unpublished {
                    settings: true,
                    ..Default::default()
                },
            );
        }
        let first = !self.secrets_ready && batch.initial;
        self.secrets_ready |= batch.initial;
        let affected: Vec<String> = if first {
            // Before Upstreams are read, their first full read translates every Proxy.
            if !self.synced.borrow().1 {
                return;
            }
            self.proxies.keys()
        } else {
            self.proxies
                .heads()
                .into_iter()
                .filter(|(_, head)| names_secret(head, &changed))
                .map(|(key, _)| key)
                .collect()
        };
        self.retranslate_whole(affected);
    }

    fn on_proxies(&mut self, events: Vec<KvEvent>, ctx: &mut Context<Self>) {
        let full = events.iter().any(|e| matches!(e, KvEvent::Full(_)));
        let changed = self.proxies.apply(events);
        self.metrics.rejected(&self.proxies.take_rejected());
        let proxies = !changed.is_empty();
        self.publish_later(
            ctx,
            Unpublished {
                proxies,
                ..Default::default()
            },
        );
        // Before every Upstream is read (a restart), a translation would route to clusters
        // that do not exist yet and Envoy would answer 500 until the rest arrives: wait. The
        // first full read of Upstreams translates every Proxy not translated yet.
        if self.synced.borrow().1 {
            self.retranslate(changed);
        }
        if full {
            self.synced.send_modify(|s| s.0 = true);
        }
    }

    fn on_upstreams(&mut self, events: Vec<KvEvent>, ctx: &mut Context<Self>) {
        let full = events.iter().any(|e| matches!(e, KvEvent::Full(_)));
        let mut changed = BTreeSet::new();
        for event in events {
            changed.extend(Self::apply(&mut self.upstreams, event, "Upstream"));
        }
        let upstreams = !changed.is_empty();
        self.publish_later(
            ctx,
            Unpublished {
                upstreams,
                ..Default::default()
            },
        );
        // Proxies that route to a changed upstream; a new upstream may be one a route was
        // waiting for, so proxies with unresolved routes are retried too.
        let mut affected = BTreeSet::new();
        if !changed.is_empty() && !self.secrets_ready {
            // Nothing served yet: every Proxy is translated once the Secrets are read.
            self.translator.upstreams_changed(&changed);
        } else if !changed.is_empty() {
            // The virtual hosts and clusters they concern, by parts where the translator
            // can; the Proxies it cannot, whole.
            let started = std::time::Instant::now();
            let store = &self.proxies;
            let head = |key: &str| store.head(key);
            let lookup = |key: &str, listener: &str, name: &str| store.virtual_host(key, listener, name);
            let changes =
                self.translator
                    .translate_upstream_changes(&changed, &head, &lookup, &self.upstreams, &self.settings);
            for (key, translated) in changes.translated {
                let _in_span =
                    tracing::info_span!("controller.translate", proxy = %key, role = %Self::role(&key)).entered();
                self.serve(&key, translated, started);
            }
            affected.extend(changes.whole);
            // Not translated yet (the first full read of Upstreams).
            let translator = &self.translator;
            affected.extend(
                self.proxies
                    .keys()
                    .into_iter()
                    .filter(|key| !translator.translated(key)),
            );
            if changes.unserved {
                // Proxies without the state to take changes by parts, with a route waiting
                // for one of them.
                let translator = &self.translator;
                affected.extend(
                    waiting(&self.proxies, &changed)
                        .into_iter()
                        .filter(|key| !translator.serves_by_parts(key)),
                );
            }
        }
        self.retranslate_whole(affected);
        if full {
            self.synced.send_modify(|s| s.1 = true);
        }
    }
}

/// A WASM module was fetched (and verified) or refused.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WasmFetched(pub Fetched);

impl Handler<WasmFetched> for ControllerActor {
    type Result = ();

    fn handle(&mut self, WasmFetched((filter, outcome)): WasmFetched, ctx: &mut Context<Self>) {
        self.publish_later(
            ctx,
            Unpublished {
                settings: true,
                ..Default::default()
            },
        );
        let modules = &mut self.settings.wasm;
        match outcome {
            Ok(()) => {
                modules.refused.remove(&filter.sha256);
                modules.verified.insert(filter.sha256.clone());
                modules.last_good.insert(filter.name.clone(), filter.clone());
            }
            Err(reason) => {
                modules.refused.insert(filter.sha256.clone(), reason);
            }
        }
        let mut users = BTreeSet::new();
        self.proxies.for_each_virtual_host(|key, vhost| {
            let runs = vhost
                .routes
                .iter()
                .flat_map(|route| crate::translate::filters::merge(&route.filters).wasm_filters)
                .any(|f| f.name == filter.name);
            if runs {
                users.insert(key.to_string());
            }
        });
        self.retranslate_whole(users);
    }
}

/// Every WASM filter a Proxy's routes run (each route's last list, as the translation has it).
fn wasm_filters(proxy: &pb::Proxy) -> impl Iterator<Item = pb::WasmFilter> + '_ {
    proxy
        .listeners
        .iter()
        .filter_map(|l| l.listener_type.as_ref())
        .flat_map(|pb::listener::ListenerType::HttpListener(http)| http.virtual_hosts.iter())
        .flat_map(|vhost| vhost.routes.iter())
        .flat_map(|route| crate::translate::filters::merge(&route.filters).wasm_filters)
}

/// Whether a listener of `proxy`, or its client certificate for TLS backends, names one of
/// the Secrets `changed` (SDS names).
fn names_secret(proxy: &pb::Proxy, changed: &BTreeSet<String>) -> bool {
    proxy
        .listeners
        .iter()
        .flat_map(|l| &l.ssl_configurations)
        .filter_map(|ssl| ssl.secret_ref.as_ref())
        .chain(proxy.backend_client_certificate.as_ref())
        .any(|r| changed.contains(&crate::secrets::sds_name(&r.namespace, &r.name)))
}

/// Proxies with a route naming one of `changed` (an upstream that appeared or went away).
fn waiting(proxies: &ProxyStore, changed: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    proxies.for_each_virtual_host(|key, vhost| {
        if vhost
            .routes
            .iter()
            .any(|r| upstream_keys(r).any(|k| changed.contains(&k)))
        {
            found.insert(key.to_string());
        }
    });
    found
}

fn upstream_keys(route: &pb::Route) -> impl Iterator<Item = String> + '_ {
    let refs: Vec<&pb::ResourceRef> = match &route.action {
        Some(pb::route::Action::RouteAction(a)) => match &a.destination {
            Some(pb::route_action::Destination::Single(d)) => d.upstream.iter().collect(),
            Some(pb::route_action::Destination::Multi(m)) => m
                .destinations
                .iter()
                .filter_map(|w| w.destination.as_ref()?.upstream.as_ref())
                .collect(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    refs.into_iter().map(|r| kgw_proto::nats::key(&r.namespace, &r.name))
}

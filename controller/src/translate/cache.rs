//! Translation per resource, cached: a Proxy's virtual hosts and clusters are kept from one
//! translation to the next and translated again only when what they were made from changed,
//! so that one changed virtual host among thousands costs one virtual host's translation.
//! The result is the full translation's ([`super::translate`]), resource for resource: both
//! assemble the same parts (`assemble`).
//!
//! A cached virtual host is reused when
//! - the Proxy's virtual host (same listener, same name) is equal to the one it was made from;
//! - none of the Upstreams its routes name (found or missing) changed: the owner reports
//!   changed Upstreams through [`IncrementalTranslator::upstreams_changed`] (and whether each
//!   is still found or still missing is checked on every use);
//! - the WASM cache's state is the same, when its routes ask for WASM filters;
//! - the WASM filters earlier virtual hosts of its listener run are the same, for the names
//!   its routes run (the first virtual host to run a filter fixes its config).
//!
//! An Upstream's cluster is reused while that Upstream does not change.
//!
//! # Changed virtual hosts only
//! [`IncrementalTranslator::translate_changed`] goes further when the Proxy store says which
//! virtual hosts changed (and the head and settings did not): only those are translated,
//! and the last snapshot is changed where they are (their route table entries and VHDS
//! resources; the clusters they name). It keeps, from the last whole translation, what
//! assembling needs besides the virtual hosts: the problems by place, which virtual host
//! names which cluster (the last in Proxy order decides a cluster's Upstream and TLS), and
//! the clusters served. It declines (the caller translates the whole Proxy) when a changed
//! virtual host is on a listener whose virtual hosts depend on one another (WASM filters:
//! the first to run one fixes its config, and the listener's filters and catch-alls follow
//! from all of them), on a listener whose name is not unique, whose virtual hosts are not in
//! name order, or left out; or when TLS clusters appear or all go (the client certificate
//! is looked up then).
//!
//! # Changed Upstreams
//! [`IncrementalTranslator::translate_upstream_changes`] takes the same path for changed
//! Upstreams: the served state keeps which virtual hosts name each Upstream (found or
//! missing) and what of it their translation read (whether it exists, its gRPC methods:
//! `routing_digest`). Only the virtual hosts whose reading changed are translated again
//! (none for an endpoints-only change); the Upstreams' clusters and endpoints are made
//! again and patched into the last snapshot's CDS and EDS.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::{pb::google::protobuf::Any, util::pack_any};
use kgw_proto::v1 as pb;

use super::upstream_tls::ClusterTls;
use super::{
    EnvoyResources, Problem, Settings, VirtualHostInputs, VirtualHostTranslation,
    assemble::{Assembled, Parts, Referenced, RouteTable, UpstreamCluster, assemble},
    routes,
    wasm::WasmModules,
};
use crate::proxies::{HostPart, SameRoutes};
use crate::xds::{
    Snapshot, canonical,
    snapshot::{CLUSTER, ENDPOINT, PackedResources, TypeResources},
    tables::{HostEntry, ServedTable},
};

/// Translates Proxies, reusing what did not change since their last translation. Holds one
/// cache per Proxy (by its KV key).
#[derive(Default)]
pub struct IncrementalTranslator {
    proxies: BTreeMap<String, ProxyCache>,
    last: Reuse,
}

/// What the last translation of [`IncrementalTranslator`] reused and what it made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reuse {
    /// Virtual hosts taken from the cache.
    pub virtual_hosts_reused: usize,
    /// Virtual hosts translated (new, changed, or depending on something that changed).
    pub virtual_hosts_translated: usize,
    /// Upstream clusters taken from the cache.
    pub clusters_reused: usize,
    /// Upstream clusters made.
    pub clusters_made: usize,
}

/// A Proxy's translation as served: what [`Snapshot::new`] makes of [`super::translate`]'s
/// resources, with the route tables packed from each virtual host's cached bytes.
#[derive(Clone, Debug)]
pub struct SnapshotTranslation {
    /// What Envoy is served.
    pub snapshot: Snapshot,
    /// As [`EnvoyResources::upstream_keys`].
    pub upstream_keys: Arc<BTreeSet<String>>,
    /// As [`super::translate`] reports them.
    pub problems: Vec<Problem>,
}

/// One Proxy's cached parts.
#[derive(Default)]
struct ProxyCache {
    /// The WASM cache's state the cached virtual hosts were translated with (`None`:
    /// nothing translated yet).
    wasm_modules: Option<WasmModules>,
    /// Listener name → virtual host name → its last translation.
    virtual_hosts: BTreeMap<String, BTreeMap<String, CachedVirtualHost>>,
    /// Cluster name → the cluster last made for it.
    clusters: BTreeMap<String, CachedCluster>,
    /// What [`IncrementalTranslator::translate_changed`] starts from, when it can.
    served: Option<Served>,
    /// As [`EnvoyResources::upstream_keys`], of the last translation served (`None`: none).
    upstream_keys: Option<Arc<BTreeSet<String>>>,
}

/// The place of a virtual host in its Proxy: its listener's index, then its name (a
/// listener whose virtual hosts change one by one) or its index, zero-padded.
type Place = (usize, String);

/// The last translation of a Proxy, as served, and what assembling it took besides its
/// virtual hosts (see the module doc).
struct Served {
    settings: Settings,
    /// The Proxy without its virtual hosts.
    head: Arc<pb::Proxy>,
    /// Listener name → index, of the listeners whose virtual hosts change one by one.
    by_parts: BTreeMap<String, usize>,
    listener_count: usize,
    /// Problems of listeners left out, of virtual hosts by place, and after the listeners'.
    listener_problems: BTreeMap<usize, Vec<Problem>>,
    host_problems: BTreeMap<Place, Vec<Problem>>,
    tail_problems: Vec<Problem>,
    /// Cluster name → the virtual hosts naming it, by place → the Upstream's key (the last
    /// decides); and those naming its TLS variant's TLS.
    refs: BTreeMap<String, BTreeMap<Place, String>>,
    tls_refs: BTreeMap<String, BTreeMap<Place, pb::UpstreamTls>>,
    client_certificate: Option<String>,
    /// Upstream key → the virtual hosts (listener name, virtual host name) of the listeners
    /// whose virtual hosts change one by one that name it (found or missing).
    by_upstream: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Upstream keys named by virtual hosts of the other listeners.
    unplaced_upstreams: BTreeSet<String>,
    /// Upstream key → what of it the virtual hosts' translation reads ([`routing_digest`]),
    /// for the Upstreams found that the virtual hosts name.
    digests: BTreeMap<String, [u8; 32]>,
    /// The clusters the routes name, by name.
    clusters: BTreeMap<String, ServedCluster>,
    /// The controller's own clusters, packed.
    own_clusters: BTreeMap<String, Any>,
    upstream_keys: Arc<BTreeSet<String>>,
    snapshot: Snapshot,
}

#[derive(PartialEq)]
struct ServedCluster {
    key: String,
    tls: Option<ClusterTls>,
    /// `None`: no such Upstream.
    cluster: Option<Arc<UpstreamCluster>>,
    /// What it adds to the Upstream keys served ([`served_upstream_key`]); `None` without a
    /// cluster.
    named: Option<String>,
}

impl Served {
    /// The Upstream keys its clusters add ([`EnvoyResources::upstream_keys`]).
    fn named_upstreams(&self) -> BTreeSet<String> {
        self.clusters.values().filter_map(|c| c.named.clone()).collect()
    }
}

/// The key an Upstream found under `key` adds to [`EnvoyResources::upstream_keys`]: the one
/// its metadata names (which may differ from the key it is stored under).
fn served_upstream_key(upstreams: &BTreeMap<String, pb::Upstream>, key: &str) -> Option<String> {
    let upstream = upstreams.get(key)?;
    let meta = upstream.metadata.clone().unwrap_or_default();
    Some(kgw_proto::nats::key(&meta.namespace, &meta.name))
}

impl PartialEq for UpstreamCluster {
    /// The same cluster when it is the same one: clusters are shared, never compared.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

struct CachedVirtualHost {
    /// The virtual host it was translated from.
    input: CachedInput,
    translation: Arc<VirtualHostTranslation>,
    /// Its route table entry (its listener's table), made once.
    entry: std::sync::OnceLock<Arc<HostEntry>>,
}

/// The virtual host a translation was made from: the Proxy store's part itself, shared (a
/// virtual host translated by itself), or a copy (one of a whole Proxy, assembled).
enum CachedInput {
    Part(Arc<pb::VirtualHostPart>),
    Own(pb::VirtualHost),
}

impl CachedInput {
    fn is(&self, vhost: &pb::VirtualHost) -> bool {
        self.virtual_host() == Some(vhost)
    }

    fn virtual_host(&self) -> Option<&pb::VirtualHost> {
        match self {
            Self::Part(part) => part.virtual_host.as_ref(),
            Self::Own(own) => Some(own),
        }
    }
}

impl CachedVirtualHost {
    /// This translation, to take a changed host's unchanged routes from.
    /// `same`: which routes of the new host the store copied from a part, used if that part
    /// is the one this translation was made from.
    fn previous<'a>(&'a self, same: Option<&'a SameRoutes>) -> Option<routes::Previous<'a>> {
        let same = match (&self.input, same) {
            (CachedInput::Part(part), Some(same)) if same.relative_to(part) => Some(same),
            _ => None,
        };
        Some(routes::Previous {
            input: self.input.virtual_host()?,
            translation: &self.translation,
            same,
        })
    }

    fn names_any_of(&self, upstream_keys: &BTreeSet<String>) -> bool {
        let translation = &self.translation;
        translation
            .found_keys
            .iter()
            .chain(&translation.missing_upstreams)
            .any(|key| upstream_keys.contains(key))
    }
}

struct CachedCluster {
    /// KV key of the Upstream it was made from.
    upstream_key: String,
    /// The TLS it was made with (a TLS variant of the Upstream's cluster).
    tls: Option<ClusterTls>,
    cluster: Arc<UpstreamCluster>,
}

impl IncrementalTranslator {
    /// Translates the Proxy under KV key `key`: what [`super::translate`] gives for the same
    /// inputs, made from the cached parts that still hold.
    pub fn translate(
        &mut self,
        key: &str,
        proxy: &pb::Proxy,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> (EnvoyResources, Vec<Problem>) {
        self.assemble(key, proxy, upstreams, settings).into_resources()
    }

    /// Translates the Proxy under KV key `key` into the snapshot Envoy is served: what
    /// [`Snapshot::new`] gives for [`Self::translate`]'s resources, its route tables made of
    /// the cached virtual hosts' bytes.
    pub fn translate_to_snapshot(
        &mut self,
        key: &str,
        proxy: &pb::Proxy,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> SnapshotTranslation {
        self.translate_whole(key, None, proxy, upstreams, settings)
    }

    /// [`Self::translate_to_snapshot`] of the Proxy `proxy` whose head (the Proxy without
    /// its virtual hosts) is `head`, as the Proxy store holds it (else made from `proxy`).
    pub fn translate_whole(
        &mut self,
        key: &str,
        head: Option<&Arc<pb::Proxy>>,
        proxy: &pb::Proxy,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> SnapshotTranslation {
        let assembled = self.assemble(key, proxy, upstreams, settings);
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for listener in &proxy.listeners {
            *names.entry(listener.name.as_str()).or_default() += 1;
        }
        let mut tables = Vec::with_capacity(assembled.route_tables.len());
        let mut by_parts = BTreeMap::new();
        let cached = self.proxies.get(key);
        for table in &assembled.route_tables {
            let vhosts = virtual_hosts(proxy, table.listener);
            let in_order = vhosts.windows(2).all(|w| w[0].name < w[1].name);
            let cached_hosts = cached.and_then(|cache| cache.virtual_hosts.get(&table.name));
            let by_name = (table.wasm_used.is_empty() && in_order)
                .then(|| by_name_table(table, vhosts, cached_hosts))
                .flatten();
            match by_name {
                Some(served) => {
                    if names.get(table.name.as_str()) == Some(&1) {
                        by_parts.insert(table.name.clone(), table.listener);
                    }
                    tables.push(served);
                }
                None => {
                    let (name, any) = pack_route_table(table);
                    match ServedTable::from_packed(&name, &any) {
                        Ok(served) => tables.push(served),
                        Err(error) => tracing::error!(table = %name, %error, "route table not read; left out"),
                    }
                }
            }
        }
        let mut packed = PackedResources {
            listeners: assembled
                .resources
                .listeners
                .iter()
                .map(|listener| (listener.name.clone(), pack_any(listener.clone())))
                .collect(),
            secrets: assembled
                .resources
                .secrets
                .iter()
                .map(|secret| (secret.name.clone(), pack_any(secret.clone())))
                .collect(),
            ..Default::default()
        };
        for upstream in &assembled.upstream_clusters {
            let (cluster, endpoints) = upstream.packed();
            packed.clusters.insert(upstream.name.clone(), cluster.clone());
            if let (Some(endpoints_name), Some(packed_assignment)) = (&upstream.endpoints_name, endpoints) {
                packed
                    .endpoints
                    .insert(endpoints_name.clone(), packed_assignment.clone());
            }
        }
        // The controller's own clusters come after the Upstreams' (as in the resources).
        let own_clusters: BTreeMap<String, Any> = assembled
            .resources
            .clusters
            .iter()
            .map(|cluster| (cluster.name.clone(), pack_any(cluster.clone())))
            .collect();
        packed.clusters.extend(own_clusters.clone());
        let snapshot = Snapshot::from_parts(packed, tables);
        let upstream_keys = Arc::new(assembled.resources.upstream_keys.clone());
        let head = head.cloned().unwrap_or_else(|| Arc::new(head_of(proxy)));
        let mut served = served_state(proxy, upstreams, head, settings, &assembled, by_parts, own_clusters);
        served.upstream_keys = Arc::clone(&upstream_keys);
        served.snapshot = snapshot.clone();
        if let Some(cache) = self.proxies.get_mut(key) {
            cache.served = Some(served);
            cache.upstream_keys = Some(Arc::clone(&upstream_keys));
        }
        SnapshotTranslation {
            snapshot,
            upstream_keys,
            problems: assembled.problems,
        }
    }

    /// Translates again only the virtual hosts `changed` (listener name, virtual host name)
    /// of the Proxy under KV key `key`, whose head is `head` and whose virtual hosts
    /// `virtual_host` gives (`None`: gone): what [`Self::translate_to_snapshot`] gives for the
    /// whole Proxy. `None` when it cannot (see the module doc): translate the whole Proxy.
    pub fn translate_changed(
        &mut self,
        key: &str,
        head: &Arc<pb::Proxy>,
        changed: &BTreeSet<(String, String)>,
        virtual_host: &dyn Fn(&str, &str) -> Option<HostPart>,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> Option<SnapshotTranslation> {
        self.changed_parts(key, head, changed, virtual_host, upstreams, settings, &BTreeSet::new())
    }

    /// [`Self::translate_changed`], the clusters of the Upstreams `forced` made again.
    #[allow(clippy::too_many_arguments)]
    fn changed_parts(
        &mut self,
        key: &str,
        head: &Arc<pb::Proxy>,
        changed: &BTreeSet<(String, String)>,
        virtual_host: &dyn Fn(&str, &str) -> Option<HostPart>,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
        forced: &BTreeSet<String>,
    ) -> Option<SnapshotTranslation> {
        let cache = self.proxies.get_mut(key)?;
        let ProxyCache {
            virtual_hosts: cached_hosts,
            clusters: cached_clusters,
            served: served_slot,
            upstream_keys: served_keys,
            ..
        } = cache;
        let served = served_slot.as_mut()?;
        let same_head = Arc::ptr_eq(&served.head, head) || served.head == *head;
        if !same_head || served.settings != *settings {
            return None;
        }
        let on_head = |listener: &str| head.listeners.iter().any(|l| l.name == listener);
        if changed
            .iter()
            .any(|(listener, _)| !served.by_parts.contains_key(listener) && on_head(listener))
        {
            return None;
        }
        let had_tls = !served.tls_refs.is_empty();
        let mut snapshot = served.snapshot.clone();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        if !forced.is_empty() {
            cached_clusters.retain(|_, cached| !forced.contains(&cached.upstream_key));
            touched.extend(
                served
                    .clusters
                    .iter()
                    .filter(|(_, c)| forced.contains(&c.key))
                    .map(|(name, _)| name.clone()),
            );
        }
        let mut reuse = Reuse::default();
        let mut decline = false;
        let no_wasm = BTreeMap::new();
        for (listener, name) in changed {
            // A listener the head does not have: its parts wait.
            let Some(&index) = served.by_parts.get(listener) else {
                continue;
            };
            let place = (index, name.clone());
            let hosts = cached_hosts.entry(listener.clone()).or_default();
            let old = hosts.remove(name);
            served.host_problems.remove(&place);
            let host = virtual_host(listener, name);
            let same = host.as_ref().and_then(|h| h.same.clone());
            let part = host.map(|h| h.part);
            let Some((part_arc, vhost)) = part.as_ref().and_then(|p| Some((p, p.virtual_host.as_ref()?))) else {
                if let Some(old) = &old {
                    forget_refs(served, &place, (listener, name), &old.translation, &mut touched);
                }
                snapshot.set_host(listener, name.clone(), None);
                continue;
            };
            let inputs = VirtualHostInputs {
                listener,
                upstreams,
                wasm_modules: &settings.wasm,
                earlier_wasm: &no_wasm,
            };
            // Its unchanged routes are taken from its last translation, unless they name an
            // Upstream this change is for.
            let previous = old.as_ref().and_then(|old| old.previous(same.as_deref()));
            let translation = routes::compact_virtual_host(vhost, inputs, previous, forced);
            reuse.virtual_hosts_translated += 1;
            let translation = Arc::new(translation);
            // WASM filters tie the listener's virtual hosts together: the whole Proxy.
            decline |= translation.uses_wasm_modules || !translation.wasm_added.is_empty();
            // A host of many routes mostly changes by a route naming Upstreams it already
            // names: its references then stay as they are (only its problems are new),
            // instead of being forgotten and recorded again one by one.
            let names_as_before = old
                .as_ref()
                .is_some_and(|old| old.translation.names_the_same_as(&translation));
            if names_as_before {
                if !translation.problems.is_empty() {
                    served.host_problems.insert(place.clone(), translation.problems.clone());
                }
            } else {
                if let Some(old) = &old {
                    forget_refs(served, &place, (listener, name), &old.translation, &mut touched);
                }
                add_refs(served, &place, Some((listener, name)), &translation, &mut touched);
                note_digests(served, &translation, upstreams, true);
            }
            drop(old);
            let entry = std::sync::OnceLock::new();
            match HostEntry::translated(listener, Arc::clone(&translation) as Arc<_>) {
                Ok(made) => {
                    let made = Arc::new(made);
                    let _ = entry.set(Arc::clone(&made));
                    snapshot.set_host(listener, name.clone(), Some(made));
                }
                Err(_) => decline = true,
            }
            hosts.insert(
                name.clone(),
                CachedVirtualHost {
                    input: CachedInput::Part(Arc::clone(part_arc)),
                    translation,
                    entry,
                },
            );
        }
        // The client certificate is looked up only when TLS clusters appear.
        if decline || had_tls == served.tls_refs.is_empty() {
            *served_slot = None;
            return None;
        }
        let mut clusters_changed = false;
        // The clusters changed, by name (the name of their cluster and endpoints).
        let mut patch: Vec<String> = Vec::new();
        // Whether a patched cluster now serves another Upstream, or starts or stops serving
        // one: only then is the set of Upstream keys made again (an O(clusters) walk).
        let mut keys_moved = false;
        for name in touched {
            let winner = served.refs.get(&name).and_then(|r| r.values().next_back()).cloned();
            let Some(upstream_key) = winner else {
                if let Some(gone) = served.clusters.remove(&name) {
                    clusters_changed = true;
                    keys_moved |= gone.named.is_some();
                    patch.push(name);
                }
                continue;
            };
            let tls = served
                .tls_refs
                .get(&name)
                .and_then(|r| r.values().next_back())
                .map(|tls| ClusterTls {
                    tls: tls.clone(),
                    client_certificate: served.client_certificate.clone(),
                });
            let upstream = upstreams.get(&upstream_key);
            let same =
                served.clusters.get(&name).is_some_and(|c| {
                    c.key == upstream_key && c.tls == tls && c.cluster.is_some() == upstream.is_some()
                }) && !forced.contains(&upstream_key);
            if same {
                continue;
            }
            clusters_changed = true;
            let cluster = upstream.map(|upstream| match cached_clusters.get(&name) {
                Some(cached) if cached.upstream_key == upstream_key && cached.tls == tls => {
                    reuse.clusters_reused += 1;
                    Arc::clone(&cached.cluster)
                }
                _ => {
                    reuse.clusters_made += 1;
                    let cluster = Arc::new(UpstreamCluster::compacted(&name, upstream, tls.as_ref()));
                    cached_clusters.insert(
                        name.clone(),
                        CachedCluster {
                            upstream_key: upstream_key.clone(),
                            tls: tls.clone(),
                            cluster: Arc::clone(&cluster),
                        },
                    );
                    cluster
                }
            });
            patch.push(name.clone());
            let named = cluster
                .is_some()
                .then(|| served_upstream_key(upstreams, &upstream_key))
                .flatten();
            let before = served.clusters.insert(
                name,
                ServedCluster {
                    key: upstream_key,
                    tls,
                    cluster,
                    named: named.clone(),
                },
            );
            keys_moved |= before.and_then(|c| c.named) != named;
        }
        // Patched where they changed, unless a name is one of the controller's own
        // clusters' or not the name its resources are served under.
        let patchable = clusters_changed
            && patch.iter().all(|name| {
                !served.own_clusters.contains_key(name)
                    && served
                        .clusters
                        .get(name)
                        .and_then(|c| c.cluster.as_ref())
                        .is_none_or(|c| c.name == *name && c.endpoints_name.as_ref().is_none_or(|e| e == name))
            });
        if patchable && snapshot.has(CLUSTER) && snapshot.has(ENDPOINT) {
            let (mut cluster_changes, mut endpoint_changes) = (Vec::new(), Vec::new());
            for name in &patch {
                let cluster = served.clusters.get(name).and_then(|c| c.cluster.as_ref());
                let (packed, packed_endpoints) = match cluster {
                    Some(cluster) => {
                        let (packed, packed_endpoints) = cluster.packed();
                        (Some(packed.clone()), packed_endpoints.clone())
                    }
                    None => (None, None),
                };
                cluster_changes.push((name.clone(), packed));
                endpoint_changes.push((name.clone(), packed_endpoints));
            }
            let patched = |snapshot: &Snapshot, type_url, changes| {
                snapshot
                    .resources(type_url)
                    .map(|types| Arc::new(types.patched(changes)))
            };
            let clusters = patched(&snapshot, CLUSTER, cluster_changes);
            let endpoints = patched(&snapshot, ENDPOINT, endpoint_changes);
            snapshot.set_type(CLUSTER, clusters);
            snapshot.set_type(ENDPOINT, endpoints);
            if keys_moved {
                served.upstream_keys = Arc::new(served.named_upstreams());
            }
            *served_keys = Some(Arc::clone(&served.upstream_keys));
        } else if clusters_changed {
            let mut clusters = BTreeMap::new();
            let mut endpoints = BTreeMap::new();
            for served_cluster in served.clusters.values() {
                let Some(cluster) = &served_cluster.cluster else {
                    continue;
                };
                let (packed, packed_endpoints) = cluster.packed();
                clusters.insert(cluster.name.clone(), packed.clone());
                if let (Some(endpoints_name), Some(packed_endpoints)) = (&cluster.endpoints_name, packed_endpoints) {
                    endpoints.insert(endpoints_name.clone(), packed_endpoints.clone());
                }
            }
            clusters.extend(served.own_clusters.clone());
            snapshot.set_type(CLUSTER, Some(Arc::new(TypeResources::new(clusters))));
            snapshot.set_type(ENDPOINT, Some(Arc::new(TypeResources::new(endpoints))));
            served.upstream_keys = Arc::new(served.named_upstreams());
            *served_keys = Some(Arc::clone(&served.upstream_keys));
        }
        snapshot.finish();
        let mut problems = Vec::new();
        for index in 0..served.listener_count {
            problems.extend(served.listener_problems.get(&index).into_iter().flatten().cloned());
            let next = (index + 1, String::new());
            for (_, found) in served.host_problems.range((index, String::new())..next) {
                problems.extend(found.iter().cloned());
            }
        }
        problems.extend(served.tail_problems.iter().cloned());
        served.snapshot = snapshot.clone();
        self.last = reuse;
        Some(SnapshotTranslation {
            snapshot,
            upstream_keys: Arc::clone(&served.upstream_keys),
            problems,
        })
    }

    /// The Proxies whose last translation served named one of the Upstreams `keys` (by
    /// [`EnvoyResources::upstream_keys`]), or none at all.
    pub fn proxies_naming(&self, keys: &BTreeSet<String>) -> BTreeSet<String> {
        self.proxies
            .iter()
            .filter(|(_, cache)| {
                cache
                    .upstream_keys
                    .as_ref()
                    .is_some_and(|named| named.is_empty() || named.iter().any(|k| keys.contains(k)))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Whether the Proxy under `key` was translated into a snapshot.
    pub fn translated(&self, key: &str) -> bool {
        self.proxies.get(key).is_some_and(|cache| cache.upstream_keys.is_some())
    }

    /// The Proxy's parts, from its cache where they hold; the cache then holds these.
    fn assemble(
        &mut self,
        key: &str,
        proxy: &pb::Proxy,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> Assembled {
        let mut previous = self.proxies.remove(key).unwrap_or_default();
        if previous.wasm_modules.as_ref() != Some(&settings.wasm) {
            for hosts in previous.virtual_hosts.values_mut() {
                hosts.retain(|_, cached| !cached.translation.uses_wasm_modules);
            }
        }
        let mut parts = CachingParts {
            previous,
            current: ProxyCache {
                wasm_modules: Some(settings.wasm.clone()),
                ..Default::default()
            },
            reuse: Reuse::default(),
        };
        let assembled = assemble(proxy, upstreams, settings, &mut parts);
        self.proxies.insert(key.to_string(), parts.current);
        self.last = parts.reuse;
        assembled
    }

    /// The Upstreams under `keys` changed (added, edited or removed): every cached part made
    /// from or waiting for one of them is dropped.
    pub fn upstreams_changed(&mut self, keys: &BTreeSet<String>) {
        if keys.is_empty() {
            return;
        }
        for cache in self.proxies.values_mut() {
            cache.drop_naming(keys);
        }
    }

    /// The Upstreams under `changed` changed (added, edited or removed; `upstreams` holds
    /// them as they are now): each Proxy translated that they concern is translated again
    /// where they matter: the virtual hosts whose translation reads them (whether each is
    /// found, and its gRPC methods: [`routing_digest`]) and their clusters (and endpoints),
    /// from its last snapshot. An endpoints-only change translates no virtual host.
    /// `head` gives a Proxy's head as the Proxy store holds it, `virtual_host` its virtual
    /// host parts (Proxy key, listener name, virtual host name). Proxies it cannot do so
    /// (see [`Self::translate_changed`]) are in [`UpstreamChanges::whole`], their cached
    /// parts made from the Upstreams dropped: translate them whole.
    pub fn translate_upstream_changes(
        &mut self,
        changed: &BTreeSet<String>,
        head: &dyn Fn(&str) -> Option<Arc<pb::Proxy>>,
        virtual_host: &PartLookup<'_>,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> UpstreamChanges {
        let mut out = UpstreamChanges::default();
        if changed.is_empty() {
            return out;
        }
        let keys: Vec<String> = self.proxies.keys().cloned().collect();
        for key in keys {
            let Some(cache) = self.proxies.get_mut(&key) else {
                continue;
            };
            if cache.served.is_some() {
                // Made from them: made again when a virtual host names them next.
                cache
                    .clusters
                    .retain(|_, cached| !changed.contains(&cached.upstream_key));
            }
            let Some(served) = cache.served.as_mut() else {
                out.unserved = true;
                if cache.drop_naming(changed) {
                    out.whole.insert(key);
                }
                continue;
            };
            // The virtual hosts whose translation the change alters.
            let mut hosts = BTreeSet::new();
            let mut unplaced = false;
            for upstream_key in changed {
                let named = served.by_upstream.get(upstream_key);
                let unplaced_one = served.unplaced_upstreams.contains(upstream_key);
                let before = served.digests.get(upstream_key).copied();
                if named.is_none() && !unplaced_one && before.is_none() {
                    continue;
                }
                let now = upstreams.get(upstream_key).map(routing_digest);
                match now {
                    Some(digest) => served.digests.insert(upstream_key.clone(), digest),
                    None => served.digests.remove(upstream_key),
                };
                if now != before && (named.is_some() || unplaced_one) {
                    unplaced |= unplaced_one;
                    hosts.extend(named.into_iter().flatten().cloned());
                }
            }
            let names_cluster = served.clusters.values().any(|c| changed.contains(&c.key));
            if !unplaced && hosts.is_empty() && !names_cluster {
                continue;
            }
            let translated = match (unplaced, head(&key)) {
                (false, Some(head)) => {
                    let lookup = |listener: &str, name: &str| virtual_host(&key, listener, name);
                    self.changed_parts(&key, &head, &hosts, &lookup, upstreams, settings, changed)
                }
                _ => None,
            };
            match translated {
                Some(translated) => {
                    out.translated.insert(key, translated);
                }
                None => {
                    if let Some(cache) = self.proxies.get_mut(&key) {
                        cache.drop_naming(changed);
                        cache.served = None;
                    }
                    out.whole.insert(key);
                }
            }
        }
        out
    }

    /// Whether the Proxy under `key` can take changes by parts (its last translation was
    /// served whole or by parts, and kept).
    pub fn serves_by_parts(&self, key: &str) -> bool {
        self.proxies.get(key).is_some_and(|cache| cache.served.is_some())
    }

    /// The Proxy under `key` is gone: its cache too.
    pub fn forget(&mut self, key: &str) {
        self.proxies.remove(key);
    }

    /// What the last translation reused.
    pub fn last_reuse(&self) -> Reuse {
        self.last
    }

    /// Virtual hosts cached for the Proxy under `key`.
    pub fn cached_virtual_hosts(&self, key: &str) -> usize {
        self.proxies
            .get(key)
            .map_or(0, |cache| cache.virtual_hosts.values().map(BTreeMap::len).sum())
    }
}

/// A Proxy's virtual host part by Proxy key, listener name and virtual host name.
pub type PartLookup<'a> = dyn Fn(&str, &str, &str) -> Option<HostPart> + 'a;

/// What [`IncrementalTranslator::translate_upstream_changes`] did.
#[derive(Default)]
pub struct UpstreamChanges {
    /// Proxy key → its translation, made by parts.
    pub translated: BTreeMap<String, SnapshotTranslation>,
    /// Proxies to translate whole.
    pub whole: BTreeSet<String>,
    /// Whether some Proxy translated has no state to take changes by parts (then Proxies
    /// waiting for an Upstream are found by their routes: the caller's part).
    pub unserved: bool,
}

impl ProxyCache {
    /// Drops every cached part made from or waiting for one of the Upstreams `keys`, and
    /// the state to take changes by parts if what was served named them: whether the Proxy
    /// is concerned (translate it whole).
    fn drop_naming(&mut self, keys: &BTreeSet<String>) -> bool {
        let before: usize = self.virtual_hosts.values().map(BTreeMap::len).sum::<usize>() + self.clusters.len();
        for hosts in self.virtual_hosts.values_mut() {
            hosts.retain(|_, cached| !cached.names_any_of(keys));
        }
        self.clusters.retain(|_, cached| !keys.contains(&cached.upstream_key));
        let after: usize = self.virtual_hosts.values().map(BTreeMap::len).sum::<usize>() + self.clusters.len();
        let served_names_one = self
            .served
            .as_ref()
            .is_some_and(|served| served.clusters.values().any(|c| keys.contains(&c.key)));
        if before != after || served_names_one {
            // What was served named them, or waited for them: assembled whole next time.
            self.served = None;
        }
        let named = self
            .upstream_keys
            .as_ref()
            .is_some_and(|named| named.is_empty() || named.iter().any(|k| keys.contains(k)));
        before != after || served_names_one || named
    }
}

/// What of an Upstream a virtual host's translation reads: that it exists (`Some`), and the
/// gRPC methods and descriptors of the JSON to gRPC transcoder ([`super::grpc_json`]).
fn routing_digest(upstream: &pb::Upstream) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update((upstream.grpc_descriptors.len() as u64).to_le_bytes());
    hash.update(&upstream.grpc_descriptors);
    for function in &upstream.functions {
        if let Some(pb::function::Spec::Grpc(grpc)) = &function.spec {
            hash.update((grpc.service.len() as u64).to_le_bytes());
            hash.update(grpc.service.as_bytes());
        }
    }
    hash.finalize().into()
}

/// Records the digests of the Upstreams `translation` found (as `upstreams` has them now:
/// all of them with `again`, else those `served` has none of).
fn note_digests(
    served: &mut Served,
    translation: &VirtualHostTranslation,
    upstreams: &BTreeMap<String, pb::Upstream>,
    again: bool,
) {
    for key in &translation.found_keys {
        if (again || !served.digests.contains_key(key))
            && let Some(upstream) = upstreams.get(key)
        {
            served.digests.insert(key.clone(), routing_digest(upstream));
        }
    }
}

/// The virtual hosts of HTTP listener `index` of `proxy`.
fn virtual_hosts(proxy: &pb::Proxy, index: usize) -> &[pb::VirtualHost] {
    match proxy.listeners.get(index).and_then(|l| l.listener_type.as_ref()) {
        Some(pb::listener::ListenerType::HttpListener(http)) => &http.virtual_hosts,
        None => &[],
    }
}

/// A listener's route table, its virtual hosts by name (`vhosts`, the Proxy's, in name
/// order), their entries taken from the cache (`cached`, the listener's) where it made
/// them; `None` if a virtual host's bytes cannot be read (never: they are ours).
fn by_name_table(
    table: &RouteTable,
    vhosts: &[pb::VirtualHost],
    cached: Option<&BTreeMap<String, CachedVirtualHost>>,
) -> Option<ServedTable> {
    let mut entries = Vec::with_capacity(vhosts.len());
    for (translation, vhost) in table.virtual_hosts.iter().zip(vhosts) {
        let make = || HostEntry::translated(&table.name, Arc::clone(translation) as Arc<_>).map(Arc::new);
        let entry = match cached
            .and_then(|hosts| hosts.get(&vhost.name))
            .filter(|c| Arc::ptr_eq(&c.translation, translation))
        {
            Some(hit) => match hit.entry.get() {
                Some(entry) => Arc::clone(entry),
                None => {
                    let entry = make().ok()?;
                    Arc::clone(hit.entry.get_or_init(|| entry))
                }
            },
            None => make().ok()?,
        };
        entries.push((vhost.name.clone(), entry));
    }
    Some(ServedTable::by_name(&super::route_table_head(&table.name), entries))
}

/// The place of virtual host `j` (named `name`) of listener `index`.
fn place(by_parts: &BTreeMap<String, usize>, listener: &str, index: usize, j: usize, name: &str) -> Place {
    if by_parts.get(listener) == Some(&index) {
        (index, name.to_string())
    } else {
        (index, format!("{j:010}"))
    }
}

/// `proxy` without its virtual hosts (a copy of all of it first: for callers without the
/// Proxy store's head).
fn head_of(proxy: &pb::Proxy) -> pb::Proxy {
    let mut head = proxy.clone();
    for listener in &mut head.listeners {
        if let Some(pb::listener::ListenerType::HttpListener(http)) = listener.listener_type.as_mut() {
            http.virtual_hosts.clear();
        }
    }
    head
}

/// What [`IncrementalTranslator::translate_changed`] needs of a whole translation (its
/// snapshot and Upstream keys set by the caller).
fn served_state(
    proxy: &pb::Proxy,
    upstreams: &BTreeMap<String, pb::Upstream>,
    head: Arc<pb::Proxy>,
    settings: &Settings,
    assembled: &Assembled,
    by_parts: BTreeMap<String, usize>,
    own_clusters: BTreeMap<String, Any>,
) -> Served {
    let mut served = Served {
        settings: settings.clone(),
        head,
        by_parts,
        listener_count: proxy.listeners.len(),
        listener_problems: BTreeMap::new(),
        host_problems: BTreeMap::new(),
        tail_problems: assembled.tail_problems.clone(),
        refs: BTreeMap::new(),
        tls_refs: BTreeMap::new(),
        client_certificate: assembled.client_certificate.clone(),
        by_upstream: BTreeMap::new(),
        unplaced_upstreams: BTreeSet::new(),
        digests: BTreeMap::new(),
        clusters: assembled
            .referenced
            .iter()
            .map(
                |Referenced {
                     name,
                     key,
                     tls,
                     cluster,
                 }| {
                    let served = ServedCluster {
                        key: key.clone(),
                        tls: tls.clone(),
                        cluster: cluster.clone(),
                        named: cluster.is_some().then(|| served_upstream_key(upstreams, key)).flatten(),
                    };
                    (name.clone(), served)
                },
            )
            .collect(),
        own_clusters,
        upstream_keys: Arc::default(),
        snapshot: Snapshot::default(),
    };
    for (index, problem) in &assembled.listener_problems {
        served
            .listener_problems
            .entry(*index)
            .or_default()
            .push(problem.clone());
    }
    let mut untouched = BTreeSet::new();
    for table in &assembled.route_tables {
        let vhosts = virtual_hosts(proxy, table.listener);
        for (j, (translation, vhost)) in table.virtual_hosts.iter().zip(vhosts).enumerate() {
            let place = place(&served.by_parts, &table.name, table.listener, j, &vhost.name);
            let at = (served.by_parts.get(&table.name) == Some(&table.listener))
                .then_some((table.name.as_str(), vhost.name.as_str()));
            add_refs(&mut served, &place, at, translation, &mut untouched);
            note_digests(&mut served, translation, upstreams, false);
        }
    }
    served
}

/// Records what the virtual host at `place` names (clusters, TLS, problems); the clusters
/// go into `touched`.
fn add_refs(
    served: &mut Served,
    place: &Place,
    at: Option<(&str, &str)>,
    translation: &VirtualHostTranslation,
    touched: &mut BTreeSet<String>,
) {
    for key in translation.found_keys.iter().chain(&translation.missing_upstreams) {
        match at {
            Some((listener, name)) => {
                served
                    .by_upstream
                    .entry(key.clone())
                    .or_default()
                    .insert((listener.to_string(), name.to_string()));
            }
            None => {
                served.unplaced_upstreams.insert(key.clone());
            }
        }
    }
    for (cluster, key) in &translation.found_upstreams {
        served
            .refs
            .entry(cluster.clone())
            .or_default()
            .insert(place.clone(), key.clone());
        touched.insert(cluster.clone());
    }
    for (cluster, tls) in &translation.upstream_tls {
        served
            .tls_refs
            .entry(cluster.clone())
            .or_default()
            .insert(place.clone(), tls.clone());
        touched.insert(cluster.clone());
    }
    if !translation.problems.is_empty() {
        served.host_problems.insert(place.clone(), translation.problems.clone());
    }
}

/// Forgets what the virtual host at `place` named; the clusters go into `touched`.
fn forget_refs(
    served: &mut Served,
    place: &Place,
    at: (&str, &str),
    translation: &VirtualHostTranslation,
    touched: &mut BTreeSet<String>,
) {
    for key in translation.found_keys.iter().chain(&translation.missing_upstreams) {
        if let Some(hosts) = served.by_upstream.get_mut(key) {
            hosts.remove(&(at.0.to_string(), at.1.to_string()));
            if hosts.is_empty() {
                served.by_upstream.remove(key);
            }
        }
    }
    for cluster in translation
        .found_upstreams
        .keys()
        .chain(translation.upstream_tls.keys())
    {
        if let Some(places) = served.refs.get_mut(cluster) {
            places.remove(place);
            if places.is_empty() {
                served.refs.remove(cluster);
            }
        }
        if let Some(places) = served.tls_refs.get_mut(cluster) {
            places.remove(place);
            if places.is_empty() {
                served.tls_refs.remove(cluster);
            }
        }
        touched.insert(cluster.clone());
    }
    served.host_problems.remove(place);
}

/// A listener's route table packed for the snapshot, by name.
fn pack_route_table(table: &RouteTable) -> (String, Any) {
    let packed = if table.wasm_used.is_empty() {
        let hosts: Vec<&[u8]> = table.virtual_hosts.iter().map(|host| host.canonical_bytes()).collect();
        canonical::pack_route_table(&super::route_table_head(&table.name), &hosts)
    } else {
        // The listener's WASM filters change its virtual hosts (a switch per route, a
        // catch-all route each): packed from the table.
        canonical::pack_route_configuration(&table.clone().into_route_configuration())
    };
    (table.name.clone(), packed)
}

/// The parts of one translation: taken from the previous translation's cache when they
/// hold, else made; either way kept for the next.
struct CachingParts {
    previous: ProxyCache,
    current: ProxyCache,
    reuse: Reuse,
}

impl Parts for CachingParts {
    fn virtual_host(&mut self, vhost: &pb::VirtualHost, inputs: VirtualHostInputs<'_>) -> Arc<VirtualHostTranslation> {
        let previous = self
            .previous
            .virtual_hosts
            .get_mut(inputs.listener)
            .and_then(|hosts| hosts.remove_entry(&vhost.name));
        let (name, cached) = match previous {
            Some((name, cached))
                if cached.input.is(vhost) && cached.translation.holds_for(inputs.upstreams, inputs.earlier_wasm) =>
            {
                self.reuse.virtual_hosts_reused += 1;
                (name, cached)
            }
            previous => {
                self.reuse.virtual_hosts_translated += 1;
                // The routes that did not change are taken from its last translation (the
                // Upstreams changed since have dropped it: `upstreams_changed`).
                let previous = previous.as_ref().and_then(|(_, cached)| cached.previous(None));
                let translation = routes::compact_virtual_host(vhost, inputs, previous, &BTreeSet::new());
                let translation = Arc::new(translation);
                let cached = CachedVirtualHost {
                    input: CachedInput::Own(vhost.clone()),
                    translation,
                    entry: std::sync::OnceLock::new(),
                };
                (vhost.name.clone(), cached)
            }
        };
        let translation = Arc::clone(&cached.translation);
        let hosts = match self.current.virtual_hosts.get_mut(inputs.listener) {
            Some(hosts) => hosts,
            None => self
                .current
                .virtual_hosts
                .entry(inputs.listener.to_string())
                .or_default(),
        };
        hosts.insert(name, cached);
        translation
    }

    fn cluster(
        &mut self,
        name: &str,
        key: &str,
        upstream: &pb::Upstream,
        tls: Option<&ClusterTls>,
    ) -> Arc<UpstreamCluster> {
        let cached = match self.previous.clusters.remove(name) {
            // The name covers the TLS setting, not the Proxy's client certificate.
            Some(cached) if cached.upstream_key == key && cached.tls.as_ref() == tls => {
                self.reuse.clusters_reused += 1;
                cached
            }
            _ => {
                self.reuse.clusters_made += 1;
                CachedCluster {
                    upstream_key: key.to_string(),
                    tls: tls.cloned(),
                    cluster: Arc::new(UpstreamCluster::compacted(name, upstream, tls)),
                }
            }
        };
        let cluster = Arc::clone(&cached.cluster);
        self.current.clusters.insert(name.to_string(), cached);
        cluster
    }
}

#[cfg(test)]
mod tests;

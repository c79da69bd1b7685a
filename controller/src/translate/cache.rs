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
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::{pb::google::protobuf::Any, util::pack_any};
use kgw_proto::v1 as pb;

use super::upstream_tls::ClusterTls;
use super::{
    EnvoyResources, Problem, Settings, VirtualHostInputs, VirtualHostTranslation,
    assemble::{Assembled, Parts, RouteTable, UpstreamCluster, assemble},
    routes,
    wasm::WasmModules,
};
use crate::xds::{Snapshot, canonical, snapshot::PackedResources};

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
    pub upstream_keys: BTreeSet<String>,
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
}

struct CachedVirtualHost {
    /// The virtual host it was translated from.
    input: pb::VirtualHost,
    translation: Arc<VirtualHostTranslation>,
}

impl CachedVirtualHost {
    fn names_any_of(&self, upstream_keys: &BTreeSet<String>) -> bool {
        let translation = &self.translation;
        translation
            .found_upstreams
            .values()
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
    /// [`Snapshot::new`] gives for [`Self::translate`]'s resources, without making the route
    /// tables (a route table costs the bytes of its virtual hosts, copied).
    pub fn translate_to_snapshot(
        &mut self,
        key: &str,
        proxy: &pb::Proxy,
        upstreams: &BTreeMap<String, pb::Upstream>,
        settings: &Settings,
    ) -> SnapshotTranslation {
        let assembled = self.assemble(key, proxy, upstreams, settings);
        // Each type as `Snapshot::new` takes it: sorted by name, the last of a name kept.
        let mut route_tables: Vec<(String, Any)> = assembled.route_tables.iter().map(pack_route_table).collect();
        route_tables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut packed = PackedResources {
            routes: route_tables.into_iter().collect(),
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
            packed.clusters.insert(upstream.cluster.name.clone(), cluster.clone());
            if let (Some(assignment), Some(packed_assignment)) = (&upstream.endpoints, endpoints) {
                packed
                    .endpoints
                    .insert(assignment.cluster_name.clone(), packed_assignment.clone());
            }
        }
        // The controller's own clusters come after the Upstreams' (as in the resources).
        for cluster in &assembled.resources.clusters {
            packed.clusters.insert(cluster.name.clone(), pack_any(cluster.clone()));
        }
        SnapshotTranslation {
            snapshot: Snapshot::from_packed(packed),
            upstream_keys: assembled.resources.upstream_keys,
            problems: assembled.problems,
        }
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
            for hosts in cache.virtual_hosts.values_mut() {
                hosts.retain(|_, cached| !cached.names_any_of(keys));
            }
            cache.clusters.retain(|_, cached| !keys.contains(&cached.upstream_key));
        }
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
                if cached.input == *vhost && cached.translation.holds_for(inputs.upstreams, inputs.earlier_wasm) =>
            {
                self.reuse.virtual_hosts_reused += 1;
                (name, cached)
            }
            _ => {
                self.reuse.virtual_hosts_translated += 1;
                let mut translation = routes::virtual_host(vhost, inputs);
                translation.compact();
                let translation = Arc::new(translation);
                let cached = CachedVirtualHost {
                    input: vhost.clone(),
                    translation,
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
                    cluster: Arc::new(UpstreamCluster::new(name, upstream, tls)),
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

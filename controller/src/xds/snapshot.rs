//! A versioned set of Envoy resources for one role. Each type has its own version, a hash
//! of its content, so a change to endpoints only changes the EDS version. Route tables are
//! held per virtual host (`tables`), their versions summed from their hosts' (see there),
//! so that a snapshot made from the previous one with one virtual host changed costs that
//! virtual host, not the role's route tables.
use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use envoy_types::{pb::google::protobuf::Any, util::pack_any};
use kgw_common::trace::TraceHeaders;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{
    chunked::ChunkMap,
    tables::{HostEntry, ServedTable},
    vhds::{VhdsResources, VirtualHosts},
};
use crate::resources::EnvoyResources;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// VHDS (delta only): one virtual host of a route table (see `vhds`).
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// The order types are pushed in: clusters before the endpoints and routes that name them,
/// certificates before the listeners that name them.
pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE];

/// Resources of one type.
///
/// The type's version is the (wrapping) sum of its items' digests, each a hash of the
/// item's name and bytes: a change to one item moves the sum by what that item changed, so
/// [`Self::patched`] costs the changed items, not the type's size (thousands of clusters).
/// The items sit in a [`ChunkMap`] for the same reason: a patched copy shares the chunks
/// that did not change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeResources {
    /// The version of the type (state of the world, REST): the sum of the item digests.
    pub version: String,
    pub items: ChunkMap<Any>,
    /// Per item, its digest in hex: the version of that one resource (delta xDS sends
    /// only the resources whose version changed).
    pub item_versions: ChunkMap<String>,
    /// The items' encoded size.
    pub bytes: usize,
    /// The sum the version shows.
    sum: u64,
}

impl TypeResources {
    /// The resources `items` (name → resource), with their versions.
    pub fn new(items: BTreeMap<String, Any>) -> Self {
        let mut sum = 0u64;
        let mut bytes = 0;
        let mut item_versions = Vec::with_capacity(items.len());
        for (name, any) in &items {
            let digest = item_digest(name, any);
            sum = sum.wrapping_add(digest);
            bytes += any.encoded_len();
            item_versions.push((name.clone(), hex::encode(digest.to_be_bytes())));
        }
        Self {
            version: hex::encode(sum.to_be_bytes()),
            items: items.into_iter().collect(),
            item_versions: item_versions.into_iter().collect(),
            bytes,
            sum,
        }
    }

    /// These resources with `changes` (name → the resource, `None`: gone): what
    /// [`Self::new`] gives for the whole set, at the cost of the changed items.
    pub(crate) fn patched(&self, changes: impl IntoIterator<Item = (String, Option<Any>)>) -> Self {
        let mut next = self.clone();
        for (name, item) in changes {
            let old = match item {
                Some(any) => {
                    let digest = item_digest(&name, &any);
                    next.sum = next.sum.wrapping_add(digest);
                    next.bytes += any.encoded_len();
                    next.item_versions
                        .insert(name.clone(), hex::encode(digest.to_be_bytes()));
                    next.items.insert(name.clone(), any)
                }
                None => {
                    next.item_versions.remove(&name);
                    next.items.remove(&name)
                }
            };
            if let Some(old) = old {
                next.sum = next.sum.wrapping_sub(item_digest(&name, &old));
                next.bytes -= old.encoded_len();
            }
        }
        next.version = hex::encode(next.sum.to_be_bytes());
        next
    }
}

/// The digest of one resource: a hash of its name, type and encoded bytes (which are
/// deterministic: see `canonical` for route tables).
fn item_digest(name: &str, any: &Any) -> u64 {
    let mut hash = Sha256::new();
    hash.update((name.len() as u64).to_le_bytes());
    hash.update(name.as_bytes());
    hash.update((any.type_url.len() as u64).to_le_bytes());
    hash.update(any.type_url.as_bytes());
    hash.update(&any.value);
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A role's resources, and the trace of the change that made them (which the pushes to
/// Envoy continue; it takes no part in comparisons: the same resources are the same
/// snapshot whatever change made them).
///
/// Route tables are held per virtual host ([`ServedTable`]): a snapshot made from the
/// previous one with one virtual host changed ([`Snapshot::set_host`]) shares everything
/// else with it, its VHDS index included; the state-of-the-world tables are packed when a
/// state-of-the-world (or REST) reader first asks ([`Snapshot::resources`]).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every type but the route tables.
    types: BTreeMap<&'static str, Arc<TypeResources>>,
    /// Route tables by name.
    tables: BTreeMap<String, Arc<ServedTable>>,
    /// The route tables' version (state of the world): a hash of each table's version.
    routes_version: String,
    /// The state-of-the-world route tables, packed when first read.
    routes: OnceLock<TypeResources>,
    /// The route tables as delta Envoys get them (VHDS).
    vhds: VhdsResources,
    pub trace: Option<TraceHeaders>,
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Self {
            types: self.types.clone(),
            tables: self.tables.clone(),
            routes_version: self.routes_version.clone(),
            routes: self.routes.clone(),
            vhds: self.vhds.clone(),
            trace: self.trace.clone(),
        }
    }
}

impl PartialEq for Snapshot {
    /// Every resource the same (the route tables packed to compare them): for tests; the
    /// cache compares versions ([`Snapshot::same_versions`]).
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types
            && self.resources(ROUTE) == other.resources(ROUTE)
            && self.vhds.route_tables == other.vhds.route_tables
            && self.vhds.virtual_hosts.versions == other.vhds.virtual_hosts.versions
    }
}

/// A snapshot's resources packed, per type: name → resource.
#[derive(Clone, Debug, Default)]
pub struct PackedResources {
    pub clusters: BTreeMap<String, Any>,
    pub endpoints: BTreeMap<String, Any>,
    pub listeners: BTreeMap<String, Any>,
    /// Route tables in their deterministic bytes (`canonical`).
    pub routes: BTreeMap<String, Any>,
    /// Certificates of HTTPS listeners (SDS).
    pub secrets: BTreeMap<String, Any>,
}

impl Snapshot {
    pub fn new(resources: &EnvoyResources) -> Self {
        fn by_name<T: prost::Name + prost::Message + Clone>(
            items: &[T],
            name: impl Fn(&T) -> &str,
        ) -> BTreeMap<String, Any> {
            items
                .iter()
                .map(|item| (name(item).to_string(), pack_any(item.clone())))
                .collect()
        }
        Self::from_packed(PackedResources {
            clusters: by_name(&resources.clusters, |c| &c.name),
            endpoints: by_name(&resources.endpoints, |e| &e.cluster_name),
            listeners: by_name(&resources.listeners, |l| &l.name),
            routes: resources
                .routes
                .iter()
                .map(|r| (r.name.clone(), super::canonical::pack_route_configuration(r)))
                .collect(),
            secrets: by_name(&resources.secrets, |s| &s.name),
        })
    }

    /// The snapshot of resources packed already. A route table whose bytes cannot be read
    /// (never ours) is left out, with an error logged.
    pub fn from_packed(packed: PackedResources) -> Self {
        let tables = packed
            .routes
            .iter()
            .filter_map(|(name, any)| match ServedTable::from_packed(name, any) {
                Ok(table) => Some(table),
                Err(error) => {
                    tracing::error!(table = %name, %error, "route table not read; left out");
                    None
                }
            })
            .collect();
        Self::from_parts(
            PackedResources {
                routes: BTreeMap::new(),
                ..packed
            },
            tables,
        )
    }

    /// The snapshot of resources packed already but the route tables, given as tables.
    pub(crate) fn from_parts(packed: PackedResources, tables: Vec<ServedTable>) -> Self {
        let mut types = BTreeMap::from([
            (CLUSTER, Arc::new(TypeResources::new(packed.clusters))),
            (ENDPOINT, Arc::new(TypeResources::new(packed.endpoints))),
            (LISTENER, Arc::new(TypeResources::new(packed.listeners))),
        ]);
        // Only with HTTPS listeners: without, the type is served empty as before ("empty").
        if !packed.secrets.is_empty() {
            types.insert(SECRET, Arc::new(TypeResources::new(packed.secrets)));
        }
        let mut snapshot = Self {
            types,
            ..Default::default()
        };
        snapshot.set_tables(tables);
        snapshot
    }

    /// Replaces every route table (and the VHDS index, made again).
    pub(crate) fn set_tables(&mut self, tables: Vec<ServedTable>) {
        self.tables = tables
            .into_iter()
            .map(|table| (table.name.clone(), Arc::new(table)))
            .collect();
        self.vhds.virtual_hosts = VirtualHosts::default();
        for table in self.tables.values() {
            self.vhds.virtual_hosts.add_table(&table.name);
            for host in table.hosts() {
                self.vhds.virtual_hosts.insert(Arc::clone(host));
            }
        }
        self.finish();
    }

    /// Sets (or with `None` removes) a type but the route tables.
    pub(crate) fn set_type(&mut self, type_url: &'static str, resources: Option<Arc<TypeResources>>) {
        match resources {
            Some(resources) => self.types.insert(type_url, resources),
            None => self.types.remove(type_url),
        };
    }

    /// Sets (or with `None` removes) the virtual host under order key `key` of route table
    /// `table` (which must exist); call [`Self::finish`] after the last change.
    pub(crate) fn set_host(&mut self, table: &str, key: String, entry: Option<Arc<HostEntry>>) {
        let Some(served) = self.tables.get_mut(table) else {
            return;
        };
        if let Some(entry) = &entry {
            self.vhds.virtual_hosts.insert(Arc::clone(entry));
        }
        let old = Arc::make_mut(served).set(key, entry.clone());
        if let Some(old) = old
            && entry.as_ref().is_none_or(|new| new.resource != old.resource)
        {
            self.vhds.virtual_hosts.remove(&old.resource);
        }
    }

    /// Settles the versions after changes ([`Self::set_host`], [`Self::set_type`]).
    pub(crate) fn finish(&mut self) {
        let mut hash = Sha256::new();
        let mut heads = BTreeMap::new();
        for (name, table) in &self.tables {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update(table.version().as_bytes());
            heads.insert(name.clone(), table.vhds_head());
        }
        self.routes_version = hex::encode(&hash.finalize()[..8]);
        self.routes = OnceLock::new();
        self.vhds.route_tables = TypeResources::new(heads);
        self.vhds.virtual_hosts.finish();
    }

    /// The resources of `type_url` (route tables in their state-of-the-world form: packed on
    /// the first call).
    pub fn resources(&self, type_url: &str) -> Option<&TypeResources> {
        if type_url == ROUTE {
            return Some(self.routes.get_or_init(|| {
                let items: BTreeMap<String, Any> = self
                    .tables
                    .iter()
                    .map(|(name, table)| (name.clone(), table.packed()))
                    .collect();
                let mut routes = TypeResources::new(items);
                routes.version = self.routes_version.clone();
                routes
            }));
        }
        self.types.get(type_url).map(Arc::as_ref)
    }

    /// Whether the type is served at all.
    pub fn has(&self, type_url: &str) -> bool {
        type_url == ROUTE || self.types.contains_key(type_url)
    }

    /// The route tables as delta Envoys get them: through VHDS.
    pub fn vhds(&self) -> &VhdsResources {
        &self.vhds
    }

    /// The same snapshot, made by the change whose trace is `trace`.
    pub fn traced(self, trace: Option<TraceHeaders>) -> Self {
        Self { trace, ..self }
    }

    pub fn version(&self, type_url: &str) -> Option<&str> {
        if type_url == ROUTE {
            return Some(&self.routes_version);
        }
        self.types.get(type_url).map(|t| t.version.as_str())
    }

    /// Whether `other` serves the same resources: the same versions (hashes of the bytes).
    pub fn same_versions(&self, other: &Self) -> bool {
        self.routes_version == other.routes_version
            && self.vhds.route_tables.version == other.vhds.route_tables.version
            && self.vhds.virtual_hosts.version == other.vhds.virtual_hosts.version
            && self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|((a, x), (b, y))| a == b && (Arc::ptr_eq(x, y) || x.version == y.version))
    }

    /// Total encoded size, for logs and metrics.
    pub fn bytes(&self) -> usize {
        self.types.values().map(|t| t.bytes).sum::<usize>() + self.tables.values().map(|t| t.bytes).sum::<usize>()
    }
}

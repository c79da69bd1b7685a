//! A versioned set of Envoy resources for one role. Each type has its own version, a hash
//! of its content, so a change to endpoints only changes the EDS version.
use std::collections::BTreeMap;

use envoy_types::{pb::google::protobuf::Any, util::pack_any};
use kgw_common::trace::TraceHeaders;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::vhds::VhdsResources;
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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeResources {
    /// A hash of every item: the version of the type (state of the world, REST).
    pub version: String,
    pub items: BTreeMap<String, Any>,
    /// Per item, a hash of its encoded bytes: the version of that one resource (delta xDS
    /// sends only the resources whose version changed).
    pub item_versions: BTreeMap<String, String>,
}

impl TypeResources {
    /// The resources `items` (name → resource), with their versions.
    pub fn new(items: BTreeMap<String, Any>) -> Self {
        let mut hash = Sha256::new();
        for (name, any) in &items {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update((any.value.len() as u64).to_le_bytes());
            hash.update(&any.value);
        }
        let version = hex::encode(&hash.finalize()[..8]);
        let item_versions = items
            .iter()
            .map(|(name, any)| (name.clone(), item_version(any)))
            .collect();
        Self {
            version,
            items,
            item_versions,
        }
    }
}

/// The version of one resource: a hash of its type and encoded bytes (which are
/// deterministic: see `canonical` for route tables).
fn item_version(any: &Any) -> String {
    let mut hash = Sha256::new();
    hash.update((any.type_url.len() as u64).to_le_bytes());
    hash.update(any.type_url.as_bytes());
    hash.update(&any.value);
    hex::encode(&hash.finalize()[..8])
}

/// A role's resources, and the trace of the change that made them (which the pushes to
/// Envoy continue; it takes no part in comparisons: the same resources are the same
/// snapshot whatever change made them).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub types: BTreeMap<&'static str, TypeResources>,
    pub trace: Option<TraceHeaders>,
    /// The route tables split for VHDS, made when a delta stream first asks (an index into
    /// the route tables' bytes, not a copy of them).
    vhds: std::sync::OnceLock<VhdsResources>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types
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

    /// The snapshot of resources packed already: for a translation that keeps its
    /// resources packed (`translate::cache`).
    pub fn from_packed(packed: PackedResources) -> Self {
        let mut types = BTreeMap::from([
            (CLUSTER, TypeResources::new(packed.clusters)),
            (ENDPOINT, TypeResources::new(packed.endpoints)),
            (LISTENER, TypeResources::new(packed.listeners)),
            (ROUTE, TypeResources::new(packed.routes)),
        ]);
        // Only with HTTPS listeners: without, the type is served empty as before ("empty").
        if !packed.secrets.is_empty() {
            types.insert(SECRET, TypeResources::new(packed.secrets));
        }
        Self {
            types,
            trace: None,
            vhds: std::sync::OnceLock::new(),
        }
    }

    /// The route tables as delta Envoys get them: through VHDS.
    pub fn vhds(&self) -> &VhdsResources {
        self.vhds.get_or_init(|| match self.types.get(ROUTE) {
            Some(routes) => VhdsResources::new(routes),
            None => VhdsResources::default(),
        })
    }

    /// The same snapshot, made by the change whose trace is `trace`.
    pub fn traced(self, trace: Option<TraceHeaders>) -> Self {
        Self { trace, ..self }
    }

    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url).map(|t| t.version.as_str())
    }

    /// Total encoded size, for logs and metrics.
    pub fn bytes(&self) -> usize {
        self.types
            .values()
            .flat_map(|t| t.items.values())
            .map(|a| a.encoded_len())
            .sum()
    }
}

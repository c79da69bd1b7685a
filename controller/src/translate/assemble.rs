//! One Proxy's translation put together from its parts: each virtual host's translation
//! and each Upstream's cluster, made afresh ([`FreshParts`], the full translation) or taken
//! from a cache (`cache`), assembled the same way either way.
use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::FilterChain,
            route::v3::RouteConfiguration,
        },
        extensions::transport_sockets::tls::v3::Secret,
    },
    google::protobuf::Any,
};
use kgw_proto::v1 as pb;

use super::{
    EnvoyResources, Problem, Settings, Severity, VirtualHostInputs, VirtualHostTranslation, access_log_cluster_name,
    clusters, listeners, proxy_tls, routes,
    upstream_tls::{self, ClusterTls},
    wasm,
};

/// Where [`assemble`] gets the translation of a virtual host and the cluster of an
/// Upstream: made afresh, or reused from a cache.
pub(crate) trait Parts {
    /// The translation of `vhost` ([`routes::virtual_host`], or an equal one).
    fn virtual_host(&mut self, vhost: &pb::VirtualHost, inputs: VirtualHostInputs<'_>) -> Arc<VirtualHostTranslation>;
    /// The cluster (and endpoints) named `name` of the Upstream under KV key `key`.
    /// `tls`: the cluster is the Upstream's TLS variant.
    fn cluster(
        &mut self,
        name: &str,
        key: &str,
        upstream: &pb::Upstream,
        tls: Option<&ClusterTls>,
    ) -> Arc<UpstreamCluster>;
}

/// An Upstream's Envoy cluster, and its endpoints when they are served over EDS.
#[derive(Debug)]
pub(crate) struct UpstreamCluster {
    /// The cluster's name.
    pub(crate) name: String,
    /// Its endpoints' cluster name (`None`: not served over EDS).
    pub(crate) endpoints_name: Option<String>,
    /// The typed forms; `None` once [`Self::compact`]ed (a cache holds the packed form
    /// alone: a `Cluster` is 3.3 KB before its contents).
    typed: Option<(Box<Cluster>, Option<ClusterLoadAssignment>)>,
    /// Both packed, once asked for ([`Self::packed`]).
    packed: std::sync::OnceLock<(Any, Option<Any>)>,
}

impl UpstreamCluster {
    pub(crate) fn new(name: &str, upstream: &pb::Upstream, tls: Option<&ClusterTls>) -> Self {
        let (mut cluster, endpoints) = clusters::cluster(name, upstream);
        if let Some(tls) = tls {
            cluster.transport_socket = Some(upstream_tls::transport_socket(tls));
        }
        Self {
            name: cluster.name.clone(),
            endpoints_name: endpoints.as_ref().map(|e| e.cluster_name.clone()),
            typed: Some((Box::new(cluster), endpoints)),
            packed: std::sync::OnceLock::new(),
        }
    }

    /// The cluster and its endpoints packed as served (made once).
    pub(crate) fn packed(&self) -> &(Any, Option<Any>) {
        self.packed.get_or_init(|| match &self.typed {
            Some((cluster, endpoints)) => (
                envoy_types::util::pack_any(cluster.as_ref().clone()),
                endpoints.clone().map(envoy_types::util::pack_any),
            ),
            // Compacted only once packed; forgotten (`forget_typed`): empty.
            None => (Any::default(), None),
        })
    }

    /// [`Self::new`], packed and kept in that form alone (for a cache).
    pub(crate) fn compacted(name: &str, upstream: &pb::Upstream, tls: Option<&ClusterTls>) -> Self {
        let mut cluster = Self::new(name, upstream, tls);
        cluster.compact();
        cluster
    }

    /// Drops the typed forms unpacked: for a check that wants the problems alone. What reads
    /// the cluster afterwards gets empty resources.
    pub(crate) fn forget_typed(&mut self) {
        self.typed = None;
    }

    /// Keeps the packed form alone.
    pub(crate) fn compact(&mut self) {
        self.packed();
        self.typed = None;
    }

    /// The typed forms (decoded when compacted).
    pub(crate) fn to_typed(&self) -> (Cluster, Option<ClusterLoadAssignment>) {
        match &self.typed {
            Some((cluster, endpoints)) => (cluster.as_ref().clone(), endpoints.clone()),
            None => {
                let (cluster, endpoints) = self.packed();
                (decode_packed(cluster), endpoints.as_ref().map(decode_packed))
            }
        }
    }

    /// [`Self::to_typed`], without a copy when not compacted.
    pub(crate) fn into_typed(self) -> (Cluster, Option<ClusterLoadAssignment>) {
        match self.typed {
            Some((cluster, endpoints)) => (*cluster, endpoints),
            None => self.to_typed(),
        }
    }
}

/// Bytes this process packed, decoded; a failure would be a bug, and gives an empty
/// resource rather than stopping the controller.
fn decode_packed<T: prost::Message + Default>(any: &Any) -> T {
    T::decode(any.value.as_slice()).unwrap_or_else(|error| {
        tracing::error!(%error, type_url = %any.type_url, "cannot decode a resource this process packed");
        T::default()
    })
}

/// Every part made afresh: the full translation.
pub(super) struct FreshParts;

impl Parts for FreshParts {
    fn virtual_host(&mut self, vhost: &pb::VirtualHost, inputs: VirtualHostInputs<'_>) -> Arc<VirtualHostTranslation> {
        Arc::new(routes::virtual_host(vhost, inputs))
    }

    fn cluster(
        &mut self,
        name: &str,
        _key: &str,
        upstream: &pb::Upstream,
        tls: Option<&ClusterTls>,
    ) -> Arc<UpstreamCluster> {
        Arc::new(UpstreamCluster::new(name, upstream, tls))
    }
}

/// Every part made afresh and its Envoy form dropped at once: for the problems alone
/// ([`super::problems`]).
pub(super) struct ProblemsOnly;

impl Parts for ProblemsOnly {
    fn virtual_host(&mut self, vhost: &pb::VirtualHost, inputs: VirtualHostInputs<'_>) -> Arc<VirtualHostTranslation> {
        let mut translation = routes::virtual_host(vhost, inputs);
        translation.forget_routes();
        Arc::new(translation)
    }

    fn cluster(
        &mut self,
        name: &str,
        _key: &str,
        upstream: &pb::Upstream,
        tls: Option<&ClusterTls>,
    ) -> Arc<UpstreamCluster> {
        let mut cluster = UpstreamCluster::new(name, upstream, tls);
        cluster.forget_typed();
        Arc::new(cluster)
    }
}

/// A Proxy's translation before its route tables are made: every part but those.
pub(crate) struct Assembled {
    /// Every resource but the route tables (`routes` is empty) and the Upstreams' clusters
    /// and endpoints (`clusters` holds the controller's own clusters only, `endpoints` none).
    pub(crate) resources: EnvoyResources,
    /// The clusters of the Upstreams the routes use, by name.
    pub(crate) upstream_clusters: Vec<Arc<UpstreamCluster>>,
    /// One per HTTP listener, in listener order.
    pub(crate) route_tables: Vec<RouteTable>,
    pub(crate) problems: Vec<Problem>,
    /// Of `problems`, those of listeners left out (by listener index), and those after the
    /// listeners' (of the Envoy listeners and the client certificate), for a translation
    /// that puts them together again (`cache`).
    pub(crate) listener_problems: Vec<(usize, Problem)>,
    pub(crate) tail_problems: Vec<Problem>,
    /// The client certificate of TLS clusters, as found.
    pub(crate) client_certificate: Option<String>,
    /// Every cluster the routes name, by name: the Upstream's key, its TLS, and its cluster
    /// (`None`: no such Upstream).
    pub(crate) referenced: Vec<Referenced>,
}

/// A cluster the routes name.
pub(crate) struct Referenced {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) tls: Option<ClusterTls>,
    pub(crate) cluster: Option<Arc<UpstreamCluster>>,
}

impl Assembled {
    /// The resources with their route tables, and the problems.
    pub(crate) fn into_resources(self) -> (EnvoyResources, Vec<Problem>) {
        let mut resources = self.resources;
        resources.routes = self
            .route_tables
            .into_iter()
            .map(RouteTable::into_route_configuration)
            .collect();
        resources.routes.sort_by(|a, b| a.name.cmp(&b.name));
        let own_clusters = std::mem::take(&mut resources.clusters);
        // `referenced` holds the same clusters: let go of it first, so that a fresh cluster
        // is moved out of its Arc rather than copied.
        drop(self.referenced);
        resources
            .clusters
            .reserve(self.upstream_clusters.len() + own_clusters.len());
        for upstream in self.upstream_clusters {
            let (cluster, endpoints) = match Arc::try_unwrap(upstream) {
                Ok(fresh) => fresh.into_typed(),
                Err(shared) => shared.to_typed(),
            };
            resources.clusters.push(cluster);
            resources.endpoints.extend(endpoints);
        }
        resources.clusters.extend(own_clusters);
        resources.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        resources.endpoints.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
        (resources, self.problems)
    }
}

/// A listener's route table, as its translated virtual hosts.
#[derive(Clone)]
pub(crate) struct RouteTable {
    /// The listener's name, which its RouteConfiguration has too.
    pub(crate) name: String,
    /// The listener's index in the Proxy.
    pub(crate) listener: usize,
    /// In the Proxy's order.
    pub(crate) virtual_hosts: Vec<Arc<VirtualHostTranslation>>,
    /// Every WASM filter the routes run (Envoy name → filter); the listener runs them.
    pub(crate) wasm_used: BTreeMap<String, pb::WasmFilter>,
}

impl RouteTable {
    /// The Envoy route table. A virtual host no one else holds (a fresh translation) is
    /// moved into it; one a cache holds is copied.
    pub(crate) fn into_route_configuration(self) -> RouteConfiguration {
        let virtual_hosts = self
            .virtual_hosts
            .into_iter()
            .map(|translated| match Arc::try_unwrap(translated) {
                Ok(fresh) => fresh.into_virtual_host(),
                Err(shared) => shared.to_virtual_host(),
            })
            .collect();
        routes::route_configuration(&self.name, virtual_hosts, &self.wasm_used)
    }
}

/// Translates one Proxy from the parts `parts` gives.
pub(crate) fn assemble(
    proxy: &pb::Proxy,
    upstreams: &BTreeMap<String, pb::Upstream>,
    settings: &Settings,
    parts: &mut impl Parts,
) -> Assembled {
    let mut problems = Vec::new();
    let mut out = EnvoyResources::default();
    // Cluster name → KV key of the Upstream (the last route naming a cluster decides).
    let mut referenced = BTreeMap::new();
    // Cluster name → the TLS of the Upstream's TLS variants among `referenced`.
    let mut tls_of: BTreeMap<String, pb::UpstreamTls> = BTreeMap::new();
    let mut uses_wasm = false;
    let mut route_tables = Vec::new();
    let mut upstream_clusters = Vec::new();
    // (bind address, port) → the filter chains of the Proxy listeners there, by name.
    let mut envoy_listeners: BTreeMap<(String, u32), Vec<(String, FilterChain)>> = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut listener_problems = Vec::new();
    for (index, listener) in proxy.listeners.iter().enumerate() {
        let Some(pb::listener::ListenerType::HttpListener(http)) = &listener.listener_type else {
            let problem = Problem {
                severity: Severity::Error,
                path: format!("listener/{}", listener.name),
                source: listener.sources.first().cloned(),
                message: "listener has no type".into(),
            };
            listener_problems.push((index, problem.clone()));
            problems.push(problem);
            continue;
        };
        let chain_secrets = match listener_secrets(listener, settings) {
            Ok(found) => found,
            Err(message) => {
                let problem = Problem {
                    severity: Severity::Error,
                    path: format!("listener/{}", listener.name),
                    source: listener.sources.first().cloned(),
                    message,
                };
                listener_problems.push((index, problem.clone()));
                problems.push(problem);
                continue;
            }
        };
        let secret_names: Vec<String> = chain_secrets.iter().map(|s| s.name.clone()).collect();
        secrets.extend(chain_secrets.into_iter().map(|s| (s.name.clone(), s)));
        let mut wasm_used = BTreeMap::new();
        let mut virtual_hosts = Vec::with_capacity(http.virtual_hosts.len());
        for vhost in &http.virtual_hosts {
            let inputs = VirtualHostInputs {
                listener: &listener.name,
                upstreams,
                wasm_modules: &settings.wasm,
                earlier_wasm: &wasm_used,
            };
            let translated = parts.virtual_host(vhost, inputs);
            problems.extend(translated.problems.iter().cloned());
            referenced.extend(
                translated
                    .found_upstreams
                    .iter()
                    .map(|(cluster, key)| (cluster.clone(), key.clone())),
            );
            tls_of.extend(
                translated
                    .upstream_tls
                    .iter()
                    .map(|(cluster, tls)| (cluster.clone(), tls.clone())),
            );
            wasm_used.extend(
                translated
                    .wasm_added
                    .iter()
                    .map(|(name, filter)| (name.clone(), filter.clone())),
            );
            virtual_hosts.push(translated);
        }
        let wasm_filters: Vec<_> = wasm_used
            .values()
            .map(|f| wasm::http_filter(f, &settings.wasm))
            .collect();
        uses_wasm |= !wasm_filters.is_empty();
        let chain = listeners::http_filter_chain(listener, settings, wasm_filters, &secret_names);
        envoy_listeners
            .entry((listener.bind_address.clone(), listener.bind_port))
            .or_default()
            .push((listener.name.clone(), chain));
        route_tables.push(RouteTable {
            name: listener.name.clone(),
            listener: index,
            virtual_hosts,
            wasm_used,
        });
    }
    let tail_from = problems.len();
    for ((address, port), chains) in envoy_listeners {
        out.listeners
            .push(merge_chains(&address, port, chains, proxy, &mut problems));
    }
    let client_certificate = if tls_of.is_empty() {
        None
    } else {
        backend_client_certificate(proxy, settings, &mut secrets, &mut problems)
    };
    out.secrets = secrets.into_values().collect();
    let mut served_clusters = Vec::with_capacity(referenced.len());
    for (name, key) in referenced {
        let tls = tls_of.remove(&name).map(|tls| ClusterTls {
            tls,
            client_certificate: client_certificate.clone(),
        });
        // Found when its virtual host was translated; a cache that missed its removal
        // would leave it here, so it is looked up again.
        let cluster = upstreams.get(&key).map(|upstream| {
            let meta = upstream.metadata.clone().unwrap_or_default();
            out.upstream_keys
                .insert(kgw_proto::nats::key(&meta.namespace, &meta.name));
            let cluster = parts.cluster(&name, &key, upstream, tls.as_ref());
            upstream_clusters.push(Arc::clone(&cluster));
            cluster
        });
        served_clusters.push(Referenced {
            name,
            key,
            tls,
            cluster,
        });
    }
    let meta = proxy.metadata.clone().unwrap_or_default();
    let role = kgw_proto::nats::role(&meta.namespace, &meta.name);
    let ours = |mut cluster: envoy_types::pb::envoy::config::cluster::v3::Cluster, process: &str| {
        if let Some(tls) = &settings.proxy_tls {
            cluster.transport_socket = Some(proxy_tls::transport_socket(&tls.sds_dir_of(&role), process));
        }
        cluster
    };
    for (i, address) in settings.access_log_addresses.iter().enumerate() {
        out.clusters.push(ours(
            clusters::access_log_cluster(&access_log_cluster_name(i), address),
            kgw_proto::nats::users::ACCESS_LOG,
        ));
    }
    if uses_wasm {
        let cache = &settings.wasm.cache_address;
        out.clusters.push(ours(
            clusters::static_http_cluster(wasm::WASM_CACHE_CLUSTER, cache, false),
            kgw_proto::nats::users::CONTROLLER,
        ));
    }
    out.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    let tail_problems = problems[tail_from..].to_vec();
    Assembled {
        resources: out,
        upstream_clusters,
        route_tables,
        problems,
        listener_problems,
        tail_problems,
        client_certificate,
        referenced: served_clusters,
    }
}

/// The SDS name of the Proxy's client certificate for TLS backends, its Secret added to
/// `secrets`; `None` when the Proxy names none or the Secret cannot be used (the backends
/// then see no client certificate: one that requires it refuses the connection).
fn backend_client_certificate(
    proxy: &pb::Proxy,
    settings: &Settings,
    secrets: &mut BTreeMap<String, Secret>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let secret_ref = proxy.backend_client_certificate.as_ref()?;
    let name = crate::secrets::sds_name(&secret_ref.namespace, &secret_ref.name);
    match settings.secrets.get(&name) {
        Ok(secret) => {
            secrets.insert(name.clone(), secret.to_envoy(&name));
            Some(name)
        }
        Err(why) => {
            problems.push(Problem {
                severity: Severity::Warning,
                path: "backend_client_certificate".into(),
                source: Some(secret_ref.clone()),
                message: format!("client certificate for TLS backends not presented: {why}"),
            });
            None
        }
    }
}

/// The SDS resources of an HTTPS Proxy listener's certificates (none for plain HTTP), or
/// why the listener is not served: without its certificates it is left out, never served
/// in plain text.
fn listener_secrets(listener: &pb::Listener, settings: &Settings) -> Result<Vec<Secret>, String> {
    listener
        .ssl_configurations
        .iter()
        .map(|ssl| {
            let secret_ref = ssl
                .secret_ref
                .as_ref()
                .ok_or("HTTPS listener not served: an ssl configuration names no Secret")?;
            let name = crate::secrets::sds_name(&secret_ref.namespace, &secret_ref.name);
            match settings.secrets.get(&name) {
                Ok(secret) => Ok(secret.to_envoy(&name)),
                Err(why) => Err(format!("HTTPS listener not served: {why}")),
            }
        })
        .collect()
}

/// One Envoy listener of the chains of the Proxy listeners on `address:port`: named
/// `listener~<port>` when it terminates TLS (whichever HTTPS listeners are served: a new
/// name would make Envoy drain the listener and bind the port again), else after its
/// (plain HTTP) Proxy listener. Chains that match the same connections as an earlier one
/// (two listeners without hostname, or of one hostname) are left out: Envoy would refuse
/// the whole listener.
fn merge_chains(
    address: &str,
    port: u32,
    chains: Vec<(String, FilterChain)>,
    proxy: &pb::Proxy,
    problems: &mut Vec<Problem>,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    let name = if chains.iter().any(|(_, chain)| chain.transport_socket.is_some()) {
        format!("listener~{port}")
    } else {
        chains.iter().map(|(name, _)| name.clone()).min().unwrap_or_default()
    };
    let mut kept: Vec<FilterChain> = Vec::with_capacity(chains.len());
    for (listener_name, chain) in chains {
        if kept.iter().any(|k| k.filter_chain_match == chain.filter_chain_match) {
            problems.push(Problem {
                severity: Severity::Error,
                path: format!("listener/{listener_name}"),
                source: proxy
                    .listeners
                    .iter()
                    .find(|l| l.name == listener_name)
                    .and_then(|l| l.sources.first().cloned()),
                message: format!("not served: another listener on {address}:{port} takes the same connections"),
            });
            continue;
        }
        kept.push(chain);
    }
    listeners::envoy_listener(&name, address, port, kept)
}

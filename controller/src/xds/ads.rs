//! Aggregated Discovery Service, state of the world (`StreamAggregatedResources`). One task
//! per stream keeps, per type, what was sent and what Envoy acknowledged; it answers
//! requests and pushes snapshot changes in [`PUSH_ORDER`].
use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_server::{AggregatedDiscoveryService, AggregatedDiscoveryServiceServer},
        },
    },
    google::protobuf::value::Kind,
};
use futures::{Stream, StreamExt};
use kgw_common::tls::Peer;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{
    SnapshotSource,
    cache::SnapshotRx,
    snapshot::{CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET, Snapshot},
};

/// Counters of the xDS server.
#[derive(Debug, Default)]
pub struct XdsStats {
    pub streams_open: AtomicU64,
    pub responses: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    /// Per resource type: `by_type[i]` counts [`XDS_TYPES`]`[i]`, the last slot every other
    /// type_url (what Envoy names is outside input: it does not pick metric labels).
    pub by_type: [TypeStats; XDS_TYPES.len() + 1],
}

/// The resource types counted apart in [`XdsStats::by_type`].
pub const XDS_TYPES: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

/// Counters of one resource type.
#[derive(Debug, Default)]
pub struct TypeStats {
    pub responses: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
}

impl XdsStats {
    /// The counters of `type_url`.
    pub fn of(&self, type_url: &str) -> &TypeStats {
        let i = XDS_TYPES.iter().position(|t| *t == type_url).unwrap_or(XDS_TYPES.len());
        &self.by_type[i]
    }

    /// (type_url label, counters) for every slot of [`XdsStats::by_type`].
    pub fn types(&self) -> impl Iterator<Item = (&'static str, &TypeStats)> {
        XDS_TYPES.iter().copied().chain(["other"]).zip(self.by_type.iter())
    }
}

pub struct AdsService<S> {
    source: S,
    stats: Arc<XdsStats>,
}

impl<S: SnapshotSource> AdsService<S> {
    pub fn new(source: S, stats: Arc<XdsStats>) -> Self {
        Self { source, stats }
    }

    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(64 * 1024 * 1024)
    }
}

/// The Envoy role from node metadata `role`, as Gloo reads it.
pub fn node_role(node: &Node) -> Option<String> {
    let value = node.metadata.as_ref()?.fields.get("role")?;
    match &value.kind {
        Some(Kind::StringValue(role)) if !role.is_empty() => Some(role.clone()),
        _ => None,
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: SnapshotSource> AggregatedDiscoveryService for AdsService<S> {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = kgw_common::tls::grpc::peer_of(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let stream = StreamState::new(self.source.clone(), self.stats.clone(), tx, peer);
        tokio::spawn(stream.run(inbound));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not served yet; use state-of-the-world ADS",
        ))
    }
}

/// Per type: what Envoy asked for and what we last sent.
#[derive(Default)]
struct TypeState {
    names: Vec<String>,
    /// (version, names) of the last response.
    sent: Option<(String, Vec<String>)>,
    nonce: String,
    /// A version Envoy rejected: not sent again.
    rejected: Option<String>,
    /// A response Envoy has not answered (ACK or NACK) yet. Snapshot changes meanwhile are
    /// not sent: when the answer comes, the latest version goes out, so a burst of changes
    /// costs Envoy one update, not one per change.
    awaiting_answer: bool,
}

struct StreamState<S> {
    source: S,
    stats: Arc<XdsStats>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    role: Option<String>,
    /// Who connected: an Envoy's certificate names the one role it may read.
    peer: Peer,
    node_id: String,
    snapshots: Option<SnapshotRx>,
    types: HashMap<String, TypeState>,
    nonce: u64,
}

impl<S: SnapshotSource> StreamState<S> {
    fn new(source: S, stats: Arc<XdsStats>, tx: mpsc::Sender<Result<DiscoveryResponse, Status>>, peer: Peer) -> Self {
        Self {
            source,
            stats,
            tx,
            role: None,
            peer,
            node_id: String::new(),
            snapshots: None,
            types: HashMap::new(),
            nonce: 0,
        }
    }

    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        self.stats.streams_open.fetch_add(1, Ordering::Relaxed);
        loop {
            let changed = async {
                match self.snapshots.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = inbound.next() => match request {
                    Some(Ok(request)) => {
                        if !self.on_request(request).await {
                            break;
                        }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(node = %self.node_id, %status, "ADS stream error");
                        break;
                    }
                    None => break,
                },
                alive = changed => {
                    if !alive || !self.push_all().await {
                        break;
                    }
                }
            }
        }
        tracing::info!(node = %self.node_id, role = ?self.role, "Envoy disconnected");
        self.stats.streams_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Returns false when the stream should end.
    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        if self.role.is_none() {
            let Some(node) = request.node.as_ref() else {
                let _ = self
                    .tx
                    .send(Err(Status::invalid_argument("the first request must carry the node")))
                    .await;
                return false;
            };
            let Some(role) = node_role(node) else {
                let message = format!("node {:?} has no metadata `role` (<namespace>~<gateway>)", node.id);
                tracing::warn!(node = %node.id, "{message}");
                let _ = self.tx.send(Err(Status::invalid_argument(message))).await;
                return false;
            };
            if !self.peer.allows(|identity| identity.may_read_role(&role)) {
                tracing::warn!(node = %node.id, %role, peer = %self.peer, "xDS stream refused: the certificate does not name this role");
                let message = format!("{} may not read the config of role {role}", self.peer);
                let _ = self.tx.send(Err(Status::permission_denied(message))).await;
                return false;
            }
            tracing::info!(node = %node.id, %role, peer = %self.peer, "Envoy connected");
            self.node_id = node.id.clone();
            let snapshots = self.source.subscribe(&role);
            if snapshots.borrow().is_none() {
                // Envoy waits quietly for a role that has no Proxy: say so, once, so a typo in
                // the role (or a Gateway not translated yet) is visible.
                tracing::warn!(node = %node.id, %role, "no Proxy for this role yet; Envoy gets its config when a Gateway <namespace>~<name> with that name is translated");
            }
            self.snapshots = Some(snapshots);
            self.role = Some(role);
        }
        let type_url = request.type_url.clone();
        let state = self.types.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() && request.response_nonce != state.nonce {
            return true; // answers an older response: superseded
        }
        if !request.response_nonce.is_empty() {
            state.awaiting_answer = false;
        }
        if let Some(error) = &request.error_detail {
            self.stats.nacks.fetch_add(1, Ordering::Relaxed);
            self.stats.of(&type_url).nacks.fetch_add(1, Ordering::Relaxed);
            let rejected = state.sent.as_ref().map(|(v, _)| v.clone());
            tracing::warn!(
                node = %self.node_id, type_url, version = ?rejected, kept = %request.version_info,
                error = %error.message, "Envoy rejected config (NACK); it keeps its last accepted version"
            );
            state.rejected = rejected;
            state.names = request.resource_names;
            // A newer version than the rejected one may be waiting.
            return self.respond(&type_url).await;
        }
        if !request.response_nonce.is_empty() {
            self.stats.acks.fetch_add(1, Ordering::Relaxed);
            self.stats.of(&type_url).acks.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node = %self.node_id, type_url, version = %request.version_info, "ACK");
        }
        state.names = request.resource_names;
        self.respond(&type_url).await
    }

    async fn push_all(&mut self) -> bool {
        for type_url in PUSH_ORDER {
            let waiting = self.types.get(type_url).is_none_or(|t| t.awaiting_answer);
            if !waiting && !self.respond(type_url).await {
                return false;
            }
        }
        true
    }

    /// Sends `type_url` when the snapshot's version or the requested names differ from the
    /// last response. Returns false when the stream is gone.
    async fn respond(&mut self, type_url: &str) -> bool {
        let Some(snapshot) = self.snapshots.as_ref().and_then(|rx| rx.borrow().clone()) else {
            return true; // nothing to serve this role yet; Envoy waits
        };
        let Some(state) = self.types.get_mut(type_url) else {
            return true;
        };
        let Some(response) = build_response(&snapshot, type_url, state) else {
            return true;
        };
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let state = self.types.entry(type_url.to_string()).or_default();
        state.nonce = nonce.clone();
        state.sent = Some((response.version_info.clone(), state.names.clone()));
        state.awaiting_answer = true;
        self.stats.responses.fetch_add(1, Ordering::Relaxed);
        self.stats.of(type_url).responses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node = %self.node_id, type_url, version = %response.version_info, resources = response.resources.len(), "push");
        self.tx.send(Ok(DiscoveryResponse { nonce, ..response })).await.is_ok()
    }
}

fn build_response(snapshot: &Snapshot, type_url: &str, state: &TypeState) -> Option<DiscoveryResponse> {
    let empty = Default::default();
    let resources = snapshot.types.get(type_url).unwrap_or(&empty);
    let version = if resources.version.is_empty() {
        "empty".to_string()
    } else {
        resources.version.clone()
    };
    if state
        .sent
        .as_ref()
        .is_some_and(|(v, names)| *v == version && *names == state.names)
    {
        return None;
    }
    if state.rejected.as_deref() == Some(version.as_str()) {
        return None;
    }
    // Listeners and clusters are wildcard subscriptions; endpoints and routes by name.
    let by_name = matches!(type_url, ENDPOINT | ROUTE) && !state.names.is_empty();
    // Looked up by name, not scanned: thousands of clusters ask for thousands of names.
    let items = if by_name {
        let names: std::collections::BTreeSet<&String> = state.names.iter().collect();
        names
            .into_iter()
            .filter_map(|name| resources.items.get(name).cloned())
            .collect()
    } else {
        resources.items.values().cloned().collect()
    };
    Some(DiscoveryResponse {
        version_info: version,
        resources: items,
        type_url: type_url.to_string(),
        ..Default::default()
    })
}

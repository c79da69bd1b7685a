//! Aggregated Discovery Service: the gRPC service, serving both protocols of ADS. State of
//! the world (`StreamAggregatedResources`) lives here: one task per stream keeps, per type,
//! what was sent and what Envoy acknowledged; it answers requests and pushes snapshot
//! changes in [`PUSH_ORDER`]. Delta (`DeltaAggregatedResources`) is [`super::delta`].
use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{AggregatedDiscoveryService, AggregatedDiscoveryServiceServer},
};
use futures::Stream;
use kgw_common::tls::Peer;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub use super::session::node_role;
pub use super::stats::{TypeStats, XDS_TYPES, XdsStats};
use super::{
    SnapshotSource,
    delta::DeltaStream,
    session::{Answer, Session, answer_span},
    snapshot::{ENDPOINT, PUSH_ORDER, ROUTE, SECRET, Snapshot},
};

/// The ADS gRPC service: state of the world and delta, over the same snapshots.
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

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: SnapshotSource> AggregatedDiscoveryService for AdsService<S> {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaResponseStream;

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
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponseStream>, Status> {
        let peer = kgw_common::tls::grpc::peer_of(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let stream = DeltaStream::new(self.source.clone(), self.stats.clone(), tx, peer);
        tokio::spawn(stream.run(inbound));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
    /// `xds.push` of the response awaiting its answer: open until Envoy answers, so its
    /// duration is the time Envoy took to apply it; the answer is its child.
    push: Option<tracing::Span>,
}

struct StreamState<S> {
    source: S,
    stats: Arc<XdsStats>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    /// Who connected: an Envoy's certificate names the one role it may read.
    peer: Peer,
    /// Set by the first request: the Envoy's role and its snapshots.
    session: Option<Session>,
    types: BTreeMap<String, TypeState>,
    nonce: u64,
}

impl<S: SnapshotSource> super::session::AdsStream for StreamState<S> {
    type Request = DiscoveryRequest;
    const PROTOCOL: &'static str = "state of the world";

    fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        StreamState::on_request(self, request).await
    }

    async fn push_all(&mut self) -> bool {
        StreamState::push_all(self).await
    }
}

impl<S: SnapshotSource> StreamState<S> {
    fn new(source: S, stats: Arc<XdsStats>, tx: mpsc::Sender<Result<DiscoveryResponse, Status>>, peer: Peer) -> Self {
        Self {
            source,
            stats,
            tx,
            peer,
            session: None,
            types: BTreeMap::new(),
            nonce: 0,
        }
    }

    fn node_id(&self) -> &str {
        self.session.as_ref().map(|s| s.node_id.as_str()).unwrap_or_default()
    }

    /// Serves the stream until Envoy or the server ends it.
    pub(super) async fn run(self, inbound: Streaming<DiscoveryRequest>) {
        let _open = self.stats.stream_opened();
        super::session::serve(self, inbound).await;
    }

    /// Returns false when the stream should end.
    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        if self.session.is_none() {
            match Session::open(request.node.as_ref(), &self.peer, &self.source) {
                Ok(session) => self.session = Some(session),
                Err(refused) => {
                    let _ = self.tx.send(Err(refused.into())).await;
                    return false;
                }
            }
        }
        let node_id = self.node_id().to_string();
        let type_url = request.type_url.clone();
        let state = self.types.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() && request.response_nonce != state.nonce {
            return true; // answers an older response: superseded
        }
        if !request.response_nonce.is_empty() {
            state.awaiting_answer = false;
            if let Some(push) = state.push.take() {
                let answer = match &request.error_detail {
                    None => Answer::Ack {
                        version: &request.version_info,
                    },
                    Some(error) => Answer::Nack {
                        kept_version: &request.version_info,
                        error: &error.message,
                    },
                };
                answer_span(&push, answer);
            }
        }
        if let Some(error) = &request.error_detail {
            self.stats.count_nack(&type_url);
            let rejected = state.sent.as_ref().map(|(v, _)| v.clone());
            tracing::warn!(
                node = %node_id, type_url, version = ?rejected, kept = %request.version_info,
                error = %error.message, "Envoy rejected config (NACK); it keeps its last accepted version"
            );
            state.rejected = rejected;
            state.names = request.resource_names;
            // A newer version than the rejected one may be waiting.
            return self.respond(&type_url).await;
        }
        if !request.response_nonce.is_empty() {
            self.stats.count_ack(&type_url);
            tracing::debug!(node = %node_id, type_url, version = %request.version_info, "ACK");
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
        let Some(session) = self.session.as_ref() else {
            return true;
        };
        let Some(snapshot) = session.snapshots.borrow().clone() else {
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
        state.nonce = nonce.clone();
        state.sent = Some((response.version_info.clone(), state.names.clone()));
        state.awaiting_answer = true;
        state.push = Some(session.push_span(
            type_url,
            &response.version_info,
            response.resources.len(),
            None,
            snapshot.trace.as_ref(),
        ));
        let response = DiscoveryResponse { nonce, ..response };
        self.stats
            .count_response(type_url, prost::Message::encoded_len(&response));
        tracing::debug!(node = %session.node_id, type_url, version = %response.version_info, resources = response.resources.len(), "push");
        self.tx.send(Ok(response)).await.is_ok()
    }
}

fn build_response(snapshot: &Snapshot, type_url: &str, state: &TypeState) -> Option<DiscoveryResponse> {
    // The version first: route tables are packed for this protocol only when sent.
    let version = match snapshot.version(type_url).unwrap_or_default() {
        "" => "empty".to_string(),
        version => version.to_string(),
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
    let empty = Default::default();
    let resources = snapshot.resources(type_url).unwrap_or(&empty);
    // Listeners and clusters are wildcard subscriptions; endpoints, routes and secrets by
    // name (a secret only to the Envoy whose listener names it).
    let by_name = matches!(type_url, ENDPOINT | ROUTE | SECRET) && !state.names.is_empty();
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

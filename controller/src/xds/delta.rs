//! Aggregated Discovery Service, incremental ("delta") variant: `DeltaAggregatedResources`,
//! beside state of the world ([`super::ads`]) on the same port and the same snapshots.
//!
//! # Why delta
//! In state of the world every response carries every resource of its type: one changed
//! route table resends all of them, one new cluster all clusters, and Envoy re-reads each.
//! With many gateways, hosts and upstreams (large fleets, thousands of clusters) that is
//! most of the bytes and CPU on both sides. Delta sends only the resources whose own
//! version changed and names the ones that are gone, so a change costs what it touches.
//! It is also the protocol VHDS needs: route tables go to delta Envoys without their virtual
//! hosts, which come one by one (see [`super::vhds`]), so a changed route sends one virtual
//! host, not its listener's whole table.
//!
//! # What is served
//! - Per stream and type: the names Envoy subscribed to (`resource_names_subscribe` /
//!   `_unsubscribe`) or the wildcard (an empty first request, "legacy", or `*`); the version
//!   of each resource Envoy has, starting from `initial_resource_versions` when it
//!   reconnects. See [`subscription`].
//! - A resource's version is a hash of its encoded bytes ([`TypeResources::item_versions`]),
//!   the same for the same resource whatever snapshot carries it; `system_version_info` is
//!   the type's version, as in state of the world.
//! - A response carries the resources whose version differs from Envoy's and, in
//!   `removed_resources`, those Envoy has that are gone, and subscribed names that do not
//!   exist (so Envoy does not wait for them). A first response of a type is sent even when
//!   empty.
//! - One response per type awaits Envoy's answer at a time (matched by nonce); changes in
//!   between are coalesced into the next. A NACKed change is not sent again until the
//!   snapshot makes it differ. Types are pushed clusters → endpoints → listeners → routes →
//!   virtual hosts.
//! - Route tables in their VHDS form and `VirtualHost` resources, namespaced by route table,
//!   with on-demand requests answered by `aliases` ([`super::vhds`]).
//! - The same authorization (the certificate must allow the node's role), counters
//!   ([`XdsStats`]) and spans (`xds.push` until Envoy's `envoy.ack` / `envoy.nack`) as
//!   state of the world.
//!
//! # What is not (yet)
//! On-demand CDS and other on-demand resources but virtual hosts, `resource_locators`
//! (xdstp:// names and dynamic parameters), resource TTLs, and `removed_resource_names`.
//! Secrets are not in the snapshot (SDS comes from files), so a subscribed secret is
//! reported absent.
pub(super) mod subscription;

use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use kgw_common::tls::Peer;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use self::subscription::{Change, InFlight, Served, Subscription, SubscriptionRequest};
use super::{
    Snapshot, SnapshotSource,
    session::{Answer, Session, answer_span},
    snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, TypeResources, VIRTUAL_HOST},
    stats::XdsStats,
};

/// The order types are pushed in: clusters before the endpoints and routes that name them,
/// certificates before the listeners that name them, route tables before the virtual hosts
/// they load.
pub const DELTA_PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE, VIRTUAL_HOST];

/// One delta ADS stream: its Envoy's session and, per type, its [`Subscription`].
pub struct DeltaStream<S> {
    source: S,
    stats: Arc<XdsStats>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    /// Who connected: an Envoy's certificate names the one role it may read.
    peer: Peer,
    /// Set by the first request: the Envoy's role and its snapshots.
    session: Option<Session>,
    types: BTreeMap<String, Subscription>,
    nonce: u64,
}

impl<S: SnapshotSource> super::session::AdsStream for DeltaStream<S> {
    type Request = DeltaDiscoveryRequest;
    const PROTOCOL: &'static str = "delta";

    fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> bool {
        DeltaStream::on_request(self, request).await
    }

    async fn push_all(&mut self) -> bool {
        DeltaStream::push_all(self).await
    }
}

impl<S: SnapshotSource> DeltaStream<S> {
    pub fn new(
        source: S,
        stats: Arc<XdsStats>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
        peer: Peer,
    ) -> Self {
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
    pub(super) async fn run(self, inbound: Streaming<DeltaDiscoveryRequest>) {
        let _open = self.stats.stream_opened();
        super::session::serve(self, inbound).await;
    }

    /// Takes Envoy's answer (if the request carries one) and its subscription changes, then
    /// responds if there is something to send. Returns false when the stream should end.
    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> bool {
        if self.session.is_none() {
            match Session::open(request.node.as_ref(), &self.peer, &self.source) {
                Ok(session) => self.session = Some(session),
                Err(refused) => {
                    let _ = self.tx.send(Err(refused.into())).await;
                    return false;
                }
            }
        }
        if !request.response_nonce.is_empty() {
            self.on_answer(&request);
        }
        // In name order from here on (prost gives Envoy's versions unordered).
        let initial_versions: BTreeMap<String, String> = request
            .initial_resource_versions
            .iter()
            .map(|(name, version)| (name.clone(), version.clone()))
            .collect();
        let subscription =
            self.types
                .entry(request.type_url.clone())
                .or_insert_with(|| match request.type_url.as_str() {
                    VIRTUAL_HOST => Subscription::namespaced(),
                    _ => Subscription::default(),
                });
        subscription.update(SubscriptionRequest {
            subscribe: &request.resource_names_subscribe,
            unsubscribe: &request.resource_names_unsubscribe,
            initial_versions: &initial_versions,
        });
        self.respond(&request.type_url).await
    }

    /// An ACK or NACK of the response awaiting its answer; an answer to any other nonce is
    /// stale (that response was superseded) and ignored.
    fn on_answer(&mut self, request: &DeltaDiscoveryRequest) {
        let node_id = self.node_id().to_string();
        let type_url = request.type_url.as_str();
        let Some(subscription) = self.types.get_mut(type_url) else {
            return;
        };
        let Some(in_flight) = subscription
            .in_flight
            .take_if(|in_flight| in_flight.nonce == request.response_nonce)
        else {
            tracing::debug!(node = %node_id, type_url, nonce = %request.response_nonce, "answer to a superseded response");
            return;
        };
        match &request.error_detail {
            None => {
                answer_span(
                    &in_flight.push,
                    Answer::Ack {
                        version: &in_flight.system_version,
                    },
                );
                self.stats.count_ack(type_url);
                tracing::debug!(node = %node_id, type_url, version = %in_flight.system_version, "ACK (delta)");
                subscription.acknowledged(in_flight.change);
            }
            Some(error) => {
                answer_span(
                    &in_flight.push,
                    Answer::Nack {
                        kept_version: "",
                        error: &error.message,
                    },
                );
                self.stats.count_nack(type_url);
                tracing::warn!(
                    node = %node_id, type_url, version = %in_flight.system_version, error = %error.message,
                    "Envoy rejected config (NACK, delta); it keeps its last accepted resources"
                );
                subscription.rejected(in_flight.change);
            }
        }
    }

    /// A snapshot change: each type Envoy subscribed to, in [`DELTA_PUSH_ORDER`].
    async fn push_all(&mut self) -> bool {
        for type_url in DELTA_PUSH_ORDER {
            if self.types.contains_key(type_url) && !self.respond(type_url).await {
                return false;
            }
        }
        true
    }

    /// Sends the change of `type_url`, if any and if no response of that type awaits its
    /// answer (the answer brings the latest). Returns false when the stream is gone.
    async fn respond(&mut self, type_url: &str) -> bool {
        let Some(session) = self.session.as_ref() else {
            return true;
        };
        let Some(snapshot) = session.snapshots.borrow().clone() else {
            return true; // nothing to serve this role yet; Envoy waits
        };
        let Some(subscription) = self.types.get_mut(type_url) else {
            return true;
        };
        if subscription.in_flight.is_some() {
            return true;
        }
        let served = Types::of(&snapshot, type_url);
        let Some(change) = subscription.next_change(served.served()) else {
            return true;
        };
        let version = served.version().to_string();
        self.nonce += 1;
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: served.encode(&change),
            type_url: type_url.to_string(),
            removed_resources: change.removed.iter().cloned().collect(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        };
        let push = session.push_span(
            type_url,
            &version,
            response.resources.len(),
            Some(response.removed_resources.len()),
            snapshot.trace.as_ref(),
        );
        tracing::debug!(
            node = %session.node_id, type_url, %version,
            resources = response.resources.len(), removed = response.removed_resources.len(), "push (delta)"
        );
        subscription.sent(InFlight {
            nonce: response.nonce.clone(),
            system_version: version,
            change,
            push,
        });
        self.stats
            .count_response(type_url, prost::Message::encoded_len(&response));
        self.tx.send(Ok(response)).await.is_ok()
    }
}

/// What a delta stream serves of one type of a snapshot: route tables and virtual hosts in
/// their VHDS form, the other types as they are.
enum Types<'a> {
    Plain(&'a TypeResources),
    VirtualHosts(&'a super::vhds::VirtualHosts),
}

impl<'a> Types<'a> {
    fn of(snapshot: &'a Snapshot, type_url: &str) -> Self {
        static EMPTY: std::sync::LazyLock<TypeResources> = std::sync::LazyLock::new(TypeResources::default);
        match type_url {
            ROUTE => Types::Plain(&snapshot.vhds().route_tables),
            VIRTUAL_HOST => Types::VirtualHosts(&snapshot.vhds().virtual_hosts),
            _ => Types::Plain(snapshot.resources(type_url).unwrap_or(&EMPTY)),
        }
    }

    fn served(&self) -> &'a dyn Served {
        match self {
            Types::Plain(resources) => *resources,
            Types::VirtualHosts(hosts) => *hosts,
        }
    }

    fn version(&self) -> &'a str {
        match self {
            Types::Plain(resources) => &resources.version,
            Types::VirtualHosts(hosts) => &hosts.version,
        }
    }

    /// The resources of `change`: each updated one with its version (and the on-demand
    /// names it answers), then each on-demand name answered without a body.
    fn encode(&self, change: &Change) -> Vec<Resource> {
        let updated = change.updated.iter().filter_map(|(name, version)| {
            let any = match self {
                Types::Plain(resources) => resources.items.get(name).cloned(),
                Types::VirtualHosts(hosts) => hosts.resource(name),
            }?;
            Some(Resource {
                name: name.clone(),
                version: version.clone(),
                resource: Some(any),
                aliases: change
                    .aliases
                    .get(name)
                    .map(|aliases| aliases.iter().cloned().collect())
                    .unwrap_or_default(),
                ..Default::default()
            })
        });
        let bodiless = change.bodiless.iter().map(|name| Resource {
            name: name.clone(),
            aliases: vec![name.clone()],
            ..Default::default()
        });
        updated.chain(bodiless).collect()
    }
}

//! What both ADS protocols (state of the world in [`super::ads`], delta in [`super::delta`])
//! do alike: learn who the Envoy is from its first request (the node's `role`), check that
//! its certificate may read that role, subscribe to that role's snapshots, and trace each
//! push (`xds.push`) until Envoy answers it (`envoy.ack` / `envoy.nack`).
use envoy_types::pb::{envoy::config::core::v3::Node, google::protobuf::value::Kind};
use futures::StreamExt as _;
use kgw_common::{tls::Peer, trace::TraceHeaders};
use tonic::{Status, Streaming};

use super::{SnapshotSource, cache::SnapshotRx};

/// The Envoy role from node metadata `role`, as Gloo reads it.
pub fn node_role(node: &Node) -> Option<String> {
    let value = node.metadata.as_ref()?.fields.get("role")?;
    match &value.kind {
        Some(Kind::StringValue(role)) if !role.is_empty() => Some(role.clone()),
        _ => None,
    }
}

/// Why an ADS stream is refused at its first request.
#[derive(Debug, thiserror::Error)]
pub enum StreamRefused {
    #[error("the first request must carry the node")]
    NoNode,
    #[error("node {node_id:?} has no metadata `role` (<namespace>~<gateway>)")]
    NoRole { node_id: String },
    #[error("{peer} may not read the config of role {role}")]
    RoleNotAllowed { peer: String, role: String },
}

impl From<StreamRefused> for Status {
    fn from(refused: StreamRefused) -> Self {
        match refused {
            StreamRefused::RoleNotAllowed { .. } => Status::permission_denied(refused.to_string()),
            StreamRefused::NoNode | StreamRefused::NoRole { .. } => Status::invalid_argument(refused.to_string()),
        }
    }
}

/// An Envoy that named its role and may read it: the snapshots of that role.
pub(super) struct Session {
    pub role: String,
    pub node_id: String,
    pub snapshots: SnapshotRx,
}

impl Session {
    /// Opens the session of the Envoy whose first request carried `node`, connected as
    /// `peer` (an Envoy's certificate names the one role it may read).
    pub(super) fn open(node: Option<&Node>, peer: &Peer, source: &impl SnapshotSource) -> Result<Self, StreamRefused> {
        let node = node.ok_or(StreamRefused::NoNode)?;
        let Some(role) = node_role(node) else {
            let refused = StreamRefused::NoRole {
                node_id: node.id.clone(),
            };
            tracing::warn!(node = %node.id, "{refused}");
            return Err(refused);
        };
        if !peer.allows(|identity| identity.may_read_role(&role)) {
            tracing::warn!(node = %node.id, %role, %peer, "xDS stream refused: the certificate does not name this role");
            return Err(StreamRefused::RoleNotAllowed {
                peer: peer.to_string(),
                role,
            });
        }
        tracing::info!(node = %node.id, %role, %peer, "Envoy connected");
        let snapshots = source.subscribe(&role);
        if snapshots.borrow().is_none() {
            // Envoy waits quietly for a role that has no Proxy: say so, once, so a typo in
            // the role (or a Gateway not translated yet) is visible.
            tracing::warn!(node = %node.id, %role, "no Proxy for this role yet; Envoy gets its config when a Gateway <namespace>~<name> with that name is translated");
        }
        Ok(Self {
            role,
            node_id: node.id.clone(),
            snapshots,
        })
    }

    /// `xds.push` of one response: a root of its own, adopted into the trace of the change
    /// that made the snapshot (`trace`), kept open until Envoy answers (see [`answer_span`]).
    /// `removed` is recorded by delta responses only.
    pub(super) fn push_span(
        &self,
        type_url: &str,
        version: &str,
        resources: usize,
        removed: Option<usize>,
        trace: Option<&TraceHeaders>,
    ) -> tracing::Span {
        let push = tracing::info_span!(
            parent: None,
            "xds.push",
            node = %self.node_id,
            role = %self.role,
            type_url = short_type(type_url),
            version = %version,
            resources,
            removed = tracing::field::Empty,
        );
        if let Some(removed) = removed {
            push.record("removed", removed);
        }
        if let Some(trace) = trace {
            trace.adopt(&push);
        }
        push
    }
}

/// How Envoy answered a push.
pub(super) enum Answer<'a> {
    /// Envoy applied it; it now has `version`.
    Ack { version: &'a str },
    /// Envoy rejected it and keeps `kept_version` (empty where the protocol does not say:
    /// delta requests carry no version).
    Nack { kept_version: &'a str, error: &'a str },
}

/// `envoy.ack` or `envoy.nack` (with Envoy's error), a child of the push it answers.
pub(super) fn answer_span(push: &tracing::Span, answer: Answer<'_>) {
    let _answer = match answer {
        Answer::Ack { version } => tracing::info_span!(parent: push, "envoy.ack", version = %version),
        Answer::Nack { kept_version, error } => tracing::info_span!(
            parent: push,
            "envoy.nack",
            kept_version = %kept_version,
            error = %error,
            otel.status_code = "ERROR",
        ),
    };
}

/// `RouteConfiguration` for `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`.
pub(super) fn short_type(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

/// One ADS stream of either protocol: what it does with Envoy's requests and with a new
/// snapshot of its role; [`serve`] runs it.
pub(super) trait AdsStream {
    type Request;
    /// Which protocol, for logs.
    const PROTOCOL: &'static str;

    fn session(&mut self) -> Option<&mut Session>;
    /// Takes one request; false ends the stream.
    async fn on_request(&mut self, request: Self::Request) -> bool;
    /// Pushes what a new snapshot changed; false ends the stream.
    async fn push_all(&mut self) -> bool;
}

/// Serves `stream` until Envoy or the server ends it: Envoy's requests and the role's
/// snapshot changes, whichever comes first.
pub(super) async fn serve<S: AdsStream>(mut stream: S, mut inbound: Streaming<S::Request>)
where
    S::Request: prost::Message + Default + 'static,
{
    loop {
        let changed = async {
            match stream.session() {
                Some(session) => session.snapshots.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            request = inbound.next() => match request {
                Some(Ok(request)) => {
                    if !stream.on_request(request).await {
                        break;
                    }
                }
                Some(Err(status)) => {
                    let node = stream.session().map(|s| s.node_id.clone()).unwrap_or_default();
                    tracing::debug!(%node, protocol = S::PROTOCOL, %status, "ADS stream error");
                    break;
                }
                None => break,
            },
            alive = changed => {
                if !alive || !stream.push_all().await {
                    break;
                }
            }
        }
    }
    let (node, role) = stream
        .session()
        .map(|s| (s.node_id.clone(), s.role.clone()))
        .unwrap_or_default();
    tracing::info!(%node, %role, protocol = S::PROTOCOL, "Envoy disconnected");
}

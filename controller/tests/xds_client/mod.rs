//! A scripted Envoy for the ADS tests: one client that speaks either protocol (state of the
//! world or delta), so each scenario runs on both. Responses come back as [`Pushed`], the
//! part both protocols share.
// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]
use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use controller::xds::{
    SnapshotCache,
    ads::{AdsService, XdsStats},
};
use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::{
        protobuf::{Any, Struct, Value, value::Kind},
        rpc::Status,
    },
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

pub const ROLE: &str = "default~gw";

/// Which ADS protocol a test speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    StateOfTheWorld,
    Delta,
}

/// Runs `$scenario(Protocol)` as two tests, `sotw` and `delta`, in a module named after it.
#[macro_export]
macro_rules! on_both_protocols {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn sotw() {
                super::$scenario($crate::xds_client::Protocol::StateOfTheWorld).await
            }

            #[tokio::test]
            async fn delta() {
                super::$scenario($crate::xds_client::Protocol::Delta).await
            }
        }
    };
}

/// One response, either protocol: its type, nonce, version (`version_info` or
/// `system_version_info`), the names of the resources it carries and (delta) removes.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub type_url: String,
    pub nonce: String,
    pub version: String,
    pub names: Vec<String>,
    pub removed: Vec<String>,
    /// Delta: each resource's own version, by name.
    pub resource_versions: BTreeMap<String, String>,
    /// Each resource by name (delta: `None` for a resource without a body).
    pub resources: BTreeMap<String, Option<Any>>,
    /// Delta: each resource's `aliases`, by name (only those that have some).
    pub aliases: BTreeMap<String, Vec<String>>,
}

impl From<DiscoveryResponse> for Pushed {
    fn from(r: DiscoveryResponse) -> Self {
        let names: Vec<String> = r.resources.iter().map(|any| resource_name(&any.value)).collect();
        let resources = names.iter().cloned().zip(r.resources.into_iter().map(Some)).collect();
        Self {
            resources,
            aliases: BTreeMap::new(),
            type_url: r.type_url,
            nonce: r.nonce,
            version: r.version_info,
            names,
            removed: Vec::new(),
            resource_versions: BTreeMap::new(),
        }
    }
}

impl From<DeltaDiscoveryResponse> for Pushed {
    fn from(r: DeltaDiscoveryResponse) -> Self {
        Self {
            resources: r
                .resources
                .iter()
                .map(|res| (res.name.clone(), res.resource.clone()))
                .collect(),
            aliases: r
                .resources
                .iter()
                .filter(|res| !res.aliases.is_empty())
                .map(|res| (res.name.clone(), res.aliases.clone()))
                .collect(),
            names: r.resources.iter().map(|res| res.name.clone()).collect(),
            resource_versions: r
                .resources
                .iter()
                .map(|res| (res.name.clone(), res.version.clone()))
                .collect(),
            type_url: r.type_url,
            nonce: r.nonce,
            version: r.system_version_info,
            removed: r.removed_resources,
        }
    }
}

/// The name of a resource in a state-of-the-world response (field 1 of each of our types,
/// `name` or `cluster_name`).
fn resource_name(value: &[u8]) -> String {
    use prost::Message as _;
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(string, tag = "1")]
        name: String,
    }
    Named::decode(value).map(|n| n.name).unwrap_or_default()
}

pub fn node() -> Node {
    let role = Value {
        kind: Some(Kind::StringValue(ROLE.into())),
    };
    Node {
        id: "test-envoy".into(),
        metadata: Some(Struct {
            fields: [("role".to_string(), role)].into(),
        }),
        ..Default::default()
    }
}

/// A gRPC server with the ADS service over `cache`.
pub async fn serve(cache: SnapshotCache) -> (SocketAddr, Arc<XdsStats>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Arc::new(XdsStats::default());
    let service = AdsService::new(cache, stats.clone()).into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, stats)
}

enum Wire {
    StateOfTheWorld {
        requests: mpsc::Sender<DiscoveryRequest>,
        responses: tonic::Streaming<DiscoveryResponse>,
    },
    Delta {
        requests: mpsc::Sender<DeltaDiscoveryRequest>,
        responses: tonic::Streaming<DeltaDiscoveryResponse>,
    },
}

/// A scripted Envoy on one stream.
pub struct Envoy {
    wire: Wire,
    pub protocol: Protocol,
    /// State of the world: per type, the names asked for and the version last accepted.
    names: BTreeMap<String, Vec<String>>,
    accepted: BTreeMap<String, String>,
}

impl Envoy {
    /// Opens a stream of `protocol` to the server at `addr`.
    pub async fn connect(addr: SocketAddr, protocol: Protocol) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let wire = match protocol {
            Protocol::StateOfTheWorld => {
                let (requests, rx) = mpsc::channel(16);
                let responses = client
                    .stream_aggregated_resources(ReceiverStream::new(rx))
                    .await
                    .expect("stream")
                    .into_inner();
                Wire::StateOfTheWorld { requests, responses }
            }
            Protocol::Delta => {
                let (requests, rx) = mpsc::channel(16);
                let responses = client
                    .delta_aggregated_resources(ReceiverStream::new(rx))
                    .await
                    .expect("stream")
                    .into_inner();
                Wire::Delta { requests, responses }
            }
        };
        Self {
            wire,
            protocol,
            names: BTreeMap::new(),
            accepted: BTreeMap::new(),
        }
    }

    /// A server over `cache` and one stream to it.
    pub async fn start(cache: SnapshotCache, protocol: Protocol) -> Self {
        let (addr, _) = serve(cache).await;
        Self::connect(addr, protocol).await
    }

    /// Sends a raw state-of-the-world request (panics on a delta stream).
    pub async fn send_sotw(&self, request: DiscoveryRequest) {
        match &self.wire {
            Wire::StateOfTheWorld { requests, .. } => requests.send(request).await.expect("stream open"),
            Wire::Delta { .. } => panic!("a state-of-the-world request on a delta stream"),
        }
    }

    /// Sends a raw delta request (panics on a state-of-the-world stream).
    pub async fn send_delta(&self, request: DeltaDiscoveryRequest) {
        match &self.wire {
            Wire::Delta { requests, .. } => requests.send(request).await.expect("stream open"),
            Wire::StateOfTheWorld { .. } => panic!("a delta request on a state-of-the-world stream"),
        }
    }

    /// Asks for `names` of `type_url` (empty: the wildcard), with `node` (None: the test node).
    pub async fn subscribe_as(&mut self, node: Node, type_url: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        match self.protocol {
            Protocol::StateOfTheWorld => {
                self.names.insert(type_url.into(), names.clone());
                let request = DiscoveryRequest {
                    node: Some(node),
                    type_url: type_url.into(),
                    resource_names: names,
                    version_info: self.accepted.get(type_url).cloned().unwrap_or_default(),
                    ..Default::default()
                };
                self.send_sotw(request).await
            }
            Protocol::Delta => {
                let request = DeltaDiscoveryRequest {
                    node: Some(node),
                    type_url: type_url.into(),
                    resource_names_subscribe: names,
                    ..Default::default()
                };
                self.send_delta(request).await
            }
        }
    }

    /// Asks for `names` of `type_url` (empty: the wildcard).
    pub async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.subscribe_as(node(), type_url, names).await
    }

    /// Accepts `pushed`.
    pub async fn ack(&mut self, pushed: &Pushed) {
        self.answer(pushed, None).await
    }

    /// Rejects `pushed` with `message`.
    pub async fn nack(&mut self, pushed: &Pushed, message: &str) {
        let error = Status {
            code: 3,
            message: message.into(),
            ..Default::default()
        };
        self.answer(pushed, Some(error)).await
    }

    async fn answer(&mut self, pushed: &Pushed, error: Option<Status>) {
        let type_url = pushed.type_url.as_str();
        match self.protocol {
            Protocol::StateOfTheWorld => {
                if error.is_none() {
                    self.accepted.insert(type_url.into(), pushed.version.clone());
                }
                let request = DiscoveryRequest {
                    node: Some(node()),
                    type_url: type_url.into(),
                    resource_names: self.names.get(type_url).cloned().unwrap_or_default(),
                    version_info: self.accepted.get(type_url).cloned().unwrap_or_default(),
                    response_nonce: pushed.nonce.clone(),
                    error_detail: error,
                    ..Default::default()
                };
                self.send_sotw(request).await
            }
            Protocol::Delta => {
                let request = DeltaDiscoveryRequest {
                    type_url: type_url.into(),
                    response_nonce: pushed.nonce.clone(),
                    error_detail: error,
                    ..Default::default()
                };
                self.send_delta(request).await
            }
        }
    }

    async fn receive(&mut self, wait: Duration) -> Option<Result<Pushed, tonic::Status>> {
        let next = async {
            match &mut self.wire {
                Wire::StateOfTheWorld { responses, .. } => responses.next().await.map(|r| r.map(Pushed::from)),
                Wire::Delta { responses, .. } => responses.next().await.map(|r| r.map(Pushed::from)),
            }
        };
        tokio::time::timeout(wait, next).await.ok().flatten()
    }

    /// The next response (within 5 s).
    pub async fn next(&mut self) -> Pushed {
        self.receive(Duration::from_secs(5))
            .await
            .expect("a response within 5 s, stream open")
            .expect("no error")
    }

    /// The error that ends the stream (within 5 s).
    pub async fn error(&mut self) -> tonic::Status {
        self.receive(Duration::from_secs(5))
            .await
            .expect("an answer within 5 s")
            .expect_err("refused")
    }

    /// Asserts no response arrives within `wait`.
    pub async fn nothing_for(&mut self, wait: Duration) {
        if let Some(response) = self.receive(wait).await {
            panic!("unexpected response: {response:?}");
        }
    }
}

//! The ADS server against a real gRPC client: the order and content of responses, ACKs,
//! an endpoint-only change sending only EDS, and a NACKed version not being resent.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use controller::{
    translate::{Settings, translate},
    xds::{
        Snapshot, SnapshotCache,
        ads::{AdsService, XdsStats},
        snapshot::{CLUSTER, ENDPOINT, LISTENER, ROUTE},
    },
};
use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, DiscoveryResponse, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::{
        protobuf::{Struct, Value, value::Kind},
        rpc::Status,
    },
};
use kgw_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

const ROLE: &str = "default~gw";

fn proxy() -> pb::Proxy {
    let yaml = "
metadata: {namespace: default, name: gw}
listeners:
- name: listener~8080
  bindAddress: 127.0.0.1
  bindPort: 8080
  httpListener:
    virtualHosts:
    - name: all
      domains: ['*']
      routes:
      - name: r
        matchers: [{prefix: /}]
        routeAction: {single: {upstream: {kind: Upstream, namespace: default, name: default-echo-80}}}
";
    serde_yaml::from_str(yaml).expect("proxy yaml")
}

fn upstream(endpoint: &str) -> BTreeMap<String, pb::Upstream> {
    let upstream = pb::Upstream {
        metadata: Some(pb::Metadata {
            namespace: "default".into(),
            name: "default-echo-80".into(),
            ..Default::default()
        }),
        upstream_type: Some(pb::upstream::UpstreamType::Kube(pb::KubeUpstream {
            service_name: "echo".into(),
            service_namespace: "default".into(),
            service_port: 80,
            endpoints: vec![pb::Endpoint {
                address: endpoint.into(),
                port: 9000,
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    BTreeMap::from([("default.default-echo-80".to_string(), upstream)])
}

fn snapshot(endpoint: &str) -> Arc<Snapshot> {
    let settings = Settings {
        access_log_addresses: Vec::new(),
        wasm: Default::default(),
        proxy_tls: None,
    };
    let (resources, problems) = translate(&proxy(), &upstream(endpoint), &settings);
    assert!(problems.is_empty(), "{problems:?}");
    Arc::new(Snapshot::new(&resources))
}

fn node() -> Node {
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

fn request(type_url: &str, names: &[&str], ack: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node()),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

struct Envoy {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
}

impl Envoy {
    async fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.expect("stream open");
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.responses.next())
            .await
            .expect("a response within 5 s")
            .expect("stream open")
            .expect("no error")
    }

    async fn nothing_for(&mut self, wait: Duration) {
        if let Ok(Some(response)) = tokio::time::timeout(wait, self.responses.next()).await {
            panic!("unexpected response: {:?}", response.map(|r| r.type_url));
        }
    }
}

async fn connect(cache: SnapshotCache) -> Envoy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = AdsService::new(cache, Arc::new(XdsStats::default())).into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (requests, rx) = mpsc::channel(16);
    let responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    Envoy { requests, responses }
}

#[tokio::test]
async fn serves_subscribes_acks_and_sends_only_what_changed() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let mut envoy = connect(cache.clone()).await;

    envoy.send(request(CLUSTER, &[], None)).await;
    let cds = envoy.next().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(cds.resources.len(), 1, "one cluster per upstream a route uses");
    envoy.send(request(LISTENER, &[], None)).await;
    let lds = envoy.next().await;
    assert_eq!(lds.type_url, LISTENER);
    envoy.send(request(CLUSTER, &[], Some(&cds))).await;
    envoy.send(request(LISTENER, &[], Some(&lds))).await;
    envoy.send(request(ENDPOINT, &["default-echo-80_default"], None)).await;
    let eds = envoy.next().await;
    assert_eq!((eds.type_url.as_str(), eds.resources.len()), (ENDPOINT, 1));
    envoy.send(request(ROUTE, &["listener~8080"], None)).await;
    let rds = envoy.next().await;
    assert_eq!((rds.type_url.as_str(), rds.resources.len()), (ROUTE, 1));
    envoy
        .send(request(ENDPOINT, &["default-echo-80_default"], Some(&eds)))
        .await;
    envoy.send(request(ROUTE, &["listener~8080"], Some(&rds))).await;
    envoy.nothing_for(Duration::from_millis(300)).await;

    // An endpoint change: only EDS is sent.
    cache.set(ROLE, Some(snapshot("10.0.0.2")));
    let eds2 = envoy.next().await;
    assert_eq!(eds2.type_url, ENDPOINT);
    assert_ne!(eds2.version_info, eds.version_info);
    envoy.nothing_for(Duration::from_millis(300)).await;

    // Envoy rejects it: that version is not sent again, and the stream carries on.
    let mut nack = request(ENDPOINT, &["default-echo-80_default"], None);
    nack.version_info = eds.version_info.clone();
    nack.response_nonce = eds2.nonce.clone();
    nack.error_detail = Some(Status {
        code: 3,
        message: "bad endpoint".into(),
        ..Default::default()
    });
    envoy.send(nack).await;
    envoy.nothing_for(Duration::from_millis(300)).await;
    // A newer version is sent.
    cache.set(ROLE, Some(snapshot("10.0.0.3")));
    let eds3 = envoy.next().await;
    assert_eq!(eds3.type_url, ENDPOINT);
    assert_ne!(eds3.version_info, eds2.version_info);
}

#[tokio::test]
async fn a_node_without_role_is_refused() {
    let mut envoy = connect(SnapshotCache::default()).await;
    let mut anonymous = request(CLUSTER, &[], None);
    anonymous.node = Some(Node {
        id: "no-role".into(),
        ..Default::default()
    });
    envoy.send(anonymous).await;
    let error = tokio::time::timeout(Duration::from_secs(5), envoy.responses.next())
        .await
        .expect("answer")
        .expect("item")
        .expect_err("refused");
    assert!(error.message().contains("role"), "{error}");
}

#[tokio::test]
async fn changes_while_envoy_is_busy_are_coalesced_into_the_latest() {
    let cache = SnapshotCache::default();
    cache.set(ROLE, Some(snapshot("10.0.0.1")));
    let mut envoy = connect(cache.clone()).await;
    envoy.send(request(ENDPOINT, &["default-echo-80_default"], None)).await;
    let first = envoy.next().await;

    // Envoy has not answered `first` yet: two more changes are held back...
    cache.set(ROLE, Some(snapshot("10.0.0.2")));
    cache.set(ROLE, Some(snapshot("10.0.0.3")));
    envoy.nothing_for(Duration::from_millis(300)).await;
    // ...and its ACK brings only the latest.
    envoy
        .send(request(ENDPOINT, &["default-echo-80_default"], Some(&first)))
        .await;
    let latest = envoy.next().await;
    assert_eq!(
        latest.version_info,
        snapshot("10.0.0.3").version(ENDPOINT).expect("eds").to_string()
    );
    envoy
        .send(request(ENDPOINT, &["default-echo-80_default"], Some(&latest)))
        .await;
    envoy.nothing_for(Duration::from_millis(300)).await;
}

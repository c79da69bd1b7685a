//! Function discovery against real servers on loopback: hyper serving Swagger 2 JSON at a
//! usual path, OpenAPI 3 YAML at an annotated path, nothing at all; tonic serving gRPC
//! reflection v1, and v1alpha only. Each server stops when its test ends.
#![forbid(unsafe_code)]

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use discovery::fds::{
    self, Detector, FdsError, Hints, ProbeConfig, Prober, Target,
    schedule::{Schedule, ScheduleConfig},
};
use kgw_proto::v1::function::Spec;
use prost::Message as _;
use support::http_server;
use tokio::net::TcpListener;

fn target(addr: SocketAddr) -> Target {
    Target {
        upstream: "test-upstream".into(),
        addresses: vec![addr],
        lambda: None,
    }
}

/// Short timeouts: everything is on loopback.
fn config() -> ProbeConfig {
    ProbeConfig {
        request_timeout: Duration::from_millis(500),
        probe_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

const SWAGGER2: &str = r#"{
  "swagger": "2.0",
  "info": {"title": "pets", "version": "1"},
  "basePath": "/api",
  "paths": {
    "/pets": {
      "get": {"operationId": "listPets", "parameters": [{"name": "limit", "in": "query", "type": "integer"}]},
      "post": {"parameters": [{"name": "pet", "in": "body", "required": true, "schema": {"type": "object"}}]}
    },
    "/pets/{id}": {"delete": {"operationId": "deletePet", "parameters": [{"name": "id", "in": "path", "required": true, "type": "string"}]}}
  }
}"#;

const OPENAPI3_YAML: &str = r#"
openapi: 3.0.3
info: {title: orders, version: "2"}
paths:
  /orders/{orderId}:
    get:
      operationId: getOrder
      parameters:
        - {name: orderId, in: path, required: true, schema: {type: string}}
        - {name: expand, in: query, schema: {type: boolean}}
      responses:
        200: {description: ok}
"#;

#[tokio::test]
async fn swagger2_json_at_a_usual_path() {
    let server = http_server(&[("/swagger.json", SWAGGER2)]).await;
    let result = Prober::new(config())
        .probe(&target(server.addr), &Hints::default())
        .await;
    assert_eq!(result.detector, Some(Detector::OpenApi), "{:?}", result.error);
    assert_eq!(result.source, format!("http://{}/swagger.json", server.addr));
    let summary: Vec<(String, String, String)> = result
        .functions
        .iter()
        .map(|f| match &f.spec {
            Some(Spec::Openapi(o)) => (f.name.clone(), o.method.clone(), o.path.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected = [
        ("deletePet", "DELETE", "/api/pets/{id}"),
        ("listPets", "GET", "/api/pets"),
        ("post_pets", "POST", "/api/pets"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(summary, expected);
    assert!(result.descriptors.is_empty());
    // The paths before it in the list were asked first.
    let asked = server.asked.lock().expect("lock").clone();
    assert_eq!(asked, ["/openapi.json", "/swagger.json"]);
}

#[tokio::test]
async fn openapi3_yaml_at_the_annotated_path() {
    let server = http_server(&[("/internal/spec.yaml", OPENAPI3_YAML)]).await;
    let hints = Hints {
        openapi_path: Some("/internal/spec.yaml".into()),
        http2: false,
        tls: None,
    };
    let result = fds::probe(&target(server.addr), &hints, &config()).await;
    assert_eq!(result.detector, Some(Detector::OpenApi), "{:?}", result.error);
    assert_eq!(result.functions.len(), 1);
    let Some(Spec::Openapi(get)) = &result.functions[0].spec else {
        panic!("openapi")
    };
    assert_eq!(result.functions[0].name, "getOrder");
    let params: Vec<_> = get
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.location.as_str(), p.required, p.r#type.as_str()))
        .collect();
    assert_eq!(
        params,
        [
            ("orderId", "path", true, "string"),
            ("expand", "query", false, "boolean")
        ]
    );
    assert_eq!(server.asked.lock().expect("lock").as_slice(), ["/internal/spec.yaml"]);
}

#[tokio::test]
async fn a_server_with_nothing_is_backed_off() {
    let server = http_server(&[("/swagger.json", "<html>not a document</html>")]).await;
    let target = target(server.addr);
    let hints = Hints::default();
    let result = fds::probe(&target, &hints, &config()).await;
    assert!(!result.found());
    assert!(result.functions.is_empty());
    // Every usual path was asked once, then reflection failed (an HTTP/1-only server).
    assert_eq!(server.asked.lock().expect("lock").len(), fds::WELL_KNOWN_PATHS.len());
    assert!(
        matches!(result.error, Some(FdsError::Grpc { .. })),
        "{:?}",
        result.error
    );

    let mut schedule = Schedule::new(ScheduleConfig::default());
    let t0 = Instant::now();
    schedule.observe("test-upstream", target.fingerprint(&hints), t0);
    let (name, probed) = schedule.take_due(t0).remove(0);
    schedule.finished(&name, &probed, result.detector, t0);
    let next = schedule.next_due().expect("scheduled") - t0;
    assert!(
        next >= Duration::from_secs(30) && next <= Duration::from_secs(33),
        "{next:?}"
    );
}

#[tokio::test]
async fn refused_and_silent_addresses_end_quickly() {
    // Refused: a port nothing listens on any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed = listener.local_addr().expect("addr");
    drop(listener);
    let started = Instant::now();
    let result = fds::probe(&target(closed), &Hints::default(), &config()).await;
    assert!(!result.found());
    assert!(
        matches!(result.error, Some(FdsError::Http { .. })),
        "{:?}",
        result.error
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Silent: accepts, never answers. Each detector gives up after its request timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let result = fds::probe(&target(addr), &Hints::default(), &config()).await;
    hold.abort();
    assert!(!result.found());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn documents_over_the_cap_are_refused() {
    let big = format!(
        "{}, \"x-pad\": \"{}\"}}",
        &SWAGGER2[..SWAGGER2.len() - 1],
        "a".repeat(4096)
    );
    let server = http_server(&[("/swagger.json", big.as_str())]).await;
    let mut small = config();
    small.max_body_bytes = 2048;
    let result = fds::probe(&target(server.addr), &Hints::default(), &small).await;
    assert!(!result.found());
    small.max_body_bytes = 1 << 20;
    let result = fds::probe(&target(server.addr), &Hints::default(), &small).await;
    assert_eq!(result.functions.len(), 3, "{:?}", result.error);
}

// ---- gRPC reflection -------------------------------------------------------------------

const TYPES_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
message Item { string id = 1; string name = 2; }
message GetItemRequest { string id = 1; }
"#;

const SHOP_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
import "google/protobuf/empty.proto";
import "shop/v1/types.proto";
service Catalog {
  rpc GetItem(GetItemRequest) returns (Item);
  rpc WatchItems(google.protobuf.Empty) returns (stream Item);
  rpc Upload(stream Item) returns (google.protobuf.Empty);
}
"#;

/// The shop protos compiled at run time (protox, no protoc), with their imports.
fn shop_descriptors() -> prost_types::FileDescriptorSet {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("shop/v1")).expect("mkdir");
    std::fs::write(dir.path().join("shop/v1/types.proto"), TYPES_PROTO).expect("write");
    std::fs::write(dir.path().join("shop/v1/shop.proto"), SHOP_PROTO).expect("write");
    protox::compile(["shop/v1/shop.proto"], [dir.path()]).expect("compiles")
}

/// A tonic server with only the reflection service (v1 or v1alpha), describing the shop
/// protos. Stops when the returned sender is dropped.
async fn grpc_server(v1: bool) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let builder = tonic_reflection::server::Builder::configure().register_file_descriptor_set(shop_descriptors());
    let router = if v1 {
        tonic::transport::Server::builder().add_service(builder.build_v1().expect("v1"))
    } else {
        tonic::transport::Server::builder().add_service(builder.build_v1alpha().expect("v1alpha"))
    };
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// `http2`: the port's appProtocol says so (reflection first); else the OpenAPI paths are
/// asked first, of a server that speaks only HTTP/2.
async fn check_reflection(v1: bool, http2: bool) {
    let (addr, _stop) = grpc_server(v1).await;
    let hints = Hints {
        openapi_path: None,
        http2,
        tls: None,
    };
    let result = fds::probe(&target(addr), &hints, &config()).await;
    assert_eq!(result.detector, Some(Detector::Grpc), "{:?}", result.error);
    let version = if v1 {
        "grpc.reflection.v1)"
    } else {
        "grpc.reflection.v1alpha)"
    };
    assert!(result.source.ends_with(version), "{}", result.source);
    let summary: Vec<(String, String, String, bool, bool)> = result
        .functions
        .iter()
        .map(|f| match &f.spec {
            Some(Spec::Grpc(g)) => (
                f.name.clone(),
                g.input_type.clone(),
                g.output_type.clone(),
                g.client_streaming,
                g.server_streaming,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected = [
        (
            "shop.v1.Catalog/GetItem",
            "shop.v1.GetItemRequest",
            "shop.v1.Item",
            false,
            false,
        ),
        (
            "shop.v1.Catalog/Upload",
            "shop.v1.Item",
            "google.protobuf.Empty",
            true,
            false,
        ),
        (
            "shop.v1.Catalog/WatchItems",
            "google.protobuf.Empty",
            "shop.v1.Item",
            false,
            true,
        ),
    ]
    .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), d, e));
    assert_eq!(summary, expected);
    assert!(result.functions.iter().all(|f| f.kind == "grpc"));
    // The whole closure, dependencies first, and nothing of the reflection service.
    let set = prost_types::FileDescriptorSet::decode(result.descriptors.as_slice()).expect("descriptor set");
    let files: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    assert_eq!(
        files,
        [
            "google/protobuf/empty.proto",
            "shop/v1/types.proto",
            "shop/v1/shop.proto"
        ]
    );
}

#[tokio::test]
async fn grpc_reflection_v1() {
    check_reflection(true, true).await;
}

#[tokio::test]
async fn grpc_reflection_v1alpha_only_without_a_hint() {
    check_reflection(false, false).await;
}

#[tokio::test]
async fn grpc_first_when_the_port_says_http2_and_openapi_still_tried() {
    // A gRPC hint on an HTTP/1 server: reflection fails, the document is still found.
    let server = http_server(&[("/openapi.json", SWAGGER2)]).await;
    let hints = Hints {
        openapi_path: None,
        http2: true,
        tls: None,
    };
    let result = fds::probe(&target(server.addr), &hints, &config()).await;
    assert_eq!(result.detector, Some(Detector::OpenApi), "{:?}", result.error);
}

#[tokio::test]
async fn a_refusing_address_moves_on_to_the_next() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed = listener.local_addr().expect("addr");
    drop(listener);
    let server = http_server(&[("/swagger.json", SWAGGER2)]).await;
    let target = Target {
        upstream: "two-pods".into(),
        addresses: vec![closed, server.addr],
        lambda: None,
    };
    let result = fds::probe(&target, &Hints::default(), &config()).await;
    assert_eq!(result.detector, Some(Detector::OpenApi), "{:?}", result.error);
    assert_eq!(result.source, format!("http://{}/swagger.json", server.addr));
}

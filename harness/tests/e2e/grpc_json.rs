//! JSON over HTTP to a gRPC service, through Envoy: a real tonic server with server
//! reflection behind a Service whose port says `appProtocol: grpc`; discovery finds its
//! methods by reflection, and the controller configures Envoy's gRPC-JSON transcoder with
//! the descriptors it read, so `POST /test.v1.Greeter/SayHello {"name": ...}` answers JSON.
use std::{convert::Infallible, net::SocketAddr, time::Duration};

use kgw_harness::{Method, SystemConfig, request, wait_for, write_manifest_atomically};
use tonic::codegen::{BoxFuture, Service, http};

use crate::support::{WAIT, config_dir, route_yaml, start_with};

const PROTO: &str = r#"syntax = "proto3";
package test.v1;
service Greeter { rpc SayHello(HelloRequest) returns (HelloReply); }
message HelloRequest { string name = 1; }
message HelloReply { string message = 1; int32 count = 2; }
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(int32, tag = "2")]
    count: i32,
}

/// `test.v1.Greeter`, written by hand (what tonic's codegen would write).
#[derive(Clone)]
struct Greeter;

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "test.v1.Greeter";
}

struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<tonic::Response<HelloReply>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        Box::pin(async move {
            let name = request.into_inner().name;
            Ok(tonic::Response::new(HelloReply {
                message: format!("hello {name}"),
                count: name.len() as i32,
            }))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() == "/test.v1.Greeter/SayHello" {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                return Ok(grpc.unary(SayHello, request).await);
            }
            Ok(tonic::Status::unimplemented("no such method").into_http())
        })
    }
}

fn descriptors() -> prost_types::FileDescriptorSet {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("test/v1")).expect("mkdir");
    std::fs::write(dir.path().join("test/v1/greeter.proto"), PROTO).expect("write");
    protox::compile(["test/v1/greeter.proto"], [dir.path()]).expect("compiles")
}

/// The greeter and the reflection service (v1) on `addr`, until the test ends.
async fn grpc_server(addr: SocketAddr) {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(descriptors())
        .build_v1()
        .expect("reflection");
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the gRPC server");
    let incoming = futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(stream, _)| stream), listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Greeter)
            .add_service(reflection)
            .serve_with_incoming(incoming),
    );
}

/// A Service whose port speaks gRPC (so the Upstream is HTTP/2 and reflection is tried
/// first), its EndpointSlice on `addr`.
fn grpc_service_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: greeter, namespace: default}}
spec: {{ports: [{{name: grpc, port: 80, targetPort: {port}, appProtocol: grpc}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: greeter-1
  namespace: default
  labels: {{kubernetes.io/service-name: greeter}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, appProtocol: grpc}}]
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
",
        port = addr.port(),
        ip = addr.ip()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn json_over_http_reaches_a_grpc_method_discovery_found() -> anyhow::Result<()> {
    let running = start_with(&[], SystemConfig::default()).await?;
    let system = &running.system;
    let addr = system.layout().backend(1);
    grpc_server(addr).await;
    let dir = config_dir(system);
    write_manifest_atomically(dir, "greeter.yaml", &grpc_service_yaml(addr))?;
    write_manifest_atomically(dir, "route.yaml", &route_yaml("greeter", "/", &[("greeter", 1)]))?;
    let url = system.url("/test.v1.Greeter/SayHello");
    let answer = wait_for(WAIT + Duration::from_secs(10), || async {
        let response = request(
            Method::POST,
            &url,
            None,
            &[("content-type", "application/json")],
            r#"{"name": "kgw"}"#,
        )
        .await?;
        // Before discovery found the methods, the JSON reaches the server as it is (and
        // gRPC answers 200 with an error in its trailers).
        anyhow::ensure!(
            response.status.as_u16() == 200 && response.header("content-type") == "application/json",
            "not transcoded yet: {} {} {}",
            response.status,
            response.header("content-type"),
            response.text()
        );
        Ok(response)
    })
    .await?;
    assert_eq!(answer.header("content-type"), "application/json");
    let body = answer.json()?;
    assert_eq!(body["message"], "hello kgw", "{body}");
    assert_eq!(body["count"], 3, "{body}");
    // A method the service does not have: 404 from the transcoder.
    let missing = request(
        Method::POST,
        &system.url("/test.v1.Greeter/Nope"),
        None,
        &[("content-type", "application/json")],
        "{}",
    )
    .await?;
    assert_eq!(missing.status.as_u16(), 404, "{}", missing.text());
    Ok(())
}

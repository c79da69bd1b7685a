//! Function discovery over TLS, against a real TLS hyper server (rustls, a certificate of
//! a test CA made with rcgen) that serves a Swagger document:
//! - the prober speaks TLS when the hints say so, sends the SNI they name, verifies the
//!   certificate against the system's roots (so a private CA fails) unless told to skip,
//!   and a plaintext probe of a TLS port finds nothing;
//! - the `discovery` binary, trusting the test CA through `SSL_CERT_FILE`, probes a
//!   Service port named `https` (443) with the Service's cluster DNS name as SNI, one with
//!   appProtocol `https`, and a static Upstream with `useTls` and `sniAddr`, and writes
//!   their functions.
#![forbid(unsafe_code)]

mod support;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use discovery::fds::{self, Detector, Hints, ProbeConfig, Target, TlsHint};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{DiscoveryBuckets, NatsServer, eventually, function_names, probe_status, run_system, start_discovery};

const WAIT: Duration = Duration::from_secs(30);

const SWAGGER: &str = r#"{"swagger": "2.0", "info": {"title": "pets", "version": "1"},
  "paths": {"/pets": {"get": {"operationId": "listPets"}, "post": {"operationId": "addPet"}}}}"#;

/// A test CA and a serving certificate for `names`.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = leaf.signed_by(&key, &issuer).expect("certificate");
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone(), ca_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A hyper HTTP/1.1 server behind rustls: fixed bodies by path (404 otherwise); records
/// the SNI of each connection and the paths asked. Stops when dropped.
struct TlsServer {
    addr: SocketAddr,
    server_names: Arc<Mutex<Vec<String>>>,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_server(pki: &Pki, routes: &[(&str, &str)]) -> TlsServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let routes: Arc<BTreeMap<String, String>> =
        Arc::new(routes.iter().map(|(p, b)| (p.to_string(), b.to_string())).collect());
    let server_names: Arc<Mutex<Vec<String>>> = Arc::default();
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (names, recorded) = (server_names.clone(), asked.clone());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, routes, names, recorded) =
                (acceptor.clone(), routes.clone(), names.clone(), recorded.clone());
            connections.spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = stream.get_ref().1.server_name().unwrap_or("").to_string();
                names.lock().expect("lock").push(sni);
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let path = request.uri().path().to_string();
                    recorded.lock().expect("lock").push(path.clone());
                    let response = match routes.get(&path) {
                        Some(body) => Response::new(Full::new(Bytes::from(body.clone()))),
                        None => {
                            let mut response = Response::new(Full::new(Bytes::from_static(b"not found")));
                            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                            response
                        }
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        server_names,
        asked,
        task,
    }
}

fn config(skip_verify: bool) -> ProbeConfig {
    ProbeConfig {
        request_timeout: Duration::from_secs(3),
        probe_timeout: Duration::from_secs(10),
        tls_insecure_skip_verify: skip_verify,
        ..Default::default()
    }
}

fn target(addr: SocketAddr) -> Target {
    Target {
        upstream: "tls-upstream".into(),
        addresses: vec![addr],
        lambda: None,
    }
}

fn tls_hints(server_name: &str) -> Hints {
    Hints {
        tls: Some(Arc::new(TlsHint {
            server_names: Vec::new(),
            server_name: Some(server_name.into()),
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_prober_speaks_tls_verifies_and_sends_the_sni() {
    let name = "pets.default.svc.cluster.local";
    let pki = pki(&[name]);
    let server = tls_server(&pki, &[("/swagger.json", SWAGGER)]).await;

    // Verified against the system's roots: the test CA is not one of them.
    let untrusted = fds::probe(&target(server.addr), &tls_hints(name), &config(false)).await;
    assert!(!untrusted.found(), "{untrusted:?}");
    let error = untrusted.error.as_ref().map(|e| fds::chain(e)).unwrap_or_default();
    // (A machine without any system roots fails one step earlier, as it should.)
    let rejected = error.contains("TLS handshake with pets.default.svc.cluster.local") && error.contains("certificate");
    assert!(
        rejected || error.contains("cannot load the system's TLS roots"),
        "{error}"
    );
    assert!(
        server.asked.lock().expect("lock").is_empty(),
        "nothing is asked over an unverified connection"
    );

    // Skipping verification (the operator's choice): found, over TLS, with the SNI.
    let found = fds::probe(&target(server.addr), &tls_hints(name), &config(true)).await;
    assert_eq!(found.detector, Some(Detector::OpenApi), "{:?}", found.error);
    let names: Vec<&str> = found.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["addPet", "listPets"]);
    assert_eq!(found.source, format!("https://{}/swagger.json", server.addr));
    assert!(server.server_names.lock().expect("lock").iter().all(|n| n == name));

    // A per-address name wins over the upstream's.
    let per_address = Hints {
        tls: Some(Arc::new(TlsHint {
            server_names: vec![(server.addr, "static.example".into())],
            server_name: Some(name.into()),
        })),
        ..Default::default()
    };
    server.server_names.lock().expect("lock").clear();
    let found = fds::probe(&target(server.addr), &per_address, &config(true)).await;
    assert!(found.found(), "{:?}", found.error);
    assert_eq!(server.server_names.lock().expect("lock")[0], "static.example");

    // Plaintext to a TLS port finds nothing.
    let plain = fds::probe(&target(server.addr), &Hints::default(), &config(false)).await;
    assert!(!plain.found(), "{plain:?}");
}

/// A Service with one port (named `port_name`) and an EndpointSlice sending it to
/// 127.0.0.1:`target`.
fn service(name: &str, port_name: &str, port: &str, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  ports: [{port}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: {port_name}, port: {target}}}]\n\
         endpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    )
}

#[test]
fn the_discovery_binary_probes_tls_services_and_static_upstreams() {
    let nats = NatsServer::start();
    run_system(Duration::from_secs(120), binary_scenario(nats.url.clone()));
}

async fn binary_scenario(url: String) {
    let names = [
        "pets.default.svc.cluster.local",
        "shop.default.svc.cluster.local",
        "static.example",
    ];
    let pki = pki(&names);
    let server = tls_server(&pki, &[("/swagger.json", SWAGGER)]).await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).expect("mkdir");
    let write = |file: &str, text: String| std::fs::write(config_dir.join(file), text).expect("write");
    // TLS by the port's name and number; by its appProtocol.
    write("pets.yaml", service("pets", "https", "{name: https, port: 443}", port));
    write(
        "shop.yaml",
        service("shop", "web", "{name: web, port: 8443, appProtocol: https}", port),
    );
    write(
        "static.yaml",
        format!(
            "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: pets-static, namespace: default}}\n\
             spec:\n  static:\n    useTls: true\n    hosts: [{{addr: 127.0.0.1, port: {port}, sniAddr: static.example}}]\n"
        ),
    );
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");
    let (_discovery, DiscoveryBuckets { upstreams, probes }) =
        start_discovery(dir.path(), &config_dir, &url, |command| {
            // The test CA is the only root: verification stays on.
            command.env("SSL_CERT_FILE", &ca).env_remove("SSL_CERT_DIR");
        })
        .await;
    let want = vec!["addPet".to_string(), "listPets".to_string()];
    for key in [
        "default.default-pets-443",
        "default.default-shop-8443",
        "default.pets-static",
    ] {
        eventually(WAIT, &format!("functions on {key}"), || async {
            (function_names(&upstreams, key).await.as_ref() == Some(&want)).then_some(())
        })
        .await;
        let status = eventually(WAIT, &format!("the probe status of {key}"), || async {
            probe_status(&probes, key).await.filter(|s| s.functions == 2)
        })
        .await;
        assert_eq!(
            status.source,
            format!("https://{}/swagger.json", server.addr),
            "{status:?}"
        );
    }
    let mut sent: Vec<String> = server.server_names.lock().expect("lock").clone();
    sent.sort();
    sent.dedup();
    assert_eq!(sent, names, "the SNI of each");
}

// ---- gRPC reflection over TLS ---------------------------------------------------------

const SHOP_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
message Item { string id = 1; }
service Catalog { rpc GetItem(Item) returns (Item); }
"#;

/// A rustls server stream that tonic's server accepts.
struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A tonic server with reflection v1, over TLS (ALPN h2) only. Stops when the returned
/// sender is dropped.
async fn grpc_tls_server(pki: &Pki) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if let Ok(stream) = acceptor.accept(stream).await {
                return Some((Ok::<_, std::io::Error>(TlsConn(stream)), (listener, acceptor)));
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("shop/v1")).expect("mkdir");
    std::fs::write(dir.path().join("shop/v1/shop.proto"), SHOP_PROTO).expect("write");
    let descriptors = protox::compile(["shop/v1/shop.proto"], [dir.path()]).expect("compiles");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(descriptors)
        .build_v1()
        .expect("v1");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder().add_service(reflection);
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn grpc_reflection_over_tls() {
    let pki = pki(&["grpc.example"]);
    let (addr, _stop) = grpc_tls_server(&pki).await;
    let hints = Hints {
        http2: true,
        ..tls_hints("grpc.example")
    };
    let result = fds::probe(&target(addr), &hints, &config(true)).await;
    assert_eq!(result.detector, Some(Detector::Grpc), "{:?}", result.error);
    let names: Vec<&str> = result.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["shop.v1.Catalog/GetItem"]);
    assert!(result.source.ends_with("over TLS to grpc.example"), "{}", result.source);
    assert!(!result.descriptors.is_empty());
    // h2c to a TLS-only port finds nothing.
    let plain = Hints {
        http2: true,
        ..Default::default()
    };
    assert!(!fds::probe(&target(addr), &plain, &config(true)).await.found());
}

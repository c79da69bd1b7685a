//! The webhook over real HTTPS, with AdmissionReview JSON in the shapes the API server
//! sends (defaults filled in, managedFields, last-applied annotation, options, userInfo),
//! and a fake controller.
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use kgw_common::shutdown::Shutdown;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_rustls::{TlsConnector, rustls};

use super::{
    Webhook,
    review::{AdmissionResponse, AdmissionReview},
    server::{self, Tls},
};
use crate::{
    translate::Options,
    validation::{
        Policy,
        testing::{BASE, FakeValidator, index},
    },
};

const DENY: Policy = Policy {
    always_accept: false,
    allow_warnings: true,
};
const DENY_WARNINGS: Policy = Policy {
    always_accept: false,
    allow_warnings: false,
};
const ACCEPT: Policy = Policy {
    always_accept: true,
    allow_warnings: true,
};

/// A webhook on 127.0.0.1 (a free port) over the BASE config, with a generated certificate.
struct Server {
    addr: SocketAddr,
    certificate: CertificateDer<'static>,
    fake: FakeValidator,
    _stop: StopOnDrop,
}

struct StopOnDrop(Shutdown);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

async fn serve_with(policy: Policy, fake: FakeValidator, config: &str) -> Server {
    let (_index_tx, index_rx) = watch::channel(Arc::new(index(config)));
    let (_synced_tx, synced_rx) = watch::channel(true);
    let webhook = Webhook::new(fake.clone(), Options::default(), policy, index_rx, synced_rx);
    let any_port = "127.0.0.1:0".parse().expect("addr");
    let tls = Tls::load(None, None, any_port).expect("generated certificate");
    let listener = server::bind(any_port, &tls).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let stop = Shutdown::new();
    server::spawn(listener, Arc::new(webhook), stop.clone());
    Server {
        addr,
        certificate: tls.certificate,
        fake,
        _stop: StopOnDrop(stop),
    }
}

async fn serve(policy: Policy) -> Server {
    serve_with(policy, FakeValidator::default(), BASE).await
}

impl Server {
    /// POSTs `body` to `path` over HTTPS, trusting only the server's certificate.
    async fn post(&self, path: &str, body: String) -> (StatusCode, Bytes) {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.certificate.clone())
            .expect("trust the generated certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the generated certificate");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http handshake");
        tokio::spawn(connection);
        let request = Request::post(format!("{path}?timeout=10s"))
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    /// Posts an AdmissionReview to /validation; the response for its uid.
    async fn review(&self, review: Value) -> AdmissionResponse {
        let uid = review["request"]["uid"].as_str().expect("uid").to_string();
        let (status, body) = self.post("/validation", review.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: AdmissionReview = serde_json::from_slice(&body).expect("an AdmissionReview");
        assert_eq!(answer.api_version, "admission.k8s.io/v1");
        assert_eq!(answer.kind, "AdmissionReview");
        let response = answer.response.expect("a response");
        assert_eq!(response.uid, uid, "the response carries the request's uid");
        response
    }
}

/// An HTTPRoute as the API server holds it: CRD defaults filled in, server-set metadata.
fn route_object(name: &str, path_type: &str, path: &str, service: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "0b6e3c5e-3f5c-4d2b-9f5e-2f1d7d4f8a11",
            "generation": 1,
            "resourceVersion": "4242",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"gateway.networking.k8s.io/v1\",\"kind\":\"HTTPRoute\"}\n"
            },
            "managedFields": [{
                "apiVersion": "gateway.networking.k8s.io/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:parentRefs": {}, "f:rules": {}}},
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "time": "2024-05-01T10:00:00Z"
            }]
        },
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "http"}],
            "rules": [{
                "matches": [{"path": {"type": path_type, "value": path}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": 80, "weight": 1}]
            }]
        }
    })
}

fn gvk(group: &str, kind: &str) -> Value {
    json!({"group": group, "version": "v1", "kind": kind})
}

fn gvr(group: &str, resource: &str) -> Value {
    json!({"group": group, "version": "v1", "resource": resource})
}

/// An AdmissionReview as the API server posts it.
fn admission(operation: &str, kind: Value, resource: Value, name: &str, object: Value, old: Value) -> Value {
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("705ab4f5-6393-11e8-b7cc-{:012x}", name.len() * 7919),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": name,
            "namespace": "default",
            "operation": operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["kubeadm:cluster-admins", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=5fd8"]}
            },
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind, "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"}
        }
    })
}

fn create_route(object: Value) -> Value {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    admission(
        "CREATE",
        gvk("gateway.networking.k8s.io", "HTTPRoute"),
        gvr("gateway.networking.k8s.io", "httproutes"),
        &name,
        object,
        Value::Null,
    )
}

fn message(response: &AdmissionResponse) -> String {
    response.status.as_ref().map(|s| s.message.clone()).unwrap_or_default()
}

#[tokio::test]
async fn valid_route_is_allowed() {
    let server = serve(DENY_WARNINGS).await;
    let response = server
        .review(create_route(route_object("new", "PathPrefix", "/new", "echo")))
        .await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.status, None);
    assert_eq!(response.warnings, Vec::<String>::new());
    assert_eq!(server.fake.calls(), 1, "the changed Proxy was dry-run");
}

#[tokio::test]
async fn invalid_regex_is_denied_only_without_always_accept() {
    let review = create_route(route_object("bad-regex", "RegularExpression", "/([", "echo"));
    let response = serve(DENY).await.review(review.clone()).await;
    assert!(!response.allowed);
    let status = response.status.clone().expect("status");
    assert_eq!(status.code, 422);
    let text = message(&response);
    assert!(
        text.starts_with("HTTPRoute/default/bad-regex denied by kgw validation: 1 error(s):"),
        "{text}"
    );
    assert!(text.contains("HTTPRoute/default/bad-regex (listener/"), "{text}");
    assert!(text.contains("invalid regex \"/([\""), "{text}");

    let response = serve(ACCEPT).await.review(review).await;
    assert!(response.allowed, "alwaysAccept allows and reports");
    assert!(
        response.warnings.iter().any(|w| w.contains("invalid regex")),
        "{:?}",
        response.warnings
    );
}

#[tokio::test]
async fn missing_backend_is_a_warning_denied_only_without_allow_warnings() {
    let review = create_route(route_object("lost", "PathPrefix", "/lost", "nope"));
    let response = serve(DENY_WARNINGS).await.review(review.clone()).await;
    assert!(!response.allowed);
    let text = message(&response);
    assert!(text.contains("1 warning(s) (allowWarnings is false)"), "{text}");
    assert!(text.contains("Service default/nope not found"), "{text}");

    let response = serve(DENY).await.review(review).await;
    assert!(response.allowed, "allowWarnings: {response:?}");
    assert_eq!(response.warnings.len(), 1, "{:?}", response.warnings);
    assert!(
        response.warnings[0].starts_with(
            "warning: HTTPRoute/default/lost: parent Gateway default/gw/http: ResolvedRefs is False (BackendNotFound)"
        ),
        "{}",
        response.warnings[0]
    );
}

#[tokio::test]
async fn dry_run_requests_are_validated_the_same() {
    let mut review = create_route(route_object("bad-regex", "RegularExpression", "/([", "echo"));
    review["request"]["dryRun"] = json!(true);
    let server = serve(DENY).await;
    let response = server.review(review).await;
    assert!(!response.allowed);
    assert!(message(&response).contains("invalid regex"));
}

#[tokio::test]
async fn status_only_updates_are_skipped() {
    // Even a route the controller would refuse: a status update is not a config change.
    let old = route_object("bad-regex", "RegularExpression", "/([", "echo");
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = json!("4243");
    new["status"] = json!({"parents": [{
        "parentRef": {"name": "gw"},
        "controllerName": "kgateway.dev/kgateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2024-05-01T10:00:01Z", "observedGeneration": 1}]
    }]});
    let review = admission(
        "UPDATE",
        gvk("gateway.networking.k8s.io", "HTTPRoute"),
        gvr("gateway.networking.k8s.io", "httproutes"),
        "bad-regex",
        new,
        old,
    );
    let server = serve(DENY_WARNINGS).await;
    let response = server.review(review).await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(server.fake.calls(), 0, "not validated");
}

#[tokio::test]
async fn a_real_update_is_validated() {
    let old = route_object("existing", "PathPrefix", "/echo", "echo");
    let new = route_object("existing", "RegularExpression", "/([", "echo");
    let review = admission(
        "UPDATE",
        gvk("gateway.networking.k8s.io", "HTTPRoute"),
        gvr("gateway.networking.k8s.io", "httproutes"),
        "existing",
        new,
        old,
    );
    let response = serve(DENY).await.review(review).await;
    assert!(!response.allowed);
    assert!(message(&response).contains("invalid regex"));
}

#[tokio::test]
async fn skip_annotation_allows_without_validation() {
    for annotation in [
        "gateway.kgateway.dev/skip-validation",
        "gateway.solo.io/skip-validation",
    ] {
        let mut object = route_object("bad-regex", "RegularExpression", "/([", "echo");
        object["metadata"]["annotations"][annotation] = json!("true");
        let server = serve(DENY_WARNINGS).await;
        let response = server.review(create_route(object)).await;
        assert!(response.allowed, "{annotation}: {response:?}");
        assert!(
            response.warnings[0].contains("validation skipped"),
            "{:?}",
            response.warnings
        );
        assert_eq!(server.fake.calls(), 0);
    }
}

fn delete_service(name: &str) -> Value {
    let old = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "uid": "5b3c", "resourceVersion": "77", "creationTimestamp": "2024-05-01T09:00:00Z"},
        "spec": {
            "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"], "type": "ClusterIP",
            "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9001}]
        },
        "status": {"loadBalancer": {}}
    });
    admission(
        "DELETE",
        gvk("", "Service"),
        gvr("", "services"),
        name,
        Value::Null,
        old,
    )
}

#[tokio::test]
async fn deleting_a_referenced_service_is_denied() {
    let server = serve(DENY).await;
    let response = server.review(delete_service("echo")).await;
    assert!(!response.allowed);
    let text = message(&response);
    assert!(
        text.starts_with("Service/default/echo denied by kgw validation: 1 error(s), 1 warning(s): Service/default/echo: Service default/echo is still referenced by HTTPRoute default/existing; "),
        "{text}"
    );
    // What the route would become is said too.
    assert!(text.contains("HTTPRoute/default/existing: parent Gateway default/gw/http: ResolvedRefs is False (BackendNotFound): Service default/echo not found"), "{text}");
    let response = server.review(delete_service("unused")).await;
    assert!(response.allowed, "{response:?}");
}

#[tokio::test]
async fn deleting_a_referenced_secret_is_denied() {
    let old = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "tls", "namespace": "default"}, "data": {"tls.crt": "", "tls.key": ""}});
    let review = admission("DELETE", gvk("", "Secret"), gvr("", "secrets"), "tls", Value::Null, old);
    let response = serve(DENY).await.review(review).await;
    assert!(!response.allowed);
    assert!(
        message(&response).contains("Secret default/tls is still referenced by Gateway default/gw (listener https)"),
        "{}",
        message(&response)
    );
}

#[tokio::test]
async fn list_items_are_each_validated() {
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            route_object("good", "PathPrefix", "/good", "echo"),
            route_object("bad-regex", "RegularExpression", "/([", "echo"),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "c", "namespace": "default"}, "spec": {}}
        ]
    });
    let review = admission("CREATE", gvk("", "List"), gvr("", "lists"), "", list, Value::Null);
    let response = serve(DENY).await.review(review).await;
    assert!(!response.allowed);
    let text = message(&response);
    assert!(text.contains("HTTPRoute/default/bad-regex (listener/"), "{text}");
    assert!(!text.contains("HTTPRoute/default/good"), "{text}");
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.contains("kind Deployment is not validated")),
        "{:?}",
        response.warnings
    );
}

#[tokio::test]
async fn a_bad_field_is_denied_naming_it() {
    let mut object = route_object("typo", "PathPrefix", "/typo", "echo");
    object["spec"]["hostname"] = json!(["a.example"]);
    let response = serve(DENY).await.review(create_route(object)).await;
    assert!(!response.allowed);
    let text = message(&response);
    assert!(
        text.contains("HTTPRoute/default/typo: field `spec.hostname`: unknown field"),
        "{text}"
    );
    let mut object = route_object("bad-port", "PathPrefix", "/p", "echo");
    object["spec"]["rules"][0]["backendRefs"][0]["port"] = json!("eighty");
    let text = message(&serve(DENY).await.review(create_route(object)).await);
    assert!(text.contains("field `spec.rules[0].backendRefs[0].port`"), "{text}");
}

#[tokio::test]
async fn unknown_kinds_are_allowed_with_a_warning() {
    let object = json!({"apiVersion": "gateway.solo.io/v1", "kind": "VirtualHostOption",
        "metadata": {"name": "v", "namespace": "default"}, "spec": {}});
    let review = admission(
        "CREATE",
        gvk("gateway.solo.io", "VirtualHostOption"),
        gvr("gateway.solo.io", "virtualhostoptions"),
        "v",
        object,
        Value::Null,
    );
    let response = serve(DENY_WARNINGS).await.review(review).await;
    assert!(response.allowed);
    assert_eq!(
        response.warnings,
        ["kind VirtualHostOption is not validated by kgw yet; allowed"]
    );
}

#[tokio::test]
async fn an_unreachable_controller_denies_only_without_always_accept() {
    let review = create_route(route_object("new", "PathPrefix", "/new", "echo"));
    let server = serve_with(DENY, FakeValidator::down(), BASE).await;
    let response = server.review(review.clone()).await;
    assert!(!response.allowed);
    let status = response.status.clone().expect("status");
    assert_eq!(status.code, 503);
    assert!(
        status
            .message
            .contains("the controller's validation service at 127.0.0.1:9988 is unreachable"),
        "{}",
        status.message
    );
    let server = serve_with(ACCEPT, FakeValidator::down(), BASE).await;
    let response = server.review(review).await;
    assert!(response.allowed);
    assert!(response.warnings[0].contains("unreachable"), "{:?}", response.warnings);
}

#[tokio::test]
async fn a_burst_of_reviews_shares_one_state() {
    let server = serve(DENY).await;
    let reviews = (0..16).map(|i| {
        let route = if i % 2 == 0 {
            route_object(&format!("r{i}"), "PathPrefix", &format!("/r{i}"), "echo")
        } else {
            route_object(&format!("r{i}"), "RegularExpression", "/([", "echo")
        };
        server.review(create_route(route))
    });
    let responses = futures::future::join_all(reviews).await;
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response.allowed, i % 2 == 0, "review {i}: {response:?}");
    }
}

#[tokio::test]
async fn paths_methods_and_bad_bodies() {
    let server = serve(DENY).await;
    let review = create_route(route_object("new", "PathPrefix", "/new", "echo")).to_string();
    let (status, body) = server.post("/validate", review.clone()).await;
    assert_eq!(status, StatusCode::OK, "Gloo's /validation and /validate");
    assert!(serde_json::from_slice::<AdmissionReview>(&body).is_ok());
    let (status, _) = server.post("/elsewhere", review).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server.post("/validation", "{not json".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("invalid AdmissionReview"));
}

#[test]
fn certificate_files_are_read_and_half_pairs_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let addr: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
    let tls = Tls::load(Some(&cert_path), Some(&key_path), addr).expect("from files");
    assert_eq!(tls.certificate.as_ref(), cert.der().as_ref());
    let half = Tls::load(Some(&cert_path), None, addr).err().expect("half a pair");
    assert!(half.to_string().contains("together"), "{half}");
    let missing = Tls::load(Some(&dir.path().join("nope")), Some(&key_path), addr)
        .err()
        .expect("missing file");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[tokio::test]
async fn services_and_slices_as_the_api_server_holds_them_decode_cleanly() {
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"generateName": "web-", "namespace": "default", "uid": "9a1f", "resourceVersion": "501",
            "creationTimestamp": "2024-05-01T09:00:00Z", "labels": {"app": "web"}},
        "spec": {
            "clusterIP": "10.96.0.15", "clusterIPs": ["10.96.0.15"], "type": "ClusterIP",
            "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "appProtocol": "kubernetes.io/h2c"}]
        },
        "status": {"loadBalancer": {}}
    });
    let review = admission(
        "CREATE",
        gvk("", "Service"),
        gvr("", "services"),
        "",
        service,
        Value::Null,
    );
    let server = serve(DENY_WARNINGS).await;
    let response = server.review(review).await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.warnings, Vec::<String>::new());

    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "echo-abcde", "namespace": "default", "generateName": "echo-",
            "labels": {"kubernetes.io/service-name": "echo", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "echo", "uid": "5b3c", "controller": true, "blockOwnerDeletion": true}]},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "kind-control-plane", "targetRef": {"kind": "Pod", "name": "echo-7d9", "namespace": "default", "uid": "c0ff"}}],
        "ports": [{"name": "http", "port": 9001, "protocol": "TCP"}]
    });
    let review = admission(
        "CREATE",
        gvk("discovery.k8s.io", "EndpointSlice"),
        gvr("discovery.k8s.io", "endpointslices"),
        "echo-abcde",
        slice,
        Value::Null,
    );
    let response = server.review(review).await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.warnings, Vec::<String>::new());
}

#[tokio::test]
async fn before_the_first_config_read_reviews_are_answered_503_or_allowed() {
    let (_index_tx, index_rx) = watch::channel(Arc::new(index(BASE)));
    let (_synced_tx, synced_rx) = watch::channel(false);
    let webhook = Webhook::new(FakeValidator::default(), Options::default(), DENY, index_rx, synced_rx);
    tokio::time::pause();
    let review: AdmissionReview =
        serde_json::from_value(create_route(route_object("new", "PathPrefix", "/new", "echo"))).expect("review");
    let response = webhook.review(review).await.response.expect("response");
    assert!(!response.allowed);
    let status = response.status.expect("status");
    assert_eq!(status.code, 503);
    assert!(
        status.message.contains("has not read its configuration yet"),
        "{}",
        status.message
    );
}

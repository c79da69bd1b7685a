//! Lambda discovery against moto (PyPI `moto[server]`, installed when missing), a real
//! local AWS emulator on loopback, and against a hyper server that pages as AWS does
//! (moto answers ListFunctions in one page).
#![forbid(unsafe_code)]

mod moto;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use discovery::fds::{Credentials, Detector, FdsError, LambdaError, LambdaTarget, ProbeConfig, lambda};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use kgw_proto::v1::function::Spec;

fn target(endpoint: &str, page_size: Option<u32>) -> LambdaTarget {
    LambdaTarget {
        region: "us-east-1".into(),
        credentials: Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: Some("session".into()),
        },
        endpoint: Some(endpoint.into()),
        page_size,
    }
}

fn config() -> ProbeConfig {
    ProbeConfig {
        request_timeout: Duration::from_secs(5),
        probe_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

#[tokio::test]
async fn lists_functions_in_moto() {
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = moto::start(&dir.path().join("moto.log"));
    let names = ["orders", "billing", "users-v2"];
    moto::create_functions(&moto.url, &names).await;

    let result = lambda::probe(&target(&moto.url, None), &config()).await;
    assert_eq!(result.detector, Some(Detector::Lambda), "{:?}", result.error);
    let listed: Vec<(String, String, String)> = result
        .functions
        .iter()
        .map(|f| match &f.spec {
            Some(Spec::Lambda(l)) => (f.name.clone(), l.qualifier.clone(), l.arn.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<(String, String, String)> = ["billing", "orders", "users-v2"]
        .iter()
        .map(|n| {
            let arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{n}");
            (n.to_string(), "$LATEST".to_string(), arn)
        })
        .collect();
    assert_eq!(listed, expected);
    assert!(result.functions.iter().all(|f| f.kind == "lambda"));
}

#[tokio::test]
async fn follows_next_marker_and_signs_each_page() {
    let functions: Vec<String> = (1..=5).map(|n| format!("fn-{n}")).collect();
    let asked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let recorded = asked.clone();
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let functions = functions.clone();
            let recorded = recorded.clone();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let query: BTreeMap<String, String> = request
                    .uri()
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let auth = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                recorded.lock().expect("lock").push((
                    request
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    auth,
                ));
                let start: usize = query.get("Marker").and_then(|m| m.parse().ok()).unwrap_or(0);
                let size: usize = query.get("MaxItems").and_then(|m| m.parse().ok()).unwrap_or(50);
                let page: Vec<serde_json::Value> = functions
                    .iter()
                    .skip(start)
                    .take(size)
                    .map(|n| serde_json::json!({"FunctionName": n, "FunctionArn": format!("arn:{n}"), "Version": "$LATEST"}))
                    .collect();
                let mut body = serde_json::json!({"Functions": page});
                if start + size < functions.len() {
                    body["NextMarker"] = serde_json::json!((start + size).to_string());
                }
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string())))) }
            });
            connections.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let result = lambda::probe(&target(&endpoint, Some(2)), &config()).await;
    server.abort();
    let names: Vec<&str> = result.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["fn-1", "fn-2", "fn-3", "fn-4", "fn-5"], "{:?}", result.error);
    let asked = asked.lock().expect("lock").clone();
    let paths: Vec<&str> = asked.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/2015-03-31/functions/?MaxItems=2",
            "/2015-03-31/functions/?Marker=2&MaxItems=2",
            "/2015-03-31/functions/?Marker=4&MaxItems=2",
        ]
    );
    for (_, auth) in &asked {
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=testing/"), "{auth}");
        assert!(
            auth.contains(
                "/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{auth}"
        );
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_an_error() {
    let port = moto::free_port();
    let result = lambda::probe(&target(&format!("http://127.0.0.1:{port}"), None), &config()).await;
    assert!(!result.found());
    assert!(
        matches!(
            &result.error,
            Some(FdsError::Lambda {
                source: LambdaError::Send(_),
                ..
            })
        ),
        "{:?}",
        result.error
    );
}

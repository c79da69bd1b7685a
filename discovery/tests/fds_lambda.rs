//! Lambda discovery against moto (PyPI `moto[server]`, installed when missing), a real
//! local AWS emulator on loopback, and against a hyper server that pages as AWS does
//! (moto answers ListFunctions in one page).
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fs::File,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use discovery::fds::{Credentials, Detector, FdsError, LambdaError, LambdaTarget, ProbeConfig, lambda};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use kgw_proto::v1::function::Spec;

fn python() -> String {
    std::env::var("KGW_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn moto_importable() -> bool {
    Command::new(python())
        .args(["-c", "import moto.server, boto3, flask_cors"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `moto[server]` with pip when it is not importable (one installer at a time
/// across test processes, as the harness does for nats-server).
fn ensure_moto() {
    if moto_importable() {
        return;
    }
    let lock = File::create(std::env::temp_dir().join("kgw-harness-pip.lock")).expect("lock file");
    lock.lock().expect("lock");
    if moto_importable() {
        return;
    }
    let attempts: [&[&str]; 2] = [
        &["-m", "pip", "install", "--quiet", "moto[server]"],
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--user",
            "--break-system-packages",
            "moto[server]",
        ],
    ];
    for args in attempts {
        eprintln!("fds_lambda: {} {}", python(), args.join(" "));
        if Command::new(python()).args(args).status().is_ok_and(|s| s.success()) && moto_importable() {
            return;
        }
    }
    panic!("cannot install moto[server] with pip");
}

/// `moto_server` on 127.0.0.1, killed (by its own pid) when dropped.
struct Moto {
    url: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn start_moto(log: &Path) -> Moto {
    ensure_moto();
    let port = free_port();
    let log = File::create(log).expect("log file");
    let child = Command::new(python())
        .args([
            "-c",
            "import sys; from moto.server import main; sys.exit(main())",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start moto");
    let moto = Moto {
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start listening in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// Creates an IAM role and the named functions in moto, with boto3.
fn create_functions(url: &str, names: &[&str]) {
    let script = r#"
import io, sys, zipfile, boto3
url, names = sys.argv[1], sys.argv[2:]
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
role = iam.create_role(RoleName="fds-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
code = io.BytesIO()
with zipfile.ZipFile(code, "w") as z:
    z.writestr("handler.py", "def handler(event, context):\n    return event\n")
aws = boto3.client("lambda", endpoint_url=url, region_name="us-east-1")
for name in names:
    aws.create_function(FunctionName=name, Runtime="python3.12", Role=role,
                        Handler="handler.handler", Code={"ZipFile": code.getvalue()})
"#;
    let status = Command::new(python())
        .args(["-c", script, url])
        .args(names)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .status()
        .expect("run boto3");
    assert!(status.success(), "creating functions in moto failed");
}

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
    let moto = start_moto(&dir.path().join("moto.log"));
    let names = ["orders", "billing", "users-v2"];
    create_functions(&moto.url, &names);

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
    let port = free_port();
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

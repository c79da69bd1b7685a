//! A real local AWS emulator: `moto_server` (PyPI `moto[server]`, installed with pip when
//! missing) on 127.0.0.1 and a free port, killed by its pid when dropped; and what the
//! tests create in it, over plain HTTP (moto does not check signatures by default, but
//! routes a request to a service by the scope of its `Authorization` header).
#![allow(dead_code)]

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{Request, body::Bytes};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// moto's account id.
pub const ACCOUNT: &str = "123456789012";

fn python() -> String {
    std::env::var("KGW_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn moto_importable() -> bool {
    Command::new(python())
        .args(["-c", "import moto.server, flask_cors"])
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
        eprintln!("moto: {} {}", python(), args.join(" "));
        if Command::new(python()).args(args).status().is_ok_and(|s| s.success()) && moto_importable() {
            return;
        }
    }
    panic!("cannot install moto[server] with pip");
}

/// `moto_server` on 127.0.0.1, killed (by its own pid) when dropped.
pub struct Moto {
    pub url: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn start(log: &Path) -> Moto {
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

/// An empty zip archive: its end-of-central-directory record alone ("PK\x05\x06" and
/// eighteen zero bytes), base64. Enough code for CreateFunction; nothing invokes it.
const EMPTY_ZIP_BASE64: &str = "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==";

/// `POST path` to moto as `service` (in the credential scope), returning the body.
async fn post(url: &str, service: &str, path: &str, content_type: &str, body: String) -> String {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("{url}{path}"))
        .header("content-type", content_type)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host, Signature=00"
            ),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = client.request(request).await.expect("moto answers");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(status.is_success(), "{service} {path}: HTTP {status}: {body}");
    body
}

/// Creates the IAM role Lambda functions need, then each function (Python, an empty zip),
/// with moto's IAM query API and Lambda's REST API.
pub async fn create_functions(url: &str, names: &[&str]) {
    let role = "kgw-fds";
    post(
        url,
        "iam",
        "/",
        "application/x-www-form-urlencoded",
        format!("Action=CreateRole&Version=2010-05-08&RoleName={role}&AssumeRolePolicyDocument=%7B%7D"),
    )
    .await;
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{role}");
    for name in names {
        let body = serde_json::json!({
            "FunctionName": name,
            "Runtime": "python3.12",
            "Role": role_arn,
            "Handler": "handler.handler",
            "Code": {"ZipFile": EMPTY_ZIP_BASE64},
        });
        post(
            url,
            "lambda",
            "/2015-03-31/functions",
            "application/json",
            body.to_string(),
        )
        .await;
    }
}

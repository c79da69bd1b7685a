//! An in-process stand-in for one pod of the suite's `echo-basic` backend (README §3,
//! cases.json `echo_server`): the echo JSON on `ip:3000` (HTTP/1.1, WebSocket `/ws`),
//! `ip:3001` (h2c: prior knowledge or `Upgrade: h2c`) and, with TLS, `ip:8443` (ALPN h2 and
//! http/1.1, client certificates verified if given); `/health`, `/status/NNN`, `?delay=`,
//! the `/retry/` simulator; and the "Echoing back request made to ..." log the mirror
//! checks read, kept in memory.
//!
//! Known differences from the Go server: Go's `ServeMux` redirects unclean paths
//! (`/a/../b`) with a 301 and decodes `%xx` before dispatch, this one dispatches on the
//! raw path (only `//` collapsed); `/ws` does not insist on an `Origin` header (Go's
//! `x/net/websocket` answers 403 without one) and echoes binary frames as binary; the
//! request body of an `Upgrade: h2c` request is not passed on to stream 1; response header
//! names from `X-Echo-Set-Header` go out lower-case (HTTP/1.1 names are case-insensitive).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::certs::cert_pem;
use super::{EchoLogs, TlsPair};

/// The container's HTTP/1.1 (and WebSocket) port.
pub const HTTP_PORT: u16 = 3000;
/// The h2c port.
pub const H2C_PORT: u16 = 3001;
/// The HTTPS port (only with [`EchoPodSpec::tls`]).
pub const HTTPS_PORT: u16 = 8443;

/// TLS on port 8443: `TLS_SERVER_CERT`/`TLS_SERVER_PRIVKEY` and `TLS_CLIENT_CACERTS`.
#[derive(Clone, Debug)]
pub struct EchoTls {
    pub server: TlsPair,
    /// When set, client certificates are requested and verified against it but not
    /// required (Go's `VerifyClientCertIfGiven`); when not, none are requested (Go's
    /// default `NoClientCert`).
    pub client_ca_pem: Option<String>,
}

/// One pod: where it listens and what it reports.
#[derive(Clone, Debug)]
pub struct EchoPodSpec {
    pub ip: IpAddr,
    pub pod_name: String,
    pub namespace: String,
    pub tls: Option<EchoTls>,
}

/// A running pod. Dropping it stops its listeners and connections.
pub struct EchoPod {
    spec: EchoPodSpec,
    state: Arc<PodState>,
}

struct PodState {
    pod_name: String,
    namespace: String,
    /// Request URIs echoed, in order.
    log: Mutex<Vec<String>>,
    /// The retry simulator: requests seen per uuid.
    retries: Mutex<HashMap<String, u64>>,
    /// Every task of the pod (listeners, connections, upgraded connections).
    tasks: Mutex<JoinSet<()>>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PodState {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the set aborts every task (and breaks the task -> state cycle).
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        drop(tasks);
    }

    fn record(&self, request_uri: &str, remote: SocketAddr) {
        tracing::debug!(
            pod = %self.pod_name,
            "Echoing back request made to {request_uri} to client ({remote})"
        );
        lock(&self.log).push(request_uri.to_string());
    }
}

/// Starts a pod: binds `ip:3000`, `ip:3001` and, with TLS, `ip:8443`.
pub async fn start(spec: EchoPodSpec) -> Result<EchoPod> {
    let acceptor = match &spec.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(server_config(tls)?)),
        None => None,
    };
    let bind = |port: u16| {
        let addr = SocketAddr::new(spec.ip, port);
        async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the echo pod's {addr}"))
        }
    };
    let http = bind(HTTP_PORT).await?;
    let h2c = bind(H2C_PORT).await?;
    let https = match acceptor {
        Some(acceptor) => Some((bind(HTTPS_PORT).await?, acceptor)),
        None => None,
    };
    let state = Arc::new(PodState {
        pod_name: spec.pod_name.clone(),
        namespace: spec.namespace.clone(),
        log: Mutex::new(Vec::new()),
        retries: Mutex::new(HashMap::new()),
        tasks: Mutex::new(JoinSet::new()),
        closed: AtomicBool::new(false),
    });
    state.spawn(accept_loop(state.clone(), http, Port::Http));
    state.spawn(accept_loop(state.clone(), h2c, Port::H2c));
    if let Some((listener, acceptor)) = https {
        state.spawn(accept_loop(state.clone(), listener, Port::Https(acceptor)));
    }
    Ok(EchoPod { spec, state })
}

impl EchoPod {
    pub fn spec(&self) -> &EchoPodSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.pod_name
    }

    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    pub fn ip(&self) -> IpAddr {
        self.spec.ip
    }

    /// The request URIs echoed so far (each "Echoing back request made to <uri>").
    pub fn log(&self) -> Vec<String> {
        lock(&self.state.log).clone()
    }

    pub fn clear_log(&self) {
        lock(&self.state.log).clear();
    }

    /// Whether this pod belongs to Service `service` in `namespace` by the Deployment
    /// naming convention: `<service>-<template hash>-<pod hash>`.
    pub fn belongs_to(&self, namespace: &str, service: &str) -> bool {
        self.spec.namespace == namespace
            && self
                .spec
                .pod_name
                .strip_prefix(service)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| rest.split('-').count() == 2)
    }
}

impl Drop for EchoPod {
    fn drop(&mut self) {
        self.state.shutdown();
    }
}

/// All pods of a run.
#[derive(Default)]
pub struct EchoFleet {
    pods: Vec<EchoPod>,
}

impl EchoFleet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, pod: EchoPod) {
        self.pods.push(pod);
    }

    pub fn pods(&self) -> &[EchoPod] {
        &self.pods
    }

    /// The pods of Service `service` in `namespace` (see [`EchoPod::belongs_to`]).
    pub fn pods_of<'a>(&'a self, namespace: &'a str, service: &'a str) -> impl Iterator<Item = &'a EchoPod> + 'a {
        self.pods.iter().filter(move |p| p.belongs_to(namespace, service))
    }

    /// Forgets every pod's log (between tests).
    pub fn clear_logs(&self) {
        for pod in &self.pods {
            pod.clear_log();
        }
    }
}

impl EchoLogs for EchoFleet {
    fn echoed(&self, namespace: &str, service: &str, request_uri: &str) -> bool {
        self.pods_of(namespace, service)
            .any(|p| lock(&p.state.log).iter().any(|u| u == request_uri))
    }

    fn echo_count(&self, namespace: &str, service: &str, request_uri: &str) -> usize {
        self.pods_of(namespace, service)
            .map(|p| lock(&p.state.log).iter().filter(|u| *u == request_uri).count())
            .sum()
    }
}

/// A Deployment-style pod name: `<service>-<pod-template-hash>-<5 chars>`, deterministic
/// per (service, index); the pods of one Service share the template hash, as the pods of
/// one ReplicaSet do. Characters from Kubernetes' `SafeEncodeString` alphabet.
pub fn pod_name(service: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fn fnv1a(data: &[u8]) -> u64 {
        data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    fn encode(mut h: u64, len: usize) -> String {
        (0..len)
            .map(|_| {
                let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
                h /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
    let template = encode(fnv1a(service.as_bytes()), 10);
    let pod = encode(fnv1a(format!("{service}/{index}").as_bytes()), 5);
    format!("{service}-{template}-{pod}")
}

// ---------------------------------------------------------------------------------------
// Connections

#[derive(Clone)]
enum Port {
    Http,
    H2c,
    Https(tokio_rustls::TlsAcceptor),
}

async fn accept_loop(state: Arc<PodState>, listener: TcpListener, port: Port) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("echo pod {}: accept: {e}", state.pod_name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let conn_state = state.clone();
        let port = port.clone();
        state.spawn(serve_connection(conn_state, stream, remote, port));
    }
}

/// What a connection shares with its requests: the means of resetting it.
struct Conn {
    /// A duplicate of the socket's descriptor, to set `SO_LINGER` 0 on when resetting.
    fd: Mutex<Option<OwnedFd>>,
    killed: watch::Sender<bool>,
}

impl Conn {
    fn new(stream: &TcpStream) -> Arc<Conn> {
        Arc::new(Conn {
            fd: Mutex::new(stream.as_fd().try_clone_to_owned().ok()),
            killed: watch::Sender::new(false),
        })
    }

    /// Drops the connection with a TCP RST and no answer, as the retry simulator does:
    /// `SO_LINGER` 0 makes the last close of the socket send RST instead of FIN. Envoy
    /// sees an upstream reset before response headers ("upstream connect error or
    /// disconnect/reset before headers. reset reason: connection termination" / remote
    /// reset), which `retry_on: reset` retries and which ends as a 503 when retries run out.
    fn reset(&self) {
        if let Some(fd) = lock(&self.fd).take() {
            let dup = std::net::TcpStream::from(fd);
            if let Ok(dup) = TcpStream::from_std(dup) {
                // Deprecated because a non-zero linger blocks on close; zero does not.
                #[allow(deprecated)]
                let _ = dup.set_linger(Some(Duration::ZERO));
            }
        }
        self.killed.send_replace(true);
    }

    async fn wait_killed(&self) {
        let mut rx = self.killed.subscribe();
        let _ = rx.wait_for(|killed| *killed).await;
    }
}

/// Per-connection request context.
#[derive(Clone)]
struct Ctx {
    pod: Arc<PodState>,
    port: u16,
    remote: SocketAddr,
    tls: Option<Arc<TlsJson>>,
    conn: Arc<Conn>,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn serve_connection(pod: Arc<PodState>, stream: TcpStream, remote: SocketAddr, port: Port) {
    let _ = stream.set_nodelay(true);
    let conn = Conn::new(&stream);
    let mut ctx = Ctx {
        pod,
        port: HTTP_PORT,
        remote,
        tls: None,
        conn,
    };
    match port {
        Port::Http => serve_http1(ctx, stream).await,
        Port::H2c => {
            ctx.port = H2C_PORT;
            if prior_knowledge(&stream).await {
                serve_h2(ctx, stream).await;
            } else {
                serve_http1(ctx, stream).await;
            }
        }
        Port::Https(acceptor) => {
            ctx.port = HTTPS_PORT;
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("echo pod {}: TLS handshake from {remote}: {e}", ctx.pod.pod_name);
                    return;
                }
                Err(_) => return,
            };
            let info = tls_json(tls.get_ref().1);
            let h2 = info.negotiated_protocol == "h2";
            ctx.tls = Some(Arc::new(info));
            if h2 {
                serve_h2(ctx, tls).await;
            } else {
                serve_http1(ctx, tls).await;
            }
        }
    }
}

/// Whether the client opened with the HTTP/2 connection preface (peeked, not consumed).
async fn prior_knowledge(stream: &TcpStream) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return false;
        }
        if n == H2_PREFACE.len() {
            return true;
        }
        // A partial preface: wait for the rest.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn serve_http1<I>(ctx: Ctx, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = ctx.conn.clone();
    let svc = service_fn(move |req| handle(ctx.clone(), req));
    let serving = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        _ = serving => {}
        () = conn.wait_killed() => {}
    }
}

async fn serve_h2<I>(ctx: Ctx, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = ctx.conn.clone();
    let svc = service_fn(move |req| handle(ctx.clone(), req));
    let serving =
        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = serving => {}
        () = conn.wait_killed() => {}
    }
}

fn server_config(tls: &EchoTls) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(tls.server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the echo pod's certificate: {e:?}"))?;
    let key = PrivateKeyDer::from_pem_slice(tls.server.key_pem.as_bytes())
        .map_err(|e| anyhow!("the echo pod's private key: {e:?}"))?;
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots
                    .add(cert.map_err(|e| anyhow!("the echo pod's client CA: {e:?}"))?)
                    .context("the echo pod's client CA")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("the echo pod's client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the echo pod's certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Serialize)]
struct EchoJson<'a> {
    path: &'a str,
    host: String,
    method: &'a str,
    proto: &'static str,
    headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "httpPort")]
    http_port: String,
    namespace: &'a str,
    ingress: &'static str,
    service: &'static str,
    pod: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a TlsJson>,
}

#[derive(Serialize, Debug)]
struct TlsJson {
    version: String,
    #[serde(rename = "peerCertificates", skip_serializing_if = "Vec::is_empty")]
    peer_certificates: Vec<String>,
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(rename = "negotiatedProtocol", skip_serializing_if = "String::is_empty")]
    negotiated_protocol: String,
    #[serde(rename = "cipherSuite")]
    cipher_suite: String,
}

fn tls_json(conn: &rustls::ServerConnection) -> TlsJson {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    // rustls names TLS 1.3 suites `TLS13_*`, Go `TLS_*`; TLS 1.2 names agree.
    let cipher_suite = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let name = format!("{:?}", s.suite());
            match name.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => name,
            }
        })
        .unwrap_or_default();
    TlsJson {
        version: version.to_string(),
        peer_certificates: conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| cert_pem(c))
            .collect(),
        server_name: conn.server_name().unwrap_or_default().to_string(),
        negotiated_protocol: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
        cipher_suite,
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, headers: &[(HeaderName, &str)], body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(name.clone(), value);
        }
    }
    resp
}

/// `{"message": ...}` with the echo's content headers (Go's `processError`).
fn error_json(status: StatusCode, message: &str) -> Resp {
    let body = serde_json::json!({ "message": message }).to_string();
    respond(
        status,
        &[
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Go's `r.RequestURI`: the request target as received (HTTP/2: `:path`).
fn request_uri<B>(req: &Request<B>) -> String {
    if req.version() != Version::HTTP_2 && req.uri().scheme().is_some() {
        // Absolute form.
        return req.uri().to_string();
    }
    req.uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
}

/// Go's `r.Host`: the authority of an absolute request target or `:authority`, else Host.
fn request_host<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).map(lossy))
        .unwrap_or_default()
}

/// Go's `textproto.CanonicalMIMEHeaderKey`.
fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Query parameters, `%xx` and `+` decoded, first value wins (Go's `FormValue`).
fn query_param(request_uri: &str, key: &str) -> Option<String> {
    let query = request_uri.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `time.ParseDuration` (negative durations: zero).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..end];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[end..];
        let end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * unit;
        rest = &rest[end..];
    }
    Some(if negative {
        Duration::ZERO
    } else {
        Duration::from_nanos(nanos as u64)
    })
}

async fn handle(ctx: Ctx, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let uri = request_uri(&req);
    // The h2c port answers HTTP/1.1 only when it asks for h2c.
    if ctx.port == H2C_PORT && req.version() != Version::HTTP_2 {
        if is_h2c_upgrade(req.headers()) {
            return Ok(h2c_upgrade(ctx, req, &uri));
        }
        if req.headers().get(header::UPGRADE).map(lossy).as_deref() != Some("h2c") {
            return Ok(respond(StatusCode::BAD_REQUEST, &[], "Expected h2c request"));
        }
    }
    // Go's preserveSlashes: `//` collapsed for dispatch only.
    let path = req.uri().path().replace("//", "/");
    let resp = match path.as_str() {
        "/health" => respond(
            StatusCode::OK,
            &[(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "OK",
        ),
        "/ready" => respond(StatusCode::OK, &[], ""),
        "/ws" => websocket(ctx, req),
        p if p.starts_with("/status/") => status(&uri),
        p if p.starts_with("/retry/") => retry(ctx, req, &uri).await,
        _ => echo(ctx, req, &uri).await,
    };
    Ok(resp)
}

/// `/status/NNN` answers NNN (matched on the raw request URI, as Go does); else 400.
fn status(request_uri: &str) -> Resp {
    let code = request_uri
        .strip_prefix("/status/")
        .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    respond(code, &[], "")
}

/// The retry simulator: `uuid` and `succeedAfter=N` required; the first N requests with
/// that uuid fail (after `delayRetry`), with `responseCode` or by a TCP reset; then echo.
async fn retry(ctx: Ctx, req: Request<Incoming>, uri: &str) -> Resp {
    let uuid = query_param(uri, "uuid").filter(|u| !u.is_empty());
    let succeed_after = query_param(uri, "succeedAfter").and_then(|n| n.parse::<u64>().ok());
    let (Some(uuid), Some(succeed_after)) = (uuid, succeed_after) else {
        return error_json(
            StatusCode::BAD_REQUEST,
            "the retry simulator needs the query parameters uuid and succeedAfter",
        );
    };
    let seen = {
        let mut retries = lock(&ctx.pod.retries);
        let count = retries.entry(uuid).or_insert(0);
        *count += 1;
        *count
    };
    if seen <= succeed_after {
        if let Some(delay) = query_param(uri, "delayRetry").filter(|d| !d.is_empty()) {
            match parse_go_duration(&delay) {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return error_json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("time: invalid duration \"{delay}\""),
                    );
                }
            }
        }
        let code = query_param(uri, "responseCode")
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok());
        if let Some(code) = code {
            return respond(code, &[], "");
        }
        tracing::debug!(pod = %ctx.pod.pod_name, "retry simulator: resetting the connection for {uri}");
        ctx.conn.reset();
        // The connection task drops the connection (and this future with it) at once;
        // an HTTP/2 stream task notices the connection's end. Never answer before that.
        tokio::time::sleep(Duration::from_secs(60)).await;
        return respond(StatusCode::INTERNAL_SERVER_ERROR, &[], "");
    }
    echo(ctx, req, uri).await
}

async fn echo(ctx: Ctx, req: Request<Incoming>, uri: &str) -> Resp {
    ctx.pod.record(uri, ctx.remote);
    if let Some(delay) = query_param(uri, "delay").filter(|d| !d.is_empty()) {
        match parse_go_duration(&delay) {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                return error_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("time: invalid duration \"{delay}\""),
                );
            }
        }
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name == header::HOST || name == header::TRANSFER_ENCODING {
            continue;
        }
        headers
            .entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(lossy(value));
    }
    let proto = match req.version() {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    };
    let body = EchoJson {
        path: uri,
        host: request_host(&req),
        method: req.method().as_str(),
        proto,
        headers,
        http_port: ctx.port.to_string(),
        namespace: &ctx.pod.namespace,
        ingress: "",
        service: "",
        pod: &ctx.pod.pod_name,
        tls: ctx.tls.as_deref(),
    };
    let mut json = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut json, serde_json::ser::PrettyFormatter::with_indent(b" "));
    if let Err(e) = body.serialize(&mut serializer) {
        return error_json(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }

    // X-Echo-Set-Header: `name:value` pairs; a repeated name appends `,value`.
    let mut set: Vec<(HeaderName, String)> = Vec::new();
    for list in req.headers().get_all("x-echo-set-header") {
        for pair in lossy(list).split(',') {
            let (name, value) = pair.trim().split_once(':').unwrap_or((pair.trim(), ""));
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            match set.iter_mut().find(|(n, _)| *n == name) {
                Some((_, joined)) => {
                    joined.push(',');
                    joined.push_str(value.trim());
                }
                None => set.push((name, value.to_string())),
            }
        }
    }
    // The body is not used; read what is there so the connection stays reusable.
    let _ = tokio::time::timeout(Duration::from_secs(1), req.into_body().collect()).await;

    let mut resp = respond(StatusCode::OK, &[], json);
    for (name, value) in set {
        if let Ok(value) = HeaderValue::from_str(value.trim()) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// `/ws`: a WebSocket that echoes text and binary messages.
fn websocket(ctx: Ctx, mut req: Request<Incoming>) -> Resp {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let Some(key) = key.filter(|_| {
        req.version() == Version::HTTP_11
            && header_has_token(req.headers(), header::CONNECTION, "upgrade")
            && header_has_token(req.headers(), header::UPGRADE, "websocket")
    }) else {
        return respond(StatusCode::BAD_REQUEST, &[], "Bad Request");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let pod = ctx.pod.clone();
    ctx.pod.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("echo pod {}: websocket upgrade: {e}", pod.pod_name);
                return;
            }
        };
        tracing::debug!(
            "echo pod {}: established websocket connection {}",
            pod.pod_name,
            ctx.remote
        );
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // Ping/pong and the close handshake are tungstenite's; keep reading until the end.
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    respond(
        StatusCode::SWITCHING_PROTOCOLS,
        &[
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_ACCEPT, &accept),
        ],
        "",
    )
}

/// Go's `h2c.isH2CUpgrade`, plus the `HTTP2-Settings` header `h2cUpgrade` needs.
fn is_h2c_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::UPGRADE, "h2c")
        && header_has_token(headers, header::CONNECTION, "HTTP2-Settings")
        && headers.get("http2-settings").is_some()
}

/// `Upgrade: h2c`: answer 101, then serve HTTP/2 on the connection with the upgrading
/// request as stream 1. hyper's HTTP/2 server has no way to be handed that request, so
/// after the client's preface and SETTINGS frame a HEADERS frame carrying it (HPACK
/// literals) is spliced into what the server reads.
fn h2c_upgrade(ctx: Ctx, mut req: Request<Incoming>, uri: &str) -> Resp {
    let mut fields: Vec<(String, String)> = vec![
        (":method".into(), req.method().as_str().to_string()),
        (":scheme".into(), "http".into()),
        (":path".into(), uri.to_string()),
    ];
    let host = request_host(&req);
    if !host.is_empty() {
        fields.push((":authority".into(), host));
    }
    for (name, value) in req.headers() {
        let hop_by_hop = [
            "host",
            "connection",
            "upgrade",
            "http2-settings",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
        ];
        if !hop_by_hop.contains(&name.as_str()) {
            fields.push((name.as_str().to_string(), lossy(value)));
        }
    }
    let Some(headers_frame) = h2_headers_frame(&fields) else {
        return respond(StatusCode::BAD_REQUEST, &[], "h2c upgrade request too large");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let pod = ctx.pod.clone();
    pod.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("echo pod {}: h2c upgrade: {e}", ctx.pod.pod_name);
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        let mut prefix = match tokio::time::timeout(Duration::from_secs(10), read_client_preface(&mut io)).await {
            Ok(Ok(prefix)) => prefix,
            _ => return,
        };
        prefix.extend_from_slice(&headers_frame);
        serve_h2(
            ctx,
            Prefixed {
                prefix,
                pos: 0,
                inner: io,
            },
        )
        .await;
    });
    respond(
        StatusCode::SWITCHING_PROTOCOLS,
        &[(header::CONNECTION, "Upgrade"), (header::UPGRADE, "h2c")],
        "",
    )
}

/// Reads the client connection preface and its first frame (SETTINGS).
async fn read_client_preface<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Vec<u8>> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut buf = vec![0u8; H2_PREFACE.len() + 9];
    io.read_exact(&mut buf).await?;
    if buf[..H2_PREFACE.len()] != H2_PREFACE[..] {
        return Err(invalid("no HTTP/2 preface after the h2c upgrade"));
    }
    let header = &buf[H2_PREFACE.len()..];
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    if header[3] != 0x4 || len > 16_384 {
        return Err(invalid("the HTTP/2 preface is not followed by SETTINGS"));
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    buf.extend_from_slice(&payload);
    Ok(buf)
}

/// A HEADERS frame for stream 1 (END_STREAM | END_HEADERS), fields as HPACK literals
/// without indexing; `None` when it exceeds the default maximum frame size.
fn h2_headers_frame(fields: &[(String, String)]) -> Option<Vec<u8>> {
    fn integer(out: &mut Vec<u8>, prefix_bits: u8, first: u8, value: usize) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        integer(out, 7, 0, s.len());
        out.extend_from_slice(s.as_bytes());
    }
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00); // literal header field without indexing, new name
        string(&mut block, name);
        string(&mut block, value);
    }
    if block.len() > 16_384 {
        return None;
    }
    let len = block.len() as u32;
    let mut frame = Vec::with_capacity(9 + block.len());
    frame.extend_from_slice(&len.to_be_bytes()[1..]);
    frame.push(0x1); // HEADERS
    frame.push(0x1 | 0x4); // END_STREAM | END_HEADERS
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&block);
    Some(frame)
}

/// An IO that reads `prefix` before what `inner` reads.
struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;

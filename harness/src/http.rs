//! Test helpers: an HTTP/1 client (plain, or with mTLS to our ports) and polling.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Time allowed for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A buffered response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("body is not JSON: {}", self.text()))
    }
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    }
}

/// Sends one request. `host` overrides the Host header; `headers` are added.
pub async fn request(
    method: Method,
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response> {
    let what = format!("{method} {url}");
    let req = build(method, url, url, host, headers, body)?;
    // A client per request: a pooled connection must not outlive the test's runtime.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    answer(what, async { Ok(client.request(req).await?) }).await
}

/// A request for `uri` (`url` for errors) with `host` as its Host header and `headers`.
fn build(
    method: Method,
    uri: &str,
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Request<Full<Bytes>>> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(host) = host {
        req = req.header(HOST, host);
    }
    for (k, v) in headers {
        req = req.header(HeaderName::try_from(*k)?, HeaderValue::try_from(*v)?);
    }
    req.body(Full::new(body.into()))
        .with_context(|| format!("building request to {url}"))
}

/// The response `sent` gets, read whole within [`REQUEST_TIMEOUT`].
async fn answer(
    what: String,
    sent: impl Future<Output = Result<hyper::Response<hyper::body::Incoming>>>,
) -> Result<Response> {
    let fut = async {
        let (parts, body) = sent.await?.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("{what}: no response in {REQUEST_TIMEOUT:?}"))?
        .with_context(|| what)
}

/// Sends one request to a port of ours as a client of `mode`: with mTLS over HTTPS,
/// presenting `mode`'s certificate and checking that the server is process
/// `server_process` (its certificate names `<process>.kgw.internal`, whatever address is
/// dialled); with mTLS off over plain HTTP. `url` may say `http://` or `https://`: the
/// mode decides.
pub async fn request_tls(
    mode: &kgw_common::tls::TlsMode,
    server_process: &str,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let Some(mtls) = mode.mtls() else {
        return request(method, &format!("http://{rest}"), None, headers, body).await;
    };
    let what = format!("{method} https://{rest}");
    let uri: hyper::Uri = format!("https://{rest}")
        .parse()
        .with_context(|| format!("invalid URL {url}"))?;
    let authority = uri.authority().context("a URL with host:port")?.clone();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let name = kgw_proto::identity::server_name(server_process);
    let server_name =
        rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| anyhow!("invalid server name {name}"))?;
    let req = build(method, &path, url, Some(authority.as_str()), headers, body)?;
    let config = mtls.client_config();
    let sent = async move {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .context("TLS handshake")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender.send_request(req).await?)
    };
    answer(what, sent).await
}

/// GET from a port of ours as a client of `mode` (see [`request_tls`]).
pub async fn get_tls(mode: &kgw_common::tls::TlsMode, server_process: &str, url: &str) -> Result<Response> {
    request_tls(mode, server_process, Method::GET, url, &[], Bytes::new()).await
}

/// POST `body` to a port of ours as a client of `mode` (see [`request_tls`]).
pub async fn post_tls(
    mode: &kgw_common::tls::TlsMode,
    server_process: &str,
    url: &str,
    body: impl Into<Bytes>,
) -> Result<Response> {
    request_tls(mode, server_process, Method::POST, url, &[], body).await
}

/// GET `url`, with `host` as the Host header when given.
pub async fn get(url: &str, host: Option<&str>) -> Result<Response> {
    request(Method::GET, url, host, &[], Bytes::new()).await
}

/// Polls `check` every 50 ms until it returns `Ok`, or fails with its last error after
/// `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        let err = match tokio::time::timeout(left, check()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => anyhow!("check did not finish in time"),
        };
        if Instant::now() >= deadline {
            return Err(err.context(format!("still failing after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` until it answers `status`; returns that response.
pub async fn wait_status(url: &str, host: Option<&str>, status: u16, timeout: Duration) -> Result<Response> {
    wait_for(timeout, || async {
        let resp = get(url, host).await?;
        if resp.status.as_u16() != status {
            bail!(
                "GET {url} (host {host:?}): {} (want {status}): {}",
                resp.status,
                resp.text()
            );
        }
        Ok(resp)
    })
    .await
}

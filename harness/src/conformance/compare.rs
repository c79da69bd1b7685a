//! The judge (the suite's `CompareRoundTrip`) and the convergence loops: every case is
//! retried every 100 ms until it passes 3 times in a row, within 30 s; plus the
//! not-200 / transport-error / WebSocket variants, the mirror-log checks and the
//! distribution loops (weights, percentage mirrors, per-backend headers).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::EchoLogs;
use super::cases::{Case, DistributionKind, Mode, Test};
use super::client::{self, ClientTls, Endpoint, Observed, TransportError};

/// The query parameter the suite adds to make mirrored requests unique in echo logs.
pub const REQUEST_ID_PARAM: &str = "gateway-api-conformance-request-id";

/// Timing of the convergence loops (the suite's `TimeoutConfig`).
#[derive(Clone, Debug)]
pub struct RetryOptions {
    /// `MaxTimeToConsistency` (30 s in the suite).
    pub timeout: Duration,
    /// `DefaultPollInterval` after a failed attempt (100 ms).
    pub poll_interval: Duration,
    /// `RequiredConsecutiveSuccesses` (3).
    pub required_successes: u32,
    /// How long a mirror backend may take to log the mirrored request (10 s).
    pub mirror_timeout: Duration,
    /// `tls.crt` PEM of Secrets, by `<namespace>/<name>`: what
    /// `request_seen_by_backend.tls.peer_certificate_from_secret` names. When the named
    /// Secret is missing here, the check only requires some peer certificate.
    pub secret_certs: BTreeMap<String, String>,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            required_successes: 3,
            mirror_timeout: Duration::from_secs(10),
            secret_certs: BTreeMap::new(),
        }
    }
}

/// The result of one case (or of one distribution check).
#[derive(Clone, Debug)]
pub struct CaseOutcome {
    pub passed: bool,
    /// Requests sent.
    pub attempts: u32,
    /// Why it failed: the difference found in the last failing attempt (or the fatal one).
    pub first_difference: Option<String>,
    pub elapsed: Duration,
}

// ---------------------------------------------------------------------------------------
// The judge

/// Judges one response to `case` sent with `request_path` (`{uuid}` replaced): for mode
/// `status` the suite's `CompareRoundTrip`; for the other modes the single-response part
/// of their rule. Returns a short description of the first difference.
pub fn judge(case: &Case, request_path: &str, observed: &Observed) -> Result<(), String> {
    judge_with(case, request_path, observed, &BTreeMap::new())
}

/// [`judge`] with the Secret certificates for the backend client-certificate check.
pub fn judge_with(
    case: &Case,
    request_path: &str,
    observed: &Observed,
    secret_certs: &BTreeMap<String, String>,
) -> Result<(), String> {
    match case.expected.mode {
        Mode::Status => compare_round_trip(case, request_path, observed, secret_certs),
        Mode::Not200 => {
            if observed.status == 200 {
                Err("status 200, expected anything but 200".to_string())
            } else if is_timeout(observed.status) {
                Err(format!("status {} (timeout codes don't count)", observed.status))
            } else {
                Ok(())
            }
        }
        Mode::TransportError => Err(format!(
            "got an HTTP response (status {}), expected the TLS handshake/request to fail",
            observed.status
        )),
        Mode::WebsocketEcho => match observed.websocket_echoed {
            Some(true) => Ok(()),
            Some(false) if observed.status != 101 => {
                Err(format!("WebSocket upgrade refused with status {}", observed.status))
            }
            Some(false) => Err(format!(
                "WebSocket echo differs: {}",
                String::from_utf8_lossy(&observed.body)
            )),
            None => Err(format!("status {}, not a WebSocket exchange", observed.status)),
        },
    }
}

fn is_timeout(status: u16) -> bool {
    status == 408 || status == 504
}

/// Go's `roundtripper.IsRedirect` (306 is not one).
fn is_redirect(status: u16) -> bool {
    matches!(status, 300 | 301 | 302 | 303 | 304 | 305 | 307 | 308)
}

/// The `{uuid}` value used in `actual` when `template` has a `{uuid}` placeholder.
fn uuid_in<'a>(template: &str, actual: &'a str) -> Option<&'a str> {
    let (prefix, suffix) = template.split_once("{uuid}")?;
    let rest = actual.strip_prefix(prefix)?;
    let suffix = suffix.replace("{uuid}", "");
    rest.strip_suffix(suffix.as_str()).or(Some(rest))
}

/// Replaces `{uuid}` in an expected value with the one the request used.
fn fill_uuid(expected: &str, uuid: Option<&str>) -> String {
    match uuid {
        Some(u) => expected.replace("{uuid}", u),
        None => expected.to_string(),
    }
}

/// What the suite decodes from the echo JSON (`roundtripper.CapturedRequest`).
#[derive(Default)]
struct Captured {
    path: String,
    host: String,
    method: String,
    namespace: String,
    pod: String,
    /// Lower-cased name → values.
    headers: Option<BTreeMap<String, Vec<String>>>,
    sni: String,
    peer_certificates: Vec<String>,
}

fn captured(case: &Case, observed: &Observed) -> Captured {
    let Some(echo) = &observed.echo else {
        // Not an echo answer: "assume it made the right request".
        return Captured {
            method: case.request.method.clone(),
            ..Default::default()
        };
    };
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let headers = echo.get("headers").and_then(Value::as_object).map(|map| {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, values) in map {
            let vals: Vec<String> = match values {
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
                Value::String(one) => vec![one.clone()],
                _ => Vec::new(),
            };
            out.entry(name.to_ascii_lowercase()).or_default().extend(vals);
        }
        out
    });
    let tls = echo.get("tls");
    Captured {
        path: s(echo.get("path")),
        host: s(echo.get("host")),
        method: s(echo.get("method")),
        namespace: s(echo.get("namespace")),
        pod: s(echo.get("pod")),
        headers,
        sni: s(tls.and_then(|t| t.get("serverName"))),
        peer_certificates: tls
            .and_then(|t| t.get("peerCertificates"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

fn compare_round_trip(
    case: &Case,
    request_path: &str,
    observed: &Observed,
    secret_certs: &BTreeMap<String, String>,
) -> Result<(), String> {
    let expected = &case.expected;
    let codes: Vec<u16> = match &expected.status {
        Some(codes) if !codes.is_empty() => codes.clone(),
        _ => vec![200],
    };
    let status = observed.status;
    if is_timeout(status) && codes.iter().copied().any(is_timeout) {
        return Ok(());
    }
    if !codes.contains(&status) {
        return Err(format!("status {status}, expected {codes:?}"));
    }
    let uuid = uuid_in(&case.request.path, request_path);

    if status == 200 || status == 204 {
        let got = captured(case, observed);
        // Without an explicit expectation the backend must see the request itself.
        let (exp_path, exp_host, exp_method, exp_headers, absent, tls) = match &expected.request_seen_by_backend {
            Some(seen) => (
                fill_uuid(&seen.path, uuid),
                seen.host.clone(),
                seen.method.clone(),
                seen.headers.clone(),
                seen.absent_headers.clone(),
                seen.tls.clone(),
            ),
            None => (
                request_path.to_string(),
                case.request.host.clone(),
                case.request.method.clone(),
                case.request.headers.clone(),
                Vec::new(),
                None,
            ),
        };
        let exp_method = if exp_method.is_empty() {
            "GET".to_string()
        } else {
            exp_method
        };
        if let Some(host) = exp_host.filter(|h| !h.is_empty())
            && host != got.host
        {
            return Err(format!("echo host {:?} expected {host:?}", got.host));
        }
        if exp_path != got.path {
            if exp_path.is_empty() && observed.echo.is_some() {
                return Err(format!(
                    "answered by echo pod {:?} (path {:?}), expected an answer from the gateway itself",
                    got.pod, got.path
                ));
            }
            return Err(format!("echo path {:?} expected {exp_path:?}", got.path));
        }
        if exp_method != got.method {
            return Err(format!("echo method {:?} expected {exp_method:?}", got.method));
        }
        let exp_ns = expected.namespace.clone().unwrap_or_default();
        if exp_ns != got.namespace {
            return Err(if exp_ns.is_empty() {
                format!(
                    "answered by echo pod {:?} in {:?}, expected an answer from the gateway itself",
                    got.pod, got.namespace
                )
            } else if observed.echo.is_none() {
                format!("not an echo answer (no application/json body), expected namespace {exp_ns:?}")
            } else {
                format!("echo namespace {:?} expected {exp_ns:?}", got.namespace)
            });
        }
        if !exp_headers.is_empty() {
            let Some(seen) = &got.headers else {
                return Err(format!("no request headers echoed, expected {}", exp_headers.len()));
            };
            for (name, want) in &exp_headers {
                match seen.get(&name.to_ascii_lowercase()) {
                    None => {
                        return Err(format!(
                            "request header {name} missing at the backend, expected {want:?}"
                        ));
                    }
                    Some(values) => {
                        let joined = values.join(",");
                        if &joined != want {
                            return Err(format!(
                                "request header {name} = {joined:?} at the backend, expected {want:?}"
                            ));
                        }
                    }
                }
            }
        }

        let strip = |s: &str| -> String {
            if expected.ignore_whitespace_in_response_headers {
                s.replace(' ', "")
            } else {
                s.to_string()
            }
        };
        for (name, alternatives) in &expected.response_header_alternatives {
            if !observed.has_header(name) {
                return Err(format!(
                    "response header {name} missing, expected one of {alternatives:?}"
                ));
            }
            let joined = strip(&observed.header_values(name).join(","));
            if !alternatives.iter().any(|alt| strip(alt) == joined) {
                return Err(format!(
                    "response header {name} = {joined:?}, expected one of {alternatives:?}"
                ));
            }
        }
        for (name, want) in &expected.response_headers {
            if !observed.has_header(name) {
                return Err(format!("response header {name} missing, expected {want:?}"));
            }
            let joined = strip(&observed.header_values(name).join(","));
            if joined != strip(want) {
                return Err(format!("response header {name} = {joined:?}, expected {want:?}"));
            }
        }
        for name in &expected.absent_response_headers {
            if observed.has_header(name) {
                return Err(format!(
                    "response header {name} = {:?}, expected absent",
                    observed.header_values(name).join(",")
                ));
            }
        }
        for name in &absent {
            if let Some(values) = got.headers.as_ref().and_then(|h| h.get(&name.to_ascii_lowercase())) {
                return Err(format!(
                    "request header {name} = {:?} at the backend, expected absent",
                    values.join(",")
                ));
            }
        }
        let backend = expected.backend.clone().unwrap_or_default();
        if !got.pod.starts_with(&backend) {
            return Err(format!("answered by pod {:?}, expected a pod of {backend:?}", got.pod));
        }
        if let Some(tls) = tls {
            if let Some(sni) = tls.sni.filter(|s| !s.is_empty())
                && sni != got.sni
            {
                return Err(format!("backend saw SNI {:?}, expected {sni:?}", got.sni));
            }
            if let Some(secret) = tls.peer_certificate_from_secret.filter(|s| !s.is_empty()) {
                let found = match secret_certs.get(&secret) {
                    Some(pem) => got.peer_certificates.iter().any(|c| same_pem(c, pem)),
                    None => !got.peer_certificates.is_empty(),
                };
                if !found {
                    return Err(format!(
                        "backend did not see the client certificate of {secret} ({} peer certificates)",
                        got.peer_certificates.len()
                    ));
                }
            }
        }
    } else if is_redirect(status) {
        let Some(want) = &expected.redirect else {
            return Ok(());
        };
        let Some(location) = &observed.location else {
            return Err(format!("status {status} without a Location header"));
        };
        let request_scheme = case.target.scheme.as_str();
        let got = resolve_location(location, &observed.request_url, request_scheme)
            .ok_or_else(|| format!("Location {location:?} does not parse"))?;
        if let Some(host) = &want.host
            && host != &got.host
        {
            return Err(format!("Location {location:?}: host {:?} expected {host:?}", got.host));
        }
        match &want.port {
            Some(port) => {
                if port != &got.port {
                    return Err(format!("Location {location:?}: port {:?} expected {port:?}", got.port));
                }
            }
            None => {
                let scheme = got.scheme.to_ascii_lowercase();
                let well_known = match scheme.as_str() {
                    "http" => Some("80"),
                    "https" => Some("443"),
                    _ => None,
                };
                if let Some(wk) = well_known
                    && !got.port.is_empty()
                    && got.port != wk
                {
                    return Err(format!(
                        "Location {location:?}: port {:?}, expected none or {wk} for {scheme}",
                        got.port
                    ));
                }
            }
        }
        let want_scheme = want.scheme.clone().unwrap_or_else(|| request_scheme.to_string());
        if want_scheme != got.scheme {
            return Err(format!(
                "Location {location:?}: scheme {:?} expected {want_scheme:?}",
                got.scheme
            ));
        }
        let want_path = match &want.path {
            Some(p) => fill_uuid(p, uuid),
            None => request_path.split('?').next().unwrap_or_default().to_string(),
        };
        if want_path != got.path {
            return Err(format!(
                "Location {location:?}: path {:?} expected {want_path:?}",
                got.path
            ));
        }
    }
    Ok(())
}

/// PEM equality up to line breaks and surrounding whitespace.
fn same_pem(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<String>();
    norm(a) == norm(b)
}

/// The parts of a `Location` the suite compares (Go `url.URL` after `resp.Location()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationParts {
    pub scheme: String,
    /// Hostname without port or brackets.
    pub host: String,
    /// Port string; empty when absent.
    pub port: String,
    /// Decoded path without query or fragment.
    pub path: String,
}

/// Resolves `location` against the request URL like Go's `resp.Location()`.
pub fn resolve_location(location: &str, base_url: &str, base_scheme: &str) -> Option<LocationParts> {
    let location = location.trim();
    let (base_scheme, base_authority, base_path) =
        split_url(base_url).unwrap_or((base_scheme.to_string(), String::new(), "/".to_string()));
    let (scheme, authority, path) = if let Some((scheme, authority, path)) = split_url(location) {
        (scheme, authority, path)
    } else if let Some(rest) = location.strip_prefix("//") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        (base_scheme, rest[..end].to_string(), rest[end..].to_string())
    } else if location.starts_with('/') {
        (base_scheme, base_authority, location.to_string())
    } else if location.starts_with('?') || location.starts_with('#') || location.is_empty() {
        (
            base_scheme,
            base_authority,
            format!("{}{location}", strip_query(&base_path)),
        )
    } else {
        // Relative path: merge with the base path's directory.
        let base = strip_query(&base_path);
        let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
        (base_scheme, base_authority, format!("{dir}/{location}"))
    };
    let authority = authority.rsplit_once('@').map_or(authority.as_str(), |(_, a)| a);
    let (host, port) = split_host_port(authority);
    Some(LocationParts {
        scheme,
        host,
        port,
        path: percent_decode(strip_query(&path)),
    })
}

fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// `scheme://authority/path...` → (lower-case scheme, authority, rest starting at the path).
fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((
        scheme.to_ascii_lowercase(),
        rest[..end].to_string(),
        rest[end..].to_string(),
    ))
}

/// Go's `URL.Hostname()` / `URL.Port()`.
fn split_host_port(authority: &str) -> (String, String) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, after)) => (host.to_string(), after.strip_prefix(':').unwrap_or("").to_string()),
            None => (rest.to_string(), String::new()),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.to_string()),
        None => (authority.to_string(), String::new()),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// The loops

/// One probe's verdict.
enum Probe {
    Pass,
    Fail(String),
    /// Fails the whole case at once (a 200 in not-200 mode).
    Fatal(String),
}

/// The suite's `AwaitConvergence`: `required` consecutive passes within `opts.timeout`,
/// no pause after a pass, `opts.poll_interval` after a failure.
async fn converge<F, Fut>(required: u32, opts: &RetryOptions, mut probe: F) -> CaseOutcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Probe>,
{
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let mut successes = 0;
    let mut attempts = 0;
    let mut last: Option<String> = None;
    let fail = |attempts, last: Option<String>, start: Instant| CaseOutcome {
        passed: false,
        attempts,
        first_difference: Some(match last {
            Some(d) => d,
            None => format!("no {required} consecutive passes within {:?}", opts.timeout),
        }),
        elapsed: start.elapsed(),
    };
    loop {
        if Instant::now() >= deadline {
            return fail(attempts, last, start);
        }
        attempts += 1;
        match probe().await {
            Probe::Pass => {
                successes += 1;
                if successes >= required {
                    return CaseOutcome {
                        passed: true,
                        attempts,
                        first_difference: None,
                        elapsed: start.elapsed(),
                    };
                }
                continue;
            }
            Probe::Fail(d) => {
                successes = 0;
                last = Some(d);
            }
            Probe::Fatal(d) => return fail(attempts, Some(d), start),
        }
        if Instant::now() + opts.poll_interval >= deadline {
            return fail(attempts, last, start);
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}

fn describe(err: &TransportError) -> String {
    format!("request failed: {err}")
}

/// The request path for one attempt: `{uuid}` replaced by `uuid`.
fn path_with_uuid(case: &Case, uuid: &str) -> String {
    case.request.path.replace("{uuid}", uuid)
}

fn fresh_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs one case until it converges (see the module doc and `conventions`):
///
/// * `status`: [`judge`] passes 3 times in a row within `opts.timeout`;
/// * `not_200`: 3 consecutive answers other than 200 (errors, 408, 504 don't count; a 200
///   fails at once);
/// * `transport_error`: the request fails at TLS/connection level 3 times in a row;
/// * `websocket_echo`: the text and binary frames come back 3 times in a row;
/// * then for `mirrored_to` Services without a percentage: each must have echoed the
///   request URI within `opts.mirror_timeout` (percentage mirrors are checked by
///   [`run_distribution`]);
/// * with a client certificate, the server must have asked for it at least once.
///
/// `{uuid}` in the path: a fresh UUID per attempt (the retry simulator counts tries per
/// UUID and the suite regenerates it on every probe), except for mirror cases, where the
/// suite adds one request id per case and greps the mirror logs for it.
pub async fn run_case(
    case: &Case,
    endpoint: &Endpoint,
    tls: &ClientTls,
    logs: &dyn EchoLogs,
    opts: &RetryOptions,
) -> CaseOutcome {
    let case_uuid = fresh_uuid();
    let per_case_uuid = !case.expected.mirrored_to.is_empty();
    let cert_requested = std::sync::atomic::AtomicBool::new(false);
    let last_path = std::sync::Mutex::new(path_with_uuid(case, &case_uuid));
    let mode = case.expected.mode;
    let required = opts.required_successes;

    let mut outcome = converge(required, opts, || {
        let path = if per_case_uuid {
            path_with_uuid(case, &case_uuid)
        } else {
            path_with_uuid(case, &fresh_uuid())
        };
        if let Ok(mut p) = last_path.lock() {
            p.clone_from(&path);
        }
        let cert_requested = &cert_requested;
        async move {
            let result = client::send(case, endpoint, tls, &path).await;
            let requested = match &result {
                Ok(o) => o.client_cert_requested,
                Err(e) => e.client_cert_requested,
            };
            if requested {
                cert_requested.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            match (mode, result) {
                // A case presenting a client certificate expects the handshake to refuse
                // it: nothing listening yet is not that refusal (a fresh Envoy, a chain
                // not served yet), so it is retried.
                (Mode::TransportError, Err(e)) if e.stage == client::Stage::Connect && tls.client_cert.is_some() => {
                    Probe::Fail(describe(&e))
                }
                (Mode::TransportError, Err(_)) => Probe::Pass,
                (Mode::TransportError, Ok(o)) => Probe::Fail(format!(
                    "got an HTTP response (status {}), expected the TLS handshake/request to fail",
                    o.status
                )),
                (Mode::Not200, Ok(o)) if o.status == 200 => {
                    Probe::Fatal("status 200, expected anything but 200".to_string())
                }
                (_, Err(e)) => Probe::Fail(describe(&e)),
                (_, Ok(o)) => match judge_with(case, &path, &o, &opts.secret_certs) {
                    Ok(()) => Probe::Pass,
                    Err(d) => Probe::Fail(d),
                },
            }
        }
    })
    .await;
    if !outcome.passed {
        return outcome;
    }
    let start = Instant::now();

    if case.target.client_cert_secret.is_some()
        && tls.client_cert.is_some()
        && !cert_requested.load(std::sync::atomic::Ordering::SeqCst)
    {
        outcome.passed = false;
        outcome.first_difference = Some("the server never asked for the client certificate".to_string());
        return outcome;
    }

    let uri = last_path.lock().map(|p| p.clone()).unwrap_or_default();
    for mirror in case.expected.mirrored_to.iter().filter(|m| m.percent.is_none()) {
        let until = Instant::now() + opts.mirror_timeout;
        loop {
            if logs.echoed(&mirror.namespace, &mirror.service, &uri) {
                break;
            }
            if Instant::now() >= until {
                outcome.passed = false;
                outcome.first_difference = Some(format!(
                    "{}/{} did not log a mirrored request to {uri} within {:?}",
                    mirror.namespace, mirror.service, opts.mirror_timeout
                ));
                outcome.elapsed += start.elapsed();
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    outcome.elapsed += start.elapsed();
    outcome
}

/// Adds (or replaces) query parameter `name=value`, like the suite's `addQueryParam`
/// (keys sorted, as `url.Values.Encode` does).
pub fn add_query_param(path: &str, name: &str, value: &str) -> String {
    let (base, query) = match path.split_once('?') {
        Some((b, q)) => (b, q),
        None => (path, ""),
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .filter(|(k, _)| k != name)
        .collect();
    pairs.push((name.to_string(), value.to_string()));
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{base}?{query}")
}

/// The Service name in a Deployment pod name: without its last two `-` parts.
pub fn backend_from_pod(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() < 3 {
        return pod.to_string();
    }
    parts[..parts.len() - 2].join("-")
}

/// Runs a test's `distribution_check` (after its cases have converged, which also covers
/// the suite's warm-up requests):
///
/// * weights (HTTPRouteWeight): `requests` requests (`concurrency` at a time, half with
///   a random `X-Jitter` header) like the test's first case, each must pass [`judge`];
///   exactly the backends with a share > 0 answer, each within `tolerance_abs` of its
///   share; up to `max_attempts` rounds;
/// * per-backend header (HTTPRouteRequestHeaderModifierBackendWeights): `requests`
///   sequential requests; each must succeed with exactly one `Backend` request header at
///   the echo server and a pod name starting with it (one round);
/// * percentage mirror (per case with a percentage mirror): per attempt a new request id
///   query parameter, `requests` requests (`concurrency` at a time, each retried until
///   it passes), then the mirror Service's echo count for that URI must be within
///   `requests·p ± 3·sqrt(requests·p·(1−p))`; up to `max_attempts` attempts,
///   `sleep_between_attempts_s` apart.
///
/// A test without a distribution check passes at once.
pub async fn run_distribution(
    test: &Test,
    endpoint: &Endpoint,
    tls: &ClientTls,
    logs: &dyn EchoLogs,
    opts: &RetryOptions,
) -> CaseOutcome {
    let start = Instant::now();
    let outcome = |passed: bool, attempts: u32, diff: Option<String>| CaseOutcome {
        passed,
        attempts,
        first_difference: diff,
        elapsed: start.elapsed(),
    };
    let Some(check) = &test.distribution_check else {
        return outcome(true, 0, None);
    };
    let Some(first) = test.cases.first() else {
        return outcome(false, 0, Some("distribution check without a case to send".to_string()));
    };
    match check.kind() {
        DistributionKind::Weights => {
            let shares = check.expected_share.clone().unwrap_or_default();
            let requests = check.requests.unwrap_or(500).max(1);
            let concurrency = check.concurrency.unwrap_or(10).max(1);
            let tolerance = check.tolerance_abs.unwrap_or(0.05);
            let rounds = check.max_attempts.unwrap_or(10).max(1);
            let mut sent = 0;
            let mut last = None;
            for _ in 0..rounds {
                let results: Vec<Result<String, String>> = futures::stream::iter(0..requests)
                    .map(|_| async {
                        let extra = if rand::random_bool(0.5) {
                            vec![("X-Jitter".to_string(), rand::random_range(0..10000u32).to_string())]
                        } else {
                            Vec::new()
                        };
                        let path = path_with_uuid(first, &fresh_uuid());
                        let observed = client::send_with_headers(first, endpoint, tls, &path, &extra)
                            .await
                            .map_err(|e| describe(&e))?;
                        judge_with(first, &path, &observed, &opts.secret_certs)?;
                        Ok(captured(first, &observed).pod)
                    })
                    .buffer_unordered(concurrency)
                    .collect()
                    .await;
                sent += requests;
                match weight_verdict(&results, &shares, tolerance) {
                    Ok(()) => return outcome(true, sent, None),
                    Err(d) => last = Some(d),
                }
            }
            outcome(false, sent, last.map(|d| format!("{d} (after {rounds} rounds)")))
        }
        DistributionKind::BackendHeader => {
            let requests = check.requests.unwrap_or(100);
            for i in 0..requests {
                let path = path_with_uuid(first, &fresh_uuid());
                let observed = match client::send(first, endpoint, tls, &path).await {
                    Ok(o) => o,
                    Err(e) => return outcome(false, i + 1, Some(describe(&e))),
                };
                let got = captured(first, &observed);
                let backends = got
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("backend"))
                    .cloned()
                    .unwrap_or_default();
                if backends.len() != 1 {
                    return outcome(
                        false,
                        i + 1,
                        Some(format!(
                            "status {}: {} 'Backend' request headers at the backend, expected exactly one",
                            observed.status,
                            backends.len()
                        )),
                    );
                }
                if !got.pod.starts_with(&backends[0]) {
                    return outcome(
                        false,
                        i + 1,
                        Some(format!(
                            "Backend header {:?} but answered by pod {:?}",
                            backends[0], got.pod
                        )),
                    );
                }
            }
            outcome(true, requests, None)
        }
        DistributionKind::PercentageMirror => {
            let requests = check.requests.unwrap_or(500).max(1);
            let concurrency = check.concurrency.unwrap_or(10).max(1);
            let rounds = check.max_attempts.unwrap_or(5).max(1);
            let pause = Duration::from_secs_f64(check.sleep_between_attempts_s.unwrap_or(2.0).max(0.0));
            let mut sent = 0;
            for case in &test.cases {
                let mirrors: Vec<_> = case
                    .expected
                    .mirrored_to
                    .iter()
                    .filter(|m| m.percent.is_some())
                    .collect();
                if mirrors.is_empty() {
                    continue;
                }
                let mut last = None;
                let mut ok = false;
                for round in 0..rounds {
                    let id = fresh_uuid();
                    let mut variant = case.clone();
                    variant.request.path = add_query_param(&case.request.path, REQUEST_ID_PARAM, &id);
                    if let Some(seen) = &mut variant.expected.request_seen_by_backend {
                        seen.path = add_query_param(&seen.path, REQUEST_ID_PARAM, &id);
                    }
                    let path = variant.request.path.clone();
                    let one = RetryOptions {
                        required_successes: 1,
                        ..opts.clone()
                    };
                    let results: Vec<CaseOutcome> = futures::stream::iter(0..requests)
                        .map(|_| {
                            let (variant, path, one) = (&variant, &path, &one);
                            async move {
                                converge(1, one, || async {
                                    match client::send(variant, endpoint, tls, path).await {
                                        Err(e) => Probe::Fail(describe(&e)),
                                        Ok(o) => match judge_with(variant, path, &o, &one.secret_certs) {
                                            Ok(()) => Probe::Pass,
                                            Err(d) => Probe::Fail(d),
                                        },
                                    }
                                })
                                .await
                            }
                        })
                        .buffer_unordered(concurrency)
                        .collect()
                        .await;
                    sent += results.iter().map(|o| o.attempts).sum::<u32>();
                    if let Some(bad) = results.iter().find(|o| !o.passed) {
                        return outcome(
                            false,
                            sent,
                            Some(format!(
                                "{}: a request did not succeed: {}",
                                case.name,
                                bad.first_difference.clone().unwrap_or_default()
                            )),
                        );
                    }
                    let mut failures = Vec::new();
                    for mirror in &mirrors {
                        let count = settled_count(logs, &mirror.namespace, &mirror.service, &path).await;
                        let p = mirror.percent.unwrap_or(0.0) / 100.0;
                        let n = f64::from(requests);
                        let mean = n * p;
                        let margin = 3.0 * (n * p * (1.0 - p)).sqrt();
                        if (count as f64) < mean - margin || (count as f64) > mean + margin {
                            failures.push(format!(
                                "{}: {} mirrored {count} of {requests} requests, expected {:.1}..{:.1}",
                                case.name,
                                mirror.service,
                                mean - margin,
                                mean + margin
                            ));
                        }
                    }
                    if failures.is_empty() {
                        ok = true;
                        break;
                    }
                    last = Some(failures.join("; "));
                    if round + 1 < rounds {
                        tokio::time::sleep(pause).await;
                    }
                }
                if !ok {
                    return outcome(false, sent, last.map(|d| format!("{d} (after {rounds} attempts)")));
                }
            }
            outcome(true, sent, None)
        }
    }
}

/// The echo count for `uri`, once it stops growing (mirrors are fire-and-forget and may
/// land just after the last response): polled every 200 ms until two reads agree, at
/// most 5 s.
async fn settled_count(logs: &dyn EchoLogs, namespace: &str, service: &str, uri: &str) -> usize {
    let until = Instant::now() + Duration::from_secs(5);
    let mut count = logs.echo_count(namespace, service, uri);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = logs.echo_count(namespace, service, uri);
        if now == count || Instant::now() >= until {
            return now;
        }
        count = now;
    }
}

/// The suite's `TestWeightedDistribution` verdict over one round's results (pod names).
fn weight_verdict(
    results: &[Result<String, String>],
    shares: &BTreeMap<String, f64>,
    tolerance: f64,
) -> Result<(), String> {
    let total = results.len() as f64;
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    for result in results {
        let pod = result.as_ref().map_err(|e| format!("a request failed: {e}"))?;
        let backend = backend_from_pod(pod);
        if !shares.contains_key(&backend) {
            return Err(format!("answered by unexpected pod {pod:?} (backend {backend:?})"));
        }
        *seen.entry(backend).or_default() += 1.0;
    }
    let mut errs = Vec::new();
    let active = shares.values().filter(|s| **s > 0.0).count();
    if seen.len() != active {
        errs.push(format!("{} backends got traffic, expected {active}", seen.len()));
    }
    for (backend, want) in shares {
        let got = seen.get(backend).copied();
        if got.is_none() && *want != 0.0 {
            errs.push(format!("{backend} got no traffic"));
            continue;
        }
        let share = got.unwrap_or(0.0) / total;
        if (share - want).abs() > tolerance {
            errs.push(format!("{backend} got {share:.3}, expected {want}±{tolerance}"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        errs.sort();
        Err(errs.join("; "))
    }
}

#[cfg(test)]
mod tests;

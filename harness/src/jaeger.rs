//! A real tracing backend for tests: Jaeger v2 (an OpenTelemetry Collector distribution)
//! with in-memory storage, on free loopback ports, built from the pinned Go module under
//! `harness/kube-tools/jaeger/` by `scripts/kube-tools.sh` like the Kubernetes binaries.
//!
//! It listens on three ports of 127.0.0.1 only, each picked free at start: the OTLP gRPC
//! receiver ([`Jaeger::otlp_endpoint`]), the query HTTP API and UI ([`Jaeger::query_url`])
//! and the query gRPC API (unused, but Jaeger always opens it). Everything else the default
//! configuration opens (OTLP HTTP, the Jaeger and Zipkin receivers, remote sampling, the
//! health check, zpages, expvar, pprof, the collector's own Prometheus metrics on 8888) is
//! left out, so tests in parallel never collide. The process stops when the [`Jaeger`] is
//! dropped.
//!
//! [`Jaeger::start_with_logs_file`] adds a logs pipeline: the binary has no `file` exporter,
//! so OTLP logs go to the `debug` exporter writing its detailed text dump to the process's
//! stdout, which is that file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use rustix::process::{Pid, Signal, kill_process};
use serde::Deserialize;
use tempfile::TempDir;

use crate::process::log_tail;
use crate::tools::is_elf;

/// A cold start on two busy cores takes a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries with fresh ports when another process took a picked port before Jaeger bound it.
const START_ATTEMPTS: usize = 3;
/// Traces asked for per query.
const TRACE_LIMIT: usize = 100;
/// The storage backend's name in the generated configuration.
const STORE: &str = "memstore";

/// The `jaeger` binary: `KGW_JAEGER` if set, else built by `scripts/kube-tools.sh` when
/// missing (minutes, once per version); checked once per process.
pub fn ensure_jaeger() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CELL.get_or_init(|| find_jaeger().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_jaeger() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KGW_JAEGER") {
        let path = PathBuf::from(path);
        if !is_elf(&path) {
            bail!("KGW_JAEGER={} is not an executable binary", path.display());
        }
        return Ok(path);
    }
    crate::kube::tools::go_tools(&["jaeger"])?
        .remove("jaeger")
        .ok_or_else(|| anyhow!("scripts/kube-tools.sh printed no path for jaeger"))
}

/// A running Jaeger; the process (only the one started here) is killed on drop.
#[derive(Debug)]
pub struct Jaeger {
    child: Child,
    otlp: SocketAddr,
    query: SocketAddr,
    log: PathBuf,
    logs_file: Option<PathBuf>,
    // Dropped last: holds the configuration and the log.
    dir: TempDir,
}

/// The ports one Jaeger listens on.
#[derive(Clone, Copy, Debug)]
struct Ports {
    otlp_grpc: u16,
    query_http: u16,
    query_grpc: u16,
}

impl Jaeger {
    /// Builds the binary if missing, starts Jaeger with a traces pipeline (OTLP gRPC ->
    /// in-memory storage) and waits until both the OTLP receiver and the query API answer.
    pub async fn start() -> Result<Jaeger> {
        Self::start_inner(None).await
    }

    /// Like [`Jaeger::start`], plus a logs pipeline: OTLP logs received on the same
    /// endpoint are written to `path` (created or truncated) by the collector's `debug`
    /// exporter at `detailed` verbosity, a text dump with one `LogRecord #n` block per
    /// record (`Body: Str(...)`, `Attributes:` as `-> key: Str(value)` lines, trace and
    /// span ids). Nothing else is written there: the collector's own log goes elsewhere.
    pub async fn start_with_logs_file(path: impl AsRef<Path>) -> Result<Jaeger> {
        Self::start_inner(Some(path.as_ref().to_path_buf())).await
    }

    async fn start_inner(logs_file: Option<PathBuf>) -> Result<Jaeger> {
        let binary = tokio::task::spawn_blocking(ensure_jaeger)
            .await
            .context("finding the jaeger binary")??;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut jaeger = Self::spawn(&binary, logs_file.clone())?;
            match jaeger.wait_ready().await {
                Ok(()) => return Ok(jaeger),
                // A picked port was taken in between: try again with new ones.
                Err(e) if jaeger.log_tail(50).contains("address already in use") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("jaeger did not start")))
    }

    fn spawn(binary: &Path, logs_file: Option<PathBuf>) -> Result<Jaeger> {
        let dir = tempfile::Builder::new()
            .prefix("kgw-jaeger-")
            .tempdir()
            .context("creating Jaeger's temporary directory")?;
        let ports = free_ports()?;
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml(ports, logs_file.is_some())?)
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.path().join("jaeger.log");
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let stdout = match &logs_file {
            Some(path) => OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(path)
                .with_context(|| format!("creating the logs file {}", path.display()))?,
            None => stderr.try_clone()?,
        };
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // The collector's own SDK must not pick up a test's exporter settings.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let lo = Ipv4Addr::LOCALHOST;
        Ok(Jaeger {
            child,
            otlp: SocketAddr::from((lo, ports.otlp_grpc)),
            query: SocketAddr::from((lo, ports.query_http)),
            log,
            logs_file,
            dir,
        })
    }

    /// Polls until the OTLP port accepts connections and `/api/services` answers 200; fails
    /// at once if the process exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/api/services", self.query_url());
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("jaeger exited ({status}) while starting:\n{}", self.log_tail(30));
            }
            let otlp = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(self.otlp)).await;
            let last = match otlp {
                Err(_) => anyhow!("OTLP receiver {}: no connection in 1 s", self.otlp),
                Ok(Err(e)) => anyhow!("OTLP receiver {}: {e}", self.otlp),
                Ok(Ok(_)) => match crate::http::get(&url, None).await {
                    Ok(resp) if resp.status.is_success() => return Ok(()),
                    Ok(resp) => anyhow!("GET {url}: {}", resp.status),
                    Err(e) => e,
                },
            };
            if Instant::now() >= deadline {
                return Err(last.context(format!(
                    "jaeger not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(30)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The OTLP gRPC receiver as `http://127.0.0.1:PORT`, for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or an exporter's `with_endpoint`.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.otlp)
    }

    /// The OTLP gRPC receiver's address.
    pub fn otlp_addr(&self) -> SocketAddr {
        self.otlp
    }

    /// The query HTTP API (and UI) as `http://127.0.0.1:PORT`.
    pub fn query_url(&self) -> String {
        format!("http://{}", self.query)
    }

    /// Where [`Jaeger::start_with_logs_file`] has OTLP logs written.
    pub fn logs_file(&self) -> Option<&Path> {
        self.logs_file.as_deref()
    }

    /// The collector's own log (removed on drop).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the collector's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The directory of the configuration and the log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The services that have reported spans, sorted.
    pub async fn services(&self) -> Result<Vec<String>> {
        let data: Option<Vec<String>> = self.query_api("/api/services").await?;
        let mut services = data.unwrap_or_default();
        services.sort();
        Ok(services)
    }

    /// The traces (up to 100, newest first) holding a span of `service` that started within
    /// `lookback` before now.
    pub async fn traces(&self, service: &str, lookback: Duration) -> Result<Vec<Trace>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?;
        let start = now.saturating_sub(lookback).as_micros();
        let path = format!(
            "/api/traces?service={}&limit={TRACE_LIMIT}&start={start}",
            query_escape(service)
        );
        let data: Option<Vec<RawTrace>> = self.query_api(&path).await?;
        data.unwrap_or_default().into_iter().map(Trace::try_from).collect()
    }

    /// The trace `trace_id` (hex), or `None` while Jaeger has no span of it.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Trace>> {
        let url = format!("{}/api/traces/{}", self.query_url(), query_escape(trace_id));
        let resp = crate::http::get(&url, None).await?;
        if resp.status.as_u16() == 404 {
            return Ok(None);
        }
        let data: Option<Vec<RawTrace>> = parse_api(&url, &resp)?;
        data.unwrap_or_default()
            .into_iter()
            .next()
            .map(Trace::try_from)
            .transpose()
    }

    /// Polls [`Jaeger::traces`] of `service` (the last hour) until one trace satisfies
    /// `matches`, and returns it; fails after `timeout` with what was seen.
    pub async fn wait_for_trace(
        &self,
        service: &str,
        timeout: Duration,
        matches: impl Fn(&Trace) -> bool,
    ) -> Result<Trace> {
        crate::http::wait_for(timeout, || async {
            let traces = self.traces(service, Duration::from_secs(3600)).await?;
            if let Some(trace) = traces.iter().find(|t| matches(t)) {
                return Ok(trace.clone());
            }
            bail!(
                "no matching trace of service {service:?} yet; {} traces: {traces:#?}",
                traces.len()
            )
        })
        .await
    }

    /// GET `path` of the query API and returns its `data`.
    async fn query_api<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let url = format!("{}{path}", self.query_url());
        let resp = crate::http::get(&url, None).await?;
        parse_api(&url, &resp)
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        // SIGTERM to our own child, a short grace, then SIGKILL; always reaped.
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Three distinct free ports of 127.0.0.1 (held together while picked).
fn free_ports() -> Result<Ports> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("picking free loopback ports")?;
    let port = |i: usize| -> Result<u16> { Ok(listeners[i].local_addr()?.port()) };
    Ok(Ports {
        otlp_grpc: port(0)?,
        query_http: port(1)?,
        query_grpc: port(2)?,
    })
}

/// The Jaeger v2 configuration: only the listed components run, so only these ports open.
fn config_yaml(ports: Ports, logs: bool) -> Result<String> {
    let Ports {
        otlp_grpc,
        query_http,
        query_grpc,
    } = ports;
    let mut config = serde_json::json!({
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": { "receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"] },
            },
            "telemetry": {
                "resource": { "service.name": "jaeger" },
                // No Prometheus endpoint (the default is 8888), no spans of the collector.
                "metrics": { "level": "none" },
                "traces": { "level": "none" },
                "logs": { "level": "info" },
            },
        },
        "extensions": {
            "jaeger_storage": { "backends": { (STORE): { "memory": { "max_traces": 100_000 } } } },
            "jaeger_query": {
                "storage": { "traces": STORE },
                "http": { "endpoint": format!("127.0.0.1:{query_http}") },
                "grpc": { "endpoint": format!("127.0.0.1:{query_grpc}") },
            },
        },
        "receivers": {
            "otlp": { "protocols": { "grpc": { "endpoint": format!("127.0.0.1:{otlp_grpc}") } } },
        },
        "exporters": {
            "jaeger_storage_exporter": { "trace_storage": STORE },
        },
    });
    if logs {
        config["service"]["pipelines"]["logs"] = serde_json::json!({
            "receivers": ["otlp"],
            "exporters": ["debug"],
        });
        // The text dump goes to stdout (the logs file), not to the collector's own log;
        // every record, none sampled away.
        config["exporters"]["debug"] = serde_json::json!({
            "verbosity": "detailed",
            "use_internal_logger": false,
            "sampling_initial": 1_000_000,
            "sampling_thereafter": 1,
        });
    }
    serde_yaml::to_string(&config).context("writing Jaeger's configuration")
}

/// Percent-encodes a query parameter value (everything but RFC 3986's unreserved bytes).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The `data` of a query API answer; an error for a non-2xx status or listed `errors`.
fn parse_api<T: serde::de::DeserializeOwned>(url: &str, resp: &crate::Response) -> Result<Option<T>> {
    if !resp.status.is_success() {
        bail!("GET {url}: {}: {}", resp.status, resp.text());
    }
    let body: ApiResponse<T> =
        serde_json::from_slice(&resp.body).with_context(|| format!("GET {url}: unexpected body {}", resp.text()))?;
    if let Some(errors) = body.errors.filter(|e| !e.is_empty()) {
        bail!("GET {url}: errors {errors:?}");
    }
    Ok(body.data)
}

/// One trace as the query API returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Hex, as Jaeger prints it.
    pub trace_id: String,
    /// In the order Jaeger returns them.
    pub spans: Vec<Span>,
}

/// One span of a [`Trace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub span_id: String,
    /// The span of its `CHILD_OF` reference (the OTLP parent), if any.
    pub parent_span_id: Option<String>,
    pub operation_name: String,
    /// The `service.name` of the process (OTLP resource) that sent it.
    pub service: String,
    pub start_time_us: u64,
    pub duration_us: u64,
    /// Span attributes (and Jaeger's `span.kind`, `otel.*` tags), every value as text.
    pub tags: BTreeMap<String, String>,
}

impl Trace {
    /// The services of its spans, sorted, each once.
    pub fn services(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.spans.iter().map(|s| s.service.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The earliest span without a parent.
    pub fn root(&self) -> Option<&Span> {
        self.spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .min_by_key(|s| s.start_time_us)
    }

    /// Exactly one span has no parent, and every other span's parent is in the trace.
    pub fn is_connected(&self) -> bool {
        let ids: BTreeSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut roots = 0;
        for span in &self.spans {
            match &span.parent_span_id {
                None => roots += 1,
                Some(parent) if ids.contains(parent.as_str()) => {}
                Some(_) => return false,
            }
        }
        roots == 1
    }

    /// The span `span_id`.
    pub fn span(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }

    /// The first span (by start time) named `operation_name`.
    pub fn span_named(&self, operation_name: &str) -> Option<&Span> {
        self.spans
            .iter()
            .filter(|s| s.operation_name == operation_name)
            .min_by_key(|s| s.start_time_us)
    }

    /// The parent of `span`, if it is in this trace.
    pub fn parent(&self, span: &Span) -> Option<&Span> {
        span.parent_span_id.as_deref().and_then(|id| self.span(id))
    }

    /// The spans whose parent is `span_id`.
    pub fn children(&self, span_id: &str) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(span_id))
            .collect()
    }

    /// The spans of `service`.
    pub fn spans_of(&self, service: &str) -> Vec<&Span> {
        self.spans.iter().filter(|s| s.service == service).collect()
    }
}

// The query API's JSON (Jaeger's v1 UI model).

#[derive(Deserialize)]
struct ApiResponse<T> {
    data: Option<T>,
    #[serde(default)]
    errors: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(default)]
    spans: Vec<RawSpan>,
    #[serde(default)]
    processes: HashMap<String, RawProcess>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan {
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(default)]
    operation_name: String,
    #[serde(default)]
    references: Vec<RawReference>,
    #[serde(default)]
    start_time: u64,
    #[serde(default)]
    duration: u64,
    #[serde(default)]
    tags: Vec<RawTag>,
    #[serde(rename = "processID", default)]
    process_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReference {
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
struct RawTag {
    key: String,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProcess {
    service_name: String,
}

impl TryFrom<RawTrace> for Trace {
    type Error = anyhow::Error;

    fn try_from(raw: RawTrace) -> Result<Trace> {
        let spans = raw
            .spans
            .into_iter()
            .map(|s| {
                let service = raw
                    .processes
                    .get(&s.process_id)
                    .map(|p| p.service_name.clone())
                    .ok_or_else(|| {
                        anyhow!(
                            "trace {}: span {} names process {:?}, which the trace lacks",
                            raw.trace_id,
                            s.span_id,
                            s.process_id
                        )
                    })?;
                let parent_span_id = s
                    .references
                    .into_iter()
                    .find(|r| r.ref_type == "CHILD_OF")
                    .map(|r| r.span_id);
                let tags = s
                    .tags
                    .into_iter()
                    .map(|t| {
                        let value = match t.value {
                            serde_json::Value::String(v) => v,
                            other => other.to_string(),
                        };
                        (t.key, value)
                    })
                    .collect();
                Ok(Span {
                    span_id: s.span_id,
                    parent_span_id,
                    operation_name: s.operation_name,
                    service,
                    start_time_us: s.start_time,
                    duration_us: s.duration,
                    tags,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Trace {
            trace_id: raw.trace_id,
            spans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"data":[{"traceID":"ab12","spans":[
        {"traceID":"ab12","spanID":"01","operationName":"apply","references":[],
         "startTime":100,"duration":50,"tags":[{"key":"n","type":"int64","value":3},
         {"key":"k","type":"string","value":"v"}],"processID":"p1"},
        {"traceID":"ab12","spanID":"02","operationName":"translate",
         "references":[{"refType":"CHILD_OF","traceID":"ab12","spanID":"01"}],
         "startTime":110,"duration":20,"tags":[],"processID":"p2"}],
        "processes":{"p1":{"serviceName":"cli","tags":[]},"p2":{"serviceName":"controller","tags":[]}}}],
        "total":0,"limit":0,"offset":0,"errors":null}"#;

    fn sample() -> Trace {
        let body: ApiResponse<Vec<RawTrace>> = serde_json::from_str(SAMPLE).expect("sample parses");
        Trace::try_from(body.data.expect("data").remove(0)).expect("valid trace")
    }

    #[test]
    fn parses_the_query_api_model() {
        let trace = sample();
        assert_eq!(trace.trace_id, "ab12");
        assert_eq!(trace.services(), ["cli", "controller"]);
        let root = trace.root().expect("a root");
        assert_eq!(root.operation_name, "apply");
        assert_eq!(root.tags["n"], "3");
        assert_eq!(root.tags["k"], "v");
        let child = trace.span_named("translate").expect("child");
        assert_eq!(child.parent_span_id.as_deref(), Some("01"));
        assert_eq!(child.service, "controller");
        assert_eq!(trace.parent(child).map(|s| s.span_id.as_str()), Some("01"));
        assert_eq!(trace.children("01").len(), 1);
        assert!(trace.is_connected());
    }

    #[test]
    fn a_missing_parent_disconnects() {
        let mut trace = sample();
        trace.spans[1].parent_span_id = Some("ff".into());
        assert!(!trace.is_connected());
        trace.spans[1].parent_span_id = None;
        assert!(!trace.is_connected(), "two roots");
    }

    #[test]
    fn config_opens_only_the_picked_ports() {
        let yaml = config_yaml(
            Ports {
                otlp_grpc: 41001,
                query_http: 41002,
                query_grpc: 41003,
            },
            true,
        )
        .expect("YAML");
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("valid YAML");
        assert_eq!(
            doc["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
            Some("127.0.0.1:41001")
        );
        assert!(doc["receivers"]["otlp"]["protocols"]["http"].is_null());
        assert_eq!(
            doc["extensions"]["jaeger_query"]["http"]["endpoint"].as_str(),
            Some("127.0.0.1:41002")
        );
        assert_eq!(doc["service"]["telemetry"]["metrics"]["level"].as_str(), Some("none"));
        assert_eq!(
            doc["service"]["pipelines"]["logs"]["exporters"][0].as_str(),
            Some("debug")
        );
        let without_logs: serde_yaml::Value = serde_yaml::from_str(
            &config_yaml(
                Ports {
                    otlp_grpc: 1,
                    query_http: 2,
                    query_grpc: 3,
                },
                false,
            )
            .expect("YAML"),
        )
        .expect("valid YAML");
        assert!(without_logs["service"]["pipelines"]["logs"].is_null());
        assert!(without_logs["exporters"]["debug"].is_null());
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("kgw-controller"), "kgw-controller");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}

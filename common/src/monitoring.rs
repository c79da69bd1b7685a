//! Health and Prometheus metrics on one HTTP port per process (gateway 9091, controller 9092,
//! access-log 9093; discovery listens on nothing).
//!
//! - `GET /healthz`: `200 ok` while the process runs (liveness).
//! - `GET /readyz`: `200 ok` when every readiness check passes, else `503` with the reasons,
//!   one per line (readiness: has NATS and its first state, as each process defines it).
//! - `GET /metrics`: the [`Registry`] in the OpenMetrics text format, which Prometheus scrapes.
//!
//! Metrics are counted where events happen, with atomics ([`prometheus_client`] counters and
//! gauges are atomics). Counters a component already keeps as plain atomics are read at
//! scrape time through an [`FnCollector`], so its hot path does not change.
use std::{fmt, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, MetricEncoder},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{bus::Bus, shutdown::Shutdown};

/// The content type of `/metrics` (what [`prometheus_client::encoding::text`] writes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest time a client gets to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    #[error("cannot listen on {addr} (health and metrics)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// What the monitoring port serves: the metrics registry and the readiness checks.
pub struct Monitoring {
    registry: Registry,
    /// (reason reported while not ready, check).
    checks: Vec<(String, Check)>,
}

impl Monitoring {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            checks: Vec::new(),
        }
    }

    /// Adds a readiness condition: while `check` returns false, `/readyz` answers 503 and
    /// names `reason`.
    pub fn ready_when(mut self, reason: impl Into<String>, check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.checks.push((reason.into(), Box::new(check)));
        self
    }

    /// Ready once `flag` is true (and while it stays true).
    pub fn ready_when_set(self, reason: impl Into<String>, flag: watch::Receiver<bool>) -> Self {
        self.ready_when(reason, move || *flag.borrow())
    }

    /// Ready while connected to NATS.
    pub fn ready_when_nats_connected(self, bus: Bus) -> Self {
        self.ready_when("not connected to NATS", move || bus.is_connected())
    }

    /// `Ok` when ready, else the reasons of the failing checks.
    pub fn readiness(&self) -> Result<(), Vec<&str>> {
        let failing: Vec<&str> = self
            .checks
            .iter()
            .filter(|(_, check)| !check())
            .map(|(reason, _)| reason.as_str())
            .collect();
        if failing.is_empty() { Ok(()) } else { Err(failing) }
    }

    /// The registry in the OpenMetrics text format.
    pub fn metrics_text(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn handle(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.readiness() {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(reasons) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", reasons.join("; ")),
                ),
            },
            "/metrics" => match self.metrics_text() {
                Ok(body) => response(StatusCode::OK, METRICS_CONTENT_TYPE, body),
                Err(fmt::Error) => {
                    tracing::error!("cannot encode metrics");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n".into())
                }
            },
            "/" => text(StatusCode::OK, "/healthz /readyz /metrics\n".into()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /healthz /readyz /metrics\n".into(),
            ),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// The running monitoring server.
pub struct Serving {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Ends after shutdown.
    pub task: JoinHandle<()>,
}

/// Binds `addr` (an error at once if it cannot) and serves `/healthz`, `/readyz` and
/// `/metrics` on it (plain text: health and metrics carry no config) in a task until
/// `shutdown`.
pub async fn serve_monitoring(
    addr: SocketAddr,
    monitoring: Monitoring,
    shutdown: Shutdown,
) -> Result<Serving, MonitoringError> {
    let listener = crate::serve::Listener::bind("monitoring", addr, crate::serve::ServerTls::Off)
        .await
        .map_err(|error| MonitoringError::Listen {
            addr,
            source: error.source,
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    let options = crate::serve::HttpOptions {
        header_read_timeout: HEADER_TIMEOUT,
        drain: Duration::from_secs(1),
    };
    let task = tokio::spawn(crate::serve::serve_http(listener, monitoring, options, shutdown));
    Ok(Serving { addr: bound, task })
}

impl crate::serve::HttpHandler for Monitoring {
    async fn handle(&self, request: Request<Incoming>, _peer: &crate::tls::ConnInfo) -> Response<Full<Bytes>> {
        Monitoring::handle(self, &request)
    }
}

/// Labels of a family counted per error kind (kube-rs controller-rs style):
/// `Family<ErrorLabels, Counter>`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

/// One sample of an [`FnCollector`] metric: label pairs and value.
pub type Sample = (Vec<(&'static str, String)>, i64);

enum Read {
    One(Box<dyn Fn() -> i64 + Send + Sync>),
    Family(Box<dyn Fn() -> Vec<Sample> + Send + Sync>),
}

struct FnMetric {
    name: &'static str,
    help: &'static str,
    counter: bool,
    read: Read,
}

/// Metrics whose values are read by closures at scrape time: for counters a component
/// already keeps (plain atomics, watch channels), so its hot path stays as it is.
/// Counter names get `_total` appended, as for every counter.
#[derive(Default)]
pub struct FnCollector {
    metrics: Vec<FnMetric>,
}

impl fmt::Debug for FnCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.metrics.iter().map(|m| m.name)).finish()
    }
}

impl FnCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter without labels.
    pub fn counter(
        self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.push(name, help, true, Read::One(Box::new(move || clamp(read()))))
    }

    /// A gauge without labels.
    pub fn gauge(self, name: &'static str, help: &'static str, read: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.push(name, help, false, Read::One(Box::new(read)))
    }

    /// A counter with labels: `read` returns one sample per label set.
    pub fn counter_family(
        self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> Self {
        self.push(name, help, true, Read::Family(Box::new(read)))
    }

    /// A gauge with labels: `read` returns one sample per label set.
    pub fn gauge_family(
        self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> Self {
        self.push(name, help, false, Read::Family(Box::new(read)))
    }

    fn push(mut self, name: &'static str, help: &'static str, counter: bool, read: Read) -> Self {
        self.metrics.push(FnMetric {
            name,
            help,
            counter,
            read,
        });
        self
    }
}

/// Samples are i64; a counter read as u64 beyond i64::MAX saturates.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn encode_value(counter: bool, value: i64, encoder: MetricEncoder) -> Result<(), fmt::Error> {
    if counter {
        ConstCounter::new(u64::try_from(value).unwrap_or(0)).encode(encoder)
    } else {
        ConstGauge::new(value).encode(encoder)
    }
}

impl Collector for FnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for metric in &self.metrics {
            let kind = if metric.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family = encoder.encode_descriptor(metric.name, metric.help, None, kind)?;
            match &metric.read {
                Read::One(read) => encode_value(metric.counter, read(), family)?,
                Read::Family(read) => {
                    for (labels, value) in read() {
                        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        encode_value(metric.counter, value, family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Registers `nats_connected` (1 while connected) and `nats_connections_total` (every
/// (re)connection) for `bus`.
pub fn register_nats(registry: &mut Registry, bus: &Bus) {
    let (connected, connections) = (bus.clone(), bus.epoch());
    registry.register_collector(Box::new(
        FnCollector::new()
            .gauge("nats_connected", "1 while connected to NATS, else 0", move || {
                i64::from(connected.is_connected())
            })
            .counter(
                "nats_connections",
                "Connections to NATS made (the first and every reconnection)",
                move || *connections.borrow(),
            ),
    ));
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use prometheus_client::metrics::{counter::Counter, family::Family};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read");
        let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn healthz_readyz_flip_and_metrics() {
        let mut registry = Registry::with_prefix("kgw_test");
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("errors", "Errors by kind", errors.clone());
        let requests: Counter = Counter::default();
        registry.register("requests", "Requests", requests.clone());
        let seen = Arc::new(AtomicU64::new(0));
        let read = seen.clone();
        registry.register_collector(Box::new(
            FnCollector::new()
                .counter("seen", "Seen", move || read.load(Ordering::Relaxed))
                .gauge_family("queued", "Queued per queue", || {
                    vec![
                        (vec![("queue", "a".to_string())], 3),
                        (vec![("queue", "b".to_string())], 0),
                    ]
                }),
        ));
        let (synced_tx, synced) = watch::channel(false);
        let monitoring = Monitoring::new(registry).ready_when_set("first state not read yet", synced);
        let shutdown = Shutdown::new();
        let serving = serve_monitoring(loopback(), monitoring, shutdown.clone())
            .await
            .expect("serve");
        let addr = serving.addr;

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("first state not read yet"), "{body}");
        synced_tx.send_replace(true);
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".into()));

        requests.inc();
        errors.get_or_create(&ErrorLabels { kind: "decode" }).inc_by(2);
        seen.store(7, Ordering::Relaxed);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "kgw_test_requests_total 1",
            "kgw_test_errors_total{kind=\"decode\"} 2",
            "kgw_test_seen_total 7",
            "kgw_test_queued{queue=\"a\"} 3",
            "kgw_test_queued{queue=\"b\"} 0",
            "# EOF",
        ] {
            assert!(body.lines().any(|l| l == line), "no line {line:?} in\n{body}");
        }
        assert_eq!(get(addr, "/nothing").await.0, 404);

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), serving.task)
            .await
            .expect("server stops on shutdown")
            .expect("server task");
    }

    #[tokio::test]
    async fn readiness_names_every_failing_check() {
        let monitoring = Monitoring::new(Registry::default())
            .ready_when("a", || false)
            .ready_when("b", || true)
            .ready_when("c", || false);
        assert_eq!(monitoring.readiness(), Err(vec!["a", "c"]));
        assert_eq!(Monitoring::new(Registry::default()).readiness(), Ok(()));
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let taken = std::net::TcpListener::bind(loopback()).expect("bind");
        let addr = taken.local_addr().expect("addr");
        let result = serve_monitoring(addr, Monitoring::new(Registry::default()), Shutdown::new()).await;
        assert!(matches!(result, Err(MonitoringError::Listen { .. })));
    }
}

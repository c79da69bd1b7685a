//! Function discovery (FDS), as Gloo's: given an upstream's ready addresses, find its
//! functions with each detector in turn: an OpenAPI / Swagger document (`openapi.rs`),
//! gRPC server reflection (`grpc.rs`); AWS Lambda is listed per region and account
//! instead ([`lambda`]). [`schedule`] says when to probe which upstream.
//!
//! Unlike Gloo's: every request has a timeout and every body a cap, a refusing or silent
//! address costs one attempt (not one per path), concurrent probes are bounded
//! ([`Prober`]), and Services that answer nothing are backed off instead of being asked
//! again forever.
//!
//! The actor's calls: [`Target::from_upstream`] + [`Hints::from_service`] →
//! [`Prober::probe`] → [`ProbeResult`] (functions sorted by name, descriptors for the
//! gRPC-JSON transcoder) and [`schedule::Schedule::finished`]. Lambda Upstreams carry a
//! [`LambdaInput`] (credentials from their Secret) in their [`Target`] instead of
//! addresses. Ports that only speak TLS are probed over TLS ([`TlsHint`], see `tls.rs`).
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::Service;
use kgw_proto::v1::{Function, Upstream, upstream::UpstreamType};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

mod grpc;
mod http;
pub mod lambda;
mod openapi;
pub mod schedule;
mod sigv4;
mod tls;

pub use grpc::GrpcError;
pub use http::HttpError;
pub use lambda::{Credentials, LambdaError, LambdaTarget};
pub use openapi::{OPENAPI_PATH_ANNOTATION, OpenApiError, WELL_KNOWN_PATHS, parse as parse_openapi};
pub use tls::TlsError;

/// Which detector found the functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detector {
    OpenApi,
    Grpc,
    Lambda,
}

impl Detector {
    /// The `Function.kind` it writes.
    pub fn kind(self) -> &'static str {
        match self {
            Self::OpenApi => openapi::KIND,
            Self::Grpc => grpc::KIND,
            Self::Lambda => lambda::KIND,
        }
    }
    /// The detector that writes `Function.kind` `kind`.
    pub fn from_kind(kind: &str) -> Option<Self> {
        [Self::OpenApi, Self::Grpc, Self::Lambda]
            .into_iter()
            .find(|d| d.kind() == kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FdsError {
    #[error("no ready address to probe")]
    NoAddress,
    #[error("GET {path} on {addr}")]
    Http {
        addr: SocketAddr,
        path: String,
        #[source]
        source: HttpError,
    },
    #[error("gRPC reflection on {addr}")]
    Grpc {
        addr: SocketAddr,
        #[source]
        source: GrpcError,
    },
    #[error("Lambda ListFunctions in {region}")]
    Lambda {
        region: String,
        #[source]
        source: LambdaError,
    },
    #[error("probe took longer than {0:?}")]
    Timeout(Duration),
    /// A Lambda Upstream whose credentials cannot be read (it is not probed).
    #[error("not probed: {0}")]
    Credentials(String),
}

impl FdsError {
    /// Nothing listens at the address (connection refused): no other detector needs to
    /// try it. Other connection failures (an HTTP/1-only server refusing h2c) are not.
    fn refused(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = source {
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return true;
            }
            source = error.source();
        }
        false
    }

    /// The address gave no answer at all: refused, or silent until a timeout.
    fn unanswered(&self) -> bool {
        self.refused()
            || matches!(
                self,
                Self::Http {
                    source: HttpError::Timeout(_),
                    ..
                } | Self::Grpc {
                    source: GrpcError::Timeout(_),
                    ..
                }
            )
    }
}

/// An error and its sources on one line, for logs.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Per HTTP request, per reflection request, per connection attempt.
    pub request_timeout: Duration,
    /// The whole probe of one upstream, all detectors and addresses.
    pub probe_timeout: Duration,
    /// Cap on one document or response.
    pub max_body_bytes: usize,
    /// Cap on one upstream's gRPC descriptors: the Upstream travels as one NATS message
    /// (1 MiB at most by default), functions included.
    pub max_descriptor_bytes: usize,
    /// Ready addresses tried per probe (the next only when one is unreachable).
    pub max_addresses: usize,
    /// Probes running at once, per [`Prober`].
    pub concurrency: usize,
    /// The Lambda API to list functions at, for Lambda targets that name none: an
    /// emulator or a VPC endpoint (`http://` or `https://`, no path). `None`: AWS's
    /// `https://lambda.<region>.amazonaws.com`.
    pub lambda_endpoint: Option<String>,
    /// Accept any certificate from Services probed over TLS (see `tls.rs` for why the
    /// default verifies).
    pub tls_insecure_skip_verify: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(20),
            max_body_bytes: 8 << 20,
            max_descriptor_bytes: 768 << 10,
            max_addresses: 3,
            concurrency: 16,
            lambda_endpoint: None,
            tls_insecure_skip_verify: false,
        }
    }
}

/// What a probe is told besides the addresses; part of the schedule's fingerprint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// From the Service's [`OPENAPI_PATH_ANNOTATION`]; asked first.
    pub openapi_path: Option<String>,
    /// The port speaks HTTP/2 (appProtocol grpc / h2c): reflection is tried first.
    pub http2: bool,
    /// The port only speaks TLS: probes connect with TLS. (Shared: rare, and cloned
    /// into the schedule's fingerprint.)
    pub tls: Option<Arc<TlsHint>>,
}

/// How to speak TLS to a target's addresses: the name to send as SNI (and to verify the
/// certificate against) per address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsHint {
    /// Per address (a static host's `sniAddr`); sorted by address.
    pub server_names: Vec<(SocketAddr, String)>,
    /// For the other addresses (a Service's DNS name); `None`: the address itself.
    pub server_name: Option<String>,
}

impl TlsHint {
    /// The name sent to `addr`.
    pub fn server_name_for(&self, addr: SocketAddr) -> String {
        self.server_names
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, name)| name.clone())
            .or_else(|| self.server_name.clone())
            .unwrap_or_else(|| addr.ip().to_string())
    }

    /// A static Upstream's hosts with `useTls`: each sends its `sniAddr`, else its address.
    pub fn from_static(hosts: &kgw_proto::v1::StaticUpstream) -> Option<Arc<Self>> {
        if !hosts.use_tls {
            return None;
        }
        let mut server_names: Vec<(SocketAddr, String)> = hosts
            .hosts
            .iter()
            .filter(|h| !h.sni.is_empty())
            .filter_map(|h| {
                let ip = h.address.parse::<IpAddr>().ok()?;
                let port = u16::try_from(h.port).ok()?;
                Some((SocketAddr::new(ip, port), h.sni.clone()))
            })
            .collect();
        server_names.sort();
        server_names.dedup_by(|a, b| a.0 == b.0);
        Some(Arc::new(Self {
            server_names,
            server_name: None,
        }))
    }
}

/// Whether a Service port only speaks TLS: appProtocol `https` or `tls`, else (no
/// appProtocol) named `https` or numbered 443.
pub fn port_speaks_tls(port: &k8s_openapi::api::core::v1::ServicePort) -> bool {
    match port.app_protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("https" | "tls") => true,
        Some(_) => false,
        None => port.name.as_deref() == Some("https") || port.port == 443,
    }
}

impl Hints {
    /// The hints a Service, its port `port` and that port's appProtocol
    /// (`Upstream.kube.app_protocol`: "HTTP2" or "") give. An annotation that is not an
    /// absolute path is ignored. A port that only speaks TLS is probed over TLS, with the
    /// Service's cluster DNS name as SNI.
    pub fn from_service(service: &Service, app_protocol: &str, port: u32) -> Self {
        let openapi_path = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OPENAPI_PATH_ANNOTATION))
            .map(|p| p.trim())
            .filter(|p| {
                let ok =
                    p.starts_with('/') && p.len() <= 2048 && !p.chars().any(|c| c.is_whitespace() || c.is_control());
                if !ok {
                    tracing::warn!(path = p, "ignoring {OPENAPI_PATH_ANNOTATION}: not an absolute path");
                }
                ok
            })
            .map(str::to_string);
        let tls_port = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| u32::try_from(p.port).ok() == Some(port)))
            .is_some_and(port_speaks_tls);
        let tls = tls_port.then(|| {
            Arc::new(TlsHint {
                server_names: Vec::new(),
                server_name: service.metadata.name.as_ref().map(|name| {
                    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
                    format!("{name}.{namespace}.svc.cluster.local")
                }),
            })
        });
        Self {
            openapi_path,
            http2: app_protocol == "HTTP2",
            tls,
        }
    }
}

/// Where to probe: an upstream's name (for logs and spans) and its ready addresses; or,
/// for a Lambda upstream, the account and region to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub upstream: String,
    pub addresses: Vec<SocketAddr>,
    /// A Lambda upstream: listed with `ListFunctions` instead of probing addresses.
    pub lambda: Option<Arc<LambdaInput>>,
}

/// A Lambda upstream's listing, or why it cannot be listed (its Secret or a key of it is
/// missing: said in its probe status, and nothing is sent to AWS).
pub type LambdaInput = Result<LambdaTarget, String>;

impl Target {
    /// The ready endpoints of a kube upstream, or the hosts of a static one that are IP
    /// addresses, sorted. (A Lambda upstream's [`LambdaInput`] comes from its Secret.)
    pub fn from_upstream(upstream: &Upstream) -> Self {
        let name = upstream.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let pairs: Vec<(&str, u32)> = match &upstream.upstream_type {
            Some(UpstreamType::Kube(kube)) => kube
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .map(|e| (e.address.as_str(), e.port))
                .collect(),
            Some(UpstreamType::Static(s)) => s.hosts.iter().map(|h| (h.address.as_str(), h.port)).collect(),
            _ => Vec::new(),
        };
        let mut addresses: Vec<SocketAddr> = pairs
            .into_iter()
            .filter_map(|(address, port)| {
                let ip = address.parse::<IpAddr>().ok()?;
                let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
                Some(SocketAddr::new(ip, port))
            })
            .collect();
        addresses.sort();
        addresses.dedup();
        Self {
            upstream: name,
            addresses,
            lambda: None,
        }
    }

    /// The schedule's fingerprint of this target with these hints. For Lambda: the
    /// region, endpoint and key (hashed), or what is missing, so that a Secret that
    /// appears or changes makes it due at once.
    pub fn fingerprint(&self, hints: &Hints) -> schedule::Fingerprint {
        match self.lambda.as_deref() {
            Some(Ok(lambda)) => schedule::Fingerprint {
                hints: hints.clone(),
                ..lambda.fingerprint()
            },
            Some(Err(problem)) => schedule::Fingerprint {
                hints: hints.clone(),
                extra: vec![format!("unusable: {problem}")],
                ..Default::default()
            },
            None => schedule::Fingerprint::new(
                self.addresses.iter().map(|a| (a.ip().to_string(), u32::from(a.port()))),
                hints.clone(),
            ),
        }
    }
}

/// A probe's outcome. `detector` is `Some` when functions were found (possibly none: a
/// document with no operation still is a document); else `error` says why, if there was
/// more than silence.
#[derive(Debug, Default)]
pub struct ProbeResult {
    /// Sorted by name.
    pub functions: Vec<Function>,
    /// gRPC: the encoded FileDescriptorSet; else empty.
    pub descriptors: Vec<u8>,
    pub detector: Option<Detector>,
    /// Where they came from: `http://addr/path` or `grpc://addr (grpc.reflection.v1)`.
    pub source: String,
    pub error: Option<FdsError>,
}

impl ProbeResult {
    pub fn found(&self) -> bool {
        self.detector.is_some()
    }
}

/// Probes with a bound on how many run at once. Cheap to clone (clones share the bound).
#[derive(Clone, Debug)]
pub struct Prober {
    config: Arc<ProbeConfig>,
    permits: Arc<Semaphore>,
}

impl Prober {
    pub fn new(config: ProbeConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            config: Arc::new(config),
            permits,
        }
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Waits for a slot, then [`probe`]s.
    pub async fn probe(&self, target: &Target, hints: &Hints) -> ProbeResult {
        // The semaphore is never closed; without a permit, probing anyway is the safe side.
        let _permit = self.permits.acquire().await.ok();
        probe(target, hints, &self.config).await
    }
}

/// Probes `target` with every detector, within `config.probe_timeout`. Addresses are
/// tried in order while they refuse or stay silent, at most `config.max_addresses`; the
/// first that answers decides. A Lambda target is listed instead (at
/// `config.lambda_endpoint` unless it names its own).
pub async fn probe(target: &Target, hints: &Hints, config: &ProbeConfig) -> ProbeResult {
    match target.lambda.as_deref() {
        Some(Ok(lambda)) if lambda.endpoint.is_none() && config.lambda_endpoint.is_some() => {
            let lambda = LambdaTarget {
                endpoint: config.lambda_endpoint.clone(),
                ..lambda.clone()
            };
            return lambda::probe(&lambda, config).await;
        }
        Some(Ok(lambda)) => return lambda::probe(lambda, config).await,
        Some(Err(problem)) => {
            tracing::debug!(upstream = %target.upstream, problem, "not listing Lambda functions");
            return ProbeResult {
                error: Some(FdsError::Credentials(problem.clone())),
                ..Default::default()
            };
        }
        None => {}
    }
    let span = tracing::info_span!("fds.probe", upstream = %target.upstream, detector = tracing::field::Empty);
    let probe = async {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(config.probe_timeout, probe_addresses(target, hints, config)).await {
            Ok(result) => result,
            Err(_) => ProbeResult {
                error: Some(FdsError::Timeout(config.probe_timeout)),
                ..Default::default()
            },
        };
        if let Some(detector) = result.detector {
            tracing::Span::current().record("detector", detector.kind());
        }
        match (&result.detector, &result.error) {
            (Some(_), _) => tracing::info!(
                functions = result.functions.len(),
                source = result.source,
                elapsed_ms = started.elapsed().as_millis(),
                "functions found"
            ),
            (None, Some(error)) => tracing::debug!(error = %chain(error), "no functions"),
            (None, None) => tracing::debug!("no functions: no detector answered"),
        }
        result
    };
    probe.instrument(span).await
}

async fn probe_addresses(target: &Target, hints: &Hints, config: &ProbeConfig) -> ProbeResult {
    let mut last_error = Some(FdsError::NoAddress);
    let order = if hints.http2 {
        [Detector::Grpc, Detector::OpenApi]
    } else {
        [Detector::OpenApi, Detector::Grpc]
    };
    for &addr in target.addresses.iter().take(config.max_addresses) {
        let mut answered = false;
        for detector in order {
            let span = tracing::debug_span!("fds.detect", detector = detector.kind(), %addr);
            let server_name = hints.tls.as_ref().map(|tls| tls.server_name_for(addr));
            let tls = server_name.as_deref().map(|server_name| http::Tls {
                server_name,
                skip_verify: config.tls_insecure_skip_verify,
            });
            match detect(detector, addr, tls, hints, config).instrument(span).await {
                Ok(Some(found)) => return found,
                Ok(None) => answered = true,
                Err(error) => {
                    tracing::debug!(detector = detector.kind(), error = %chain(&error), "detector failed");
                    answered |= !error.unanswered();
                    let refused = error.refused();
                    last_error = Some(error);
                    if refused {
                        break;
                    }
                }
            }
        }
        if answered {
            // The pod answered; the other replicas of the same Service would answer the same.
            break;
        }
    }
    ProbeResult {
        error: last_error,
        ..Default::default()
    }
}

async fn detect(
    detector: Detector,
    addr: SocketAddr,
    tls: Option<http::Tls<'_>>,
    hints: &Hints,
    config: &ProbeConfig,
) -> Result<Option<ProbeResult>, FdsError> {
    let over_tls = tls
        .map(|t| format!(" over TLS to {}", t.server_name))
        .unwrap_or_default();
    Ok(match detector {
        Detector::OpenApi => openapi::detect(addr, hints.openapi_path.as_deref(), tls, config)
            .await?
            .map(|found| ProbeResult {
                functions: found.functions,
                descriptors: Vec::new(),
                detector: Some(Detector::OpenApi),
                source: format!(
                    "{}://{addr}{}",
                    if tls.is_some() { "https" } else { "http" },
                    found.path
                ),
                error: None,
            }),
        Detector::Grpc => grpc::detect(addr, tls, config).await?.map(|found| ProbeResult {
            functions: found.functions,
            descriptors: found.descriptors,
            detector: Some(Detector::Grpc),
            source: format!("grpc://{addr} ({}){over_tls}", found.version),
            error: None,
        }),
        // Lambda is listed per region, not per address: see `lambda::probe`.
        Detector::Lambda => None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kgw_proto::v1::{Endpoint, KubeUpstream, Metadata};

    use super::*;

    #[test]
    fn target_takes_ready_ip_endpoints_sorted() {
        let endpoint = |address: &str, port, ready| Endpoint {
            address: address.into(),
            port,
            ready,
            ..Default::default()
        };
        let upstream = Upstream {
            metadata: Some(Metadata {
                name: "default-web-80".into(),
                ..Default::default()
            }),
            upstream_type: Some(UpstreamType::Kube(KubeUpstream {
                endpoints: vec![
                    endpoint("10.0.0.2", 8080, true),
                    endpoint("10.0.0.1", 8080, true),
                    endpoint("10.0.0.3", 8080, false),
                    endpoint("not-an-ip", 8080, true),
                    endpoint("10.0.0.4", 70000, true),
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let target = Target::from_upstream(&upstream);
        assert_eq!(target.upstream, "default-web-80");
        let addrs: Vec<String> = target.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.0.0.1:8080", "10.0.0.2:8080"]);
    }

    #[test]
    fn hints_from_annotation_and_app_protocol() {
        let service = |path: &str| Service {
            metadata: ObjectMeta {
                annotations: Some([(OPENAPI_PATH_ANNOTATION.to_string(), path.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let hints = Hints::from_service(&service(" /api/openapi.yaml "), "HTTP2", 80);
        assert_eq!(hints.openapi_path.as_deref(), Some("/api/openapi.yaml"));
        assert!(hints.http2);
        assert_eq!(hints.tls, None);
        assert_eq!(Hints::from_service(&service("api docs"), "", 80).openapi_path, None);
        assert_eq!(Hints::from_service(&service("/a b"), "", 80).openapi_path, None);
    }

    #[tokio::test]
    async fn no_address_is_an_error() {
        let result = probe(&Target::default(), &Hints::default(), &ProbeConfig::default()).await;
        assert!(!result.found());
        assert!(matches!(result.error, Some(FdsError::NoAddress)));
    }
}

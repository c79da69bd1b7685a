//! The serde model of `../shared/conformance/cases.json`: the suite's HTTP traffic tests
//! (66 tests, 392 request cases) and its status-only tests. Field names are the file's;
//! their meaning is in the file's `conventions` object and in the README next to it.
//! Unknown fields are ignored, so the file may grow.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The whole file (the parts the runner uses).
#[derive(Clone, Debug, Deserialize)]
pub struct Cases {
    /// The traffic tests, in the file's order.
    pub tests: Vec<Test>,
    /// Tests that only check status conditions.
    #[serde(default)]
    pub status_only_tests: Vec<StatusOnlyTest>,
    /// Every Gateway found in the manifests, with its listeners (kept as JSON).
    #[serde(default)]
    pub gateways_in_manifests: Vec<serde_json::Value>,
    /// `<namespace>/<name>` of every Gateway some case sends traffic to.
    #[serde(default)]
    pub gateways_targeted_by_cases: Vec<String>,
    /// Every Service found in the manifests (kept as JSON).
    #[serde(default)]
    pub services_in_manifests: Vec<serde_json::Value>,
}

impl Cases {
    /// The traffic test named `name`.
    pub fn test(&self, name: &str) -> Option<&Test> {
        self.tests.iter().find(|t| t.name == name)
    }

    /// Number of request cases over all traffic tests.
    pub fn case_count(&self) -> usize {
        self.tests.iter().map(|t| t.cases.len()).sum()
    }
}

/// One traffic test (a Go `ConformanceTest` that sends HTTP).
#[derive(Clone, Debug, Deserialize)]
pub struct Test {
    /// The Go `ShortName`, e.g. `HTTPRouteSimpleSameNamespace`.
    pub name: String,
    pub summary: String,
    /// Features the test requires (all of them).
    pub features: Vec<String>,
    /// Profile name → `"core"` | `"extended"`; empty when the test is in no profile.
    #[serde(default)]
    pub profiles: BTreeMap<String, String>,
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub go_file: String,
    /// Manifest files relative to `manifests/`, base first.
    pub manifests: Vec<String>,
    /// Ordered status checks (see `conventions.status_checks`).
    #[serde(default)]
    pub status_checks: Vec<serde_json::Value>,
    #[serde(default)]
    pub checks_status_conditions: bool,
    /// Mutations during the test (see `conventions.phases_and_steps`).
    #[serde(default)]
    pub steps: Vec<serde_json::Value>,
    pub cases: Vec<Case>,
    /// Weight / percentage-mirror / per-backend-header loops after the cases.
    #[serde(default)]
    pub distribution_check: Option<DistributionCheck>,
    #[serde(default)]
    pub notes: Option<String>,
}

impl Test {
    /// `"Core"`, `"Extended"` or `"-"`: the test's level in the GATEWAY-HTTP profile.
    pub fn profile_level(&self) -> &'static str {
        match self.profiles.get("GATEWAY-HTTP").map(|s| s.to_ascii_lowercase()) {
            Some(level) if level == "core" => "Core",
            Some(level) if level == "extended" => "Extended",
            _ => "-",
        }
    }

    /// The feature to report the test under: its first feature that is not Gateway,
    /// HTTPRoute or ReferenceGrant; else `HTTPRoute` when it needs HTTPRoute, else
    /// `Gateway`.
    pub fn feature(&self) -> &str {
        const BASIC: [&str; 3] = ["Gateway", "HTTPRoute", "ReferenceGrant"];
        if let Some(f) = self.features.iter().find(|f| !BASIC.contains(&f.as_str())) {
            return f;
        }
        if self.features.iter().any(|f| f == "HTTPRoute") {
            "HTTPRoute"
        } else {
            "Gateway"
        }
    }
}

/// A test that only checks status conditions.
#[derive(Clone, Debug, Deserialize)]
pub struct StatusOnlyTest {
    pub name: String,
    pub summary: String,
    pub features: Vec<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, String>,
    #[serde(default)]
    pub provisional: bool,
    #[serde(default)]
    pub go_file: String,
    pub manifests: Vec<String>,
    #[serde(default)]
    pub status_checks: Vec<serde_json::Value>,
    #[serde(default)]
    pub checks_status_conditions: bool,
    #[serde(default)]
    pub notes: Option<String>,
}

/// One request case (a Go `ExpectedResponse`, or the equivalent for the other helpers).
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    /// The Go sub-test name.
    pub name: String,
    pub target: Target,
    pub request: CaseRequest,
    /// Pairs sent in `X-Echo-Set-Header` (the echo server copies them into its response).
    #[serde(default)]
    pub backend_set_response_headers: Option<BTreeMap<String, String>>,
    pub expected: Expected,
    /// Set on cases that run after a mutation step (see the test's `steps`).
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

impl Case {
    /// The value of `X-Echo-Set-Header` for this case: `k:v,k:v` (empty when none).
    pub fn echo_set_header(&self) -> String {
        self.backend_set_response_headers
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Where the request goes.
#[derive(Clone, Debug, Deserialize)]
pub struct Target {
    /// `<namespace>/<name>` of the Gateway whose address is used.
    pub gateway: String,
    /// The DECLARED listener port.
    pub port: u16,
    /// `http` | `https`.
    pub scheme: String,
    /// `HTTP/1.1` | `HTTP/2` (TLS + ALPN h2) | `h2c-prior-knowledge` | `websocket`.
    pub protocol: String,
    /// TLS ServerName (https).
    #[serde(default)]
    pub sni: Option<String>,
    /// `<namespace>/<name>` of the Secret whose `tls.crt` the client trusts as root.
    #[serde(default)]
    pub trust_ca_from_secret: Option<String>,
    /// `<namespace>/<name>` of the Secret holding the client certificate to present.
    #[serde(default)]
    pub client_cert_secret: Option<String>,
    /// The listener whose port the suite's address lookup used, when the test names one.
    #[serde(default)]
    pub listener: Option<String>,
}

/// The request sent.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseRequest {
    #[serde(default = "default_method")]
    pub method: String,
    /// Host header; `None` = the client's default (gateway address, port unless 80/443).
    #[serde(default)]
    pub host: Option<String>,
    /// Path incl. query, sent verbatim; `{uuid}` is replaced by a fresh UUID.
    pub path: String,
    /// Headers set exactly (one value each).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_string()
}

/// How a case is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Mode {
    /// CompareRoundTrip until 3 consecutive passes.
    #[serde(rename = "status")]
    Status,
    /// 3 consecutive answers that are not 200 (errors, 408 and 504 don't count; a 200 fails).
    #[serde(rename = "not_200")]
    Not200,
    /// The TLS handshake / request must fail 3 times in a row.
    #[serde(rename = "transport_error")]
    TransportError,
    /// A WebSocket text frame and a binary frame are echoed back.
    #[serde(rename = "websocket_echo")]
    WebsocketEcho,
}

/// What the response must look like.
#[derive(Clone, Debug, Deserialize)]
pub struct Expected {
    pub mode: Mode,
    /// Any-of status codes (status mode; `None` for the other modes).
    #[serde(default)]
    pub status: Option<Vec<u16>>,
    /// On 200/204: the echo pod name must start with this (`None`/empty = any pod).
    #[serde(default)]
    pub backend: Option<String>,
    /// On 200/204: must equal the echo namespace; `""` = not answered by an echo server.
    #[serde(default)]
    pub namespace: Option<String>,
    /// On 200/204: what the backend must have seen.
    #[serde(default)]
    pub request_seen_by_backend: Option<RequestSeen>,
    /// On 200/204: exact values (joined with `,`), case-insensitive names.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    /// On 200/204: the joined value must be one of these.
    #[serde(default)]
    pub response_header_alternatives: BTreeMap<String, Vec<String>>,
    /// Remove all spaces before comparing response headers.
    #[serde(default)]
    pub ignore_whitespace_in_response_headers: bool,
    /// On 200/204: these response headers must be absent.
    #[serde(default)]
    pub absent_response_headers: Vec<String>,
    /// On 300-308: the `Location` parts.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Services whose pods must log the (mirrored) request.
    #[serde(default)]
    pub mirrored_to: Vec<MirroredTo>,
}

/// The request the echo backend must report.
#[derive(Clone, Debug, Deserialize)]
pub struct RequestSeen {
    /// Exact `path` (RequestURI incl. query); may contain `{uuid}`.
    pub path: String,
    /// Checked only when non-null.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_method")]
    pub method: String,
    /// Each must be present with values joined by `,` equal to this.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Must not be present.
    #[serde(default)]
    pub absent_headers: Vec<String>,
    /// Backend-side TLS (BackendTLSPolicy tests).
    #[serde(default)]
    pub tls: Option<BackendTls>,
}

/// What the backend's TLS listener saw.
#[derive(Clone, Debug, Deserialize)]
pub struct BackendTls {
    /// Must equal the echo `tls.serverName`.
    #[serde(default)]
    pub sni: Option<String>,
    /// `<namespace>/<name>` of a Secret whose `tls.crt` must be among `tls.peerCertificates`.
    #[serde(default)]
    pub peer_certificate_from_secret: Option<String>,
}

/// Expected `Location` of a redirect.
#[derive(Clone, Debug, Deserialize)]
pub struct Redirect {
    /// Defaults to the request scheme when absent.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Hostname without port; checked only when non-null.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact when non-null; when null: empty or the Location scheme's well-known port.
    #[serde(default)]
    pub port: Option<String>,
    /// Path without query; defaults to the request path when absent.
    #[serde(default)]
    pub path: Option<String>,
}

/// A Service a request must be mirrored to.
#[derive(Clone, Debug, Deserialize)]
pub struct MirroredTo {
    pub service: String,
    pub namespace: String,
    /// Percentage mirrors: the share of requests mirrored (checked by the distribution loop).
    #[serde(default)]
    pub percent: Option<f64>,
}

/// The distribution loops (three shapes; see [`DistributionKind`]).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DistributionCheck {
    #[serde(default)]
    pub requests: Option<u32>,
    #[serde(default)]
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub tolerance_abs: Option<f64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Weighted routing: backend (Service name) → expected share.
    #[serde(default)]
    pub expected_share: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub backend_from_pod_name: Option<String>,
    #[serde(default)]
    pub per_request_entropy: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    /// Per-backend-header loop: requests one after the other.
    #[serde(default)]
    pub sequential: Option<bool>,
    /// Percentage mirror: the loop runs for every case that has a percentage mirror.
    #[serde(default)]
    pub per_case: Option<bool>,
    #[serde(default)]
    pub sleep_between_attempts_s: Option<f64>,
    #[serde(default)]
    pub procedure: Option<String>,
    #[serde(default)]
    pub accept_if: Option<String>,
}

/// Which loop a [`DistributionCheck`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributionKind {
    /// HTTPRouteWeight: shares of answering backends.
    Weights,
    /// HTTPRouteRequestPercentageMirror: mirrored-request counts per case.
    PercentageMirror,
    /// HTTPRouteRequestHeaderModifierBackendWeights: the `Backend` header matches the pod.
    BackendHeader,
}

impl DistributionCheck {
    pub fn kind(&self) -> DistributionKind {
        if self.expected_share.is_some() {
            DistributionKind::Weights
        } else if self.per_case == Some(true) {
            DistributionKind::PercentageMirror
        } else {
            DistributionKind::BackendHeader
        }
    }
}

/// Reads and parses `cases.json`.
pub fn load(path: &Path) -> anyhow::Result<Cases> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `../shared/conformance/cases.json` relative to the harness crate (where it lives in
/// every checkout of this workspace's machine layout).
/// The team's copy beside the checkout when there is one, else the copy in
/// `harness/conformance-data` (the same files, for machines whose checkout has no
/// `../shared` beside it, as CI's clean clone may not).
pub fn default_path() -> std::path::PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = crate_dir.join("../../shared/conformance/cases.json");
    if shared.is_file() {
        shared
    } else {
        crate_dir.join("conformance-data/cases.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_shared_file() {
        let cases = load(&default_path()).expect("cases.json");
        assert_eq!(cases.tests.len(), 66);
        assert_eq!(cases.case_count(), 392);
        assert_eq!(cases.status_only_tests.len(), 35);

        let simple = cases.test("HTTPRouteSimpleSameNamespace").expect("test");
        assert_eq!(simple.profile_level(), "Core");
        assert_eq!(simple.feature(), "HTTPRoute");
        let cors = cases.test("HTTPRouteCORS").expect("test");
        assert_eq!(cors.profile_level(), "Extended");
        assert_eq!(cors.feature(), "HTTPRouteCORS");

        let modes = |m: Mode| {
            cases
                .tests
                .iter()
                .flat_map(|t| &t.cases)
                .filter(|c| c.expected.mode == m)
                .count()
        };
        assert_eq!(modes(Mode::Not200), 5);
        assert_eq!(modes(Mode::TransportError), 3);
        assert_eq!(modes(Mode::WebsocketEcho), 1);

        let kinds: Vec<_> = cases
            .tests
            .iter()
            .filter_map(|t| Some((t.name.as_str(), t.distribution_check.as_ref()?.kind())))
            .collect();
        assert!(kinds.contains(&("HTTPRouteWeight", DistributionKind::Weights)));
        assert!(kinds.contains(&("HTTPRouteRequestPercentageMirror", DistributionKind::PercentageMirror)));
        assert!(kinds.contains(&(
            "HTTPRouteRequestHeaderModifierBackendWeights",
            DistributionKind::BackendHeader
        )));

        let rhm = cases.test("HTTPRouteResponseHeaderModifier").expect("test");
        assert_eq!(
            rhm.cases[1].echo_set_header(),
            "Some-Other-Header:val,X-Header-Set:some-other-value"
        );
        assert_eq!(simple.cases[0].echo_set_header(), "");
    }
}

//! [`LogLine`], the JSON line written per access-log entry, and its conversion from Envoy's
//! protobuf entries (used only by the gRPC edge).
//!
//! Field choices:
//! - `time`: `common_properties.start_time` (UTC, RFC 3339, milliseconds); the time of
//!   receipt when Envoy sent none.
//! - `duration_ms`: `common_properties.duration` (Envoy's `%DURATION%`: start to end of the
//!   stream, or of the connection for TCP); `time_to_last_downstream_tx_byte` when Envoy
//!   sent no `duration`. Whole milliseconds, truncated.
//! - `bytes_in` / `bytes_out`: total bytes received from / sent to the downstream client:
//!   `downstream_wire_bytes_received` / `_sent` (headers, body and framing); when Envoy
//!   reports no wire bytes, request (response) headers bytes + body bytes for HTTP and
//!   `connection_properties.received_bytes` / `sent_bytes` for TCP.
//! - `path`: the path the client sent (`original_path` if a rewrite happened, else `path`),
//!   as in Envoy's default access-log format.
//! - `protocol`: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`, `HTTP` (unspecified) or `TCP`.
//! - `gateway`: `<namespace>/<name>` from the node's `role` metadata (see [`GatewayId`]).
//!
//! Optional keys are left out when Envoy did not report them (empty string or unset), so
//! TCP lines have no `method`, `authority`, `path` nor `status`.
//!
//! Each line also carries an identity that is not written ([`LogLine::id`], see
//! [`entry_id_http`]): the same for the same entry on every sink replica, so the replicas'
//! publishes of one entry are one message in the JetStream stream.
use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{Address, Node, RequestMethod, address, socket_address::PortSpecifier},
        data::accesslog::v3::{
            AccessLogCommon, HttpAccessLogEntry, TcpAccessLogEntry, http_access_log_entry::HttpVersion,
        },
        service::accesslog::v3::stream_access_logs_message::LogEntries,
    },
    google::protobuf::{Duration, Timestamp, value::Kind},
};
use prost::Message as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The gateway an Envoy serves, from its node metadata `role`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatewayId {
    pub namespace: String,
    pub name: String,
}

impl GatewayId {
    pub fn unknown() -> Self {
        Self {
            namespace: "unknown".into(),
            name: "unknown".into(),
        }
    }

    /// `<namespace>~<name>`; with more `~`-separated parts (kgateway's
    /// `<prefix>~<namespace>~<name>`) the last two. Both parts must be non-empty.
    pub fn parse_role(role: &str) -> Option<Self> {
        let (rest, name) = role.rsplit_once('~')?;
        let namespace = rest.rsplit('~').next().unwrap_or(rest);
        (!namespace.is_empty() && !name.is_empty()).then(|| Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// From the node of a stream's identifier: metadata `role` (a string value); else
    /// `node.cluster` read as a role, or as a gateway name in namespace `unknown`; else
    /// `unknown/unknown`.
    pub fn from_node(node: Option<&Node>) -> Self {
        let Some(node) = node else {
            return Self::unknown();
        };
        let role = node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("role"))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            });
        if let Some(id) = role.and_then(Self::parse_role) {
            return id;
        }
        let cluster = node.cluster.trim();
        if let Some(id) = Self::parse_role(cluster) {
            return id;
        }
        if cluster.is_empty() || cluster.contains('~') {
            return Self::unknown();
        }
        Self {
            namespace: "unknown".into(),
            name: cluster.to_string(),
        }
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One access-log entry as written (one JSON object per line).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogLine {
    /// The entry's identity (not written): its `Nats-Msg-Id` ([`entry_id_http`],
    /// [`entry_id_tcp`]).
    #[serde(skip)]
    pub id: String,
    /// The entry's start time (`time` is its text), for exporters that take a timestamp.
    #[serde(skip)]
    pub start: Option<SystemTime>,
    pub time: String,
    #[serde(serialize_with = "display")]
    pub gateway: Arc<GatewayId>,
    pub protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_name: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

fn display<T: fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

impl LogLine {
    /// The line of an HTTP entry.
    pub fn from_http(entry: &HttpAccessLogEntry, gateway: &Arc<GatewayId>) -> Self {
        let common = entry.common_properties.as_ref();
        let mut line = Self::common(common, gateway, http_protocol(entry.protocol_version));
        line.id = entry_id_http(entry);
        let wire_in = common.map_or(0, |c| c.downstream_wire_bytes_received);
        let wire_out = common.map_or(0, |c| c.downstream_wire_bytes_sent);
        if let Some(req) = &entry.request {
            line.method = RequestMethod::try_from(req.request_method)
                .ok()
                .filter(|m| *m != RequestMethod::MethodUnspecified)
                .map(|m| m.as_str_name());
            line.authority = non_empty(&req.authority);
            line.path = non_empty(&req.original_path).or_else(|| non_empty(&req.path));
            line.request_id = non_empty(&req.request_id);
            line.user_agent = non_empty(&req.user_agent);
        }
        line.bytes_in = match (wire_in, &entry.request) {
            (0, Some(req)) => req.request_headers_bytes.saturating_add(req.request_body_bytes),
            (wire, _) => wire,
        };
        if let Some(resp) = &entry.response {
            line.status = resp.response_code.map(|c| c.value);
        }
        line.bytes_out = match (wire_out, &entry.response) {
            (0, Some(resp)) => resp.response_headers_bytes.saturating_add(resp.response_body_bytes),
            (wire, _) => wire,
        };
        line
    }

    /// The line of a TCP entry.
    pub fn from_tcp(entry: &TcpAccessLogEntry, gateway: &Arc<GatewayId>) -> Self {
        let common = entry.common_properties.as_ref();
        let mut line = Self::common(common, gateway, "TCP");
        line.id = entry_id_tcp(entry);
        let conn = entry.connection_properties.as_ref();
        line.bytes_in = match common.map_or(0, |c| c.downstream_wire_bytes_received) {
            0 => conn.map_or(0, |c| c.received_bytes),
            wire => wire,
        };
        line.bytes_out = match common.map_or(0, |c| c.downstream_wire_bytes_sent) {
            0 => conn.map_or(0, |c| c.sent_bytes),
            wire => wire,
        };
        line
    }

    fn common(common: Option<&AccessLogCommon>, gateway: &Arc<GatewayId>, protocol: &'static str) -> Self {
        let time = match common.and_then(|c| c.start_time.as_ref()) {
            Some(Timestamp { seconds, nanos }) => rfc3339_millis(*seconds, *nanos),
            None => now_rfc3339(),
        };
        let start = common.and_then(|c| c.start_time.as_ref()).and_then(|t| {
            let since_epoch = std::time::Duration::new(u64::try_from(t.seconds).ok()?, u32::try_from(t.nanos).ok()?);
            UNIX_EPOCH.checked_add(since_epoch)
        });
        let duration = common.and_then(|c| c.duration.as_ref().or(c.time_to_last_downstream_tx_byte.as_ref()));
        Self {
            id: String::new(),
            start,
            time,
            gateway: gateway.clone(),
            protocol,
            method: None,
            authority: None,
            path: None,
            status: None,
            duration_ms: duration.map(millis),
            upstream_cluster: common.and_then(|c| non_empty(&c.upstream_cluster)),
            route_name: common.and_then(|c| non_empty(&c.route_name)),
            bytes_in: 0,
            bytes_out: 0,
            downstream_remote: common
                .and_then(|c| c.downstream_remote_address.as_ref())
                .and_then(format_address),
            upstream_host: common
                .and_then(|c| c.upstream_remote_address.as_ref())
                .and_then(format_address),
            request_id: None,
            user_agent: None,
        }
    }
}

/// The lines of one message's entries, HTTP or TCP.
pub fn lines(entries: &LogEntries, gateway: &Arc<GatewayId>) -> Vec<LogLine> {
    match entries {
        LogEntries::HttpLogs(http) => http.log_entry.iter().map(|e| LogLine::from_http(e, gateway)).collect(),
        LogEntries::TcpLogs(tcp) => tcp.log_entry.iter().map(|e| LogLine::from_tcp(e, gateway)).collect(),
    }
}

/// The identity of an HTTP entry, the same on every replica Envoy sent it to: Envoy builds
/// the entry once per access logger, from the same request, so what identifies the request
/// is equal in every copy. From Envoy's request id (`x-request-id`, generated per request
/// unless a trusted client sent one), the start time to the nanosecond and both ends of the
/// downstream connection (so that a client reusing one `x-request-id` still gets distinct
/// entries); without a request id, the digest of the whole encoded entry. Hashed (SHA-256,
/// 128 bits in hex): fixed length, any bytes of the id are harmless in a header.
pub fn entry_id_http(entry: &HttpAccessLogEntry) -> String {
    let request_id = entry.request.as_ref().map_or("", |r| r.request_id.as_str());
    if request_id.is_empty() {
        return digest(&[b"http-entry", &entry.encode_to_vec()]);
    }
    let common = entry.common_properties.as_ref();
    digest(&[
        b"http",
        request_id.as_bytes(),
        start_nanos(common).as_bytes(),
        connection_ends(common).as_bytes(),
    ])
}

/// The identity of a TCP entry: its connection (start time and both ends), else the digest
/// of the encoded entry (see [`entry_id_http`]).
pub fn entry_id_tcp(entry: &TcpAccessLogEntry) -> String {
    let common = entry.common_properties.as_ref();
    if common.is_none_or(|c| c.start_time.is_none() || c.downstream_remote_address.is_none()) {
        return digest(&[b"tcp-entry", &entry.encode_to_vec()]);
    }
    digest(&[
        b"tcp",
        start_nanos(common).as_bytes(),
        connection_ends(common).as_bytes(),
    ])
}

fn start_nanos(common: Option<&AccessLogCommon>) -> String {
    common
        .and_then(|c| c.start_time.as_ref())
        .map_or_else(String::new, |t| format!("{}.{:09}", t.seconds, t.nanos))
}

fn connection_ends(common: Option<&AccessLogCommon>) -> String {
    let end = |a: Option<&Address>| a.and_then(format_address).unwrap_or_default();
    format!(
        "{} {}",
        end(common.and_then(|c| c.downstream_remote_address.as_ref())),
        end(common.and_then(|c| c.downstream_local_address.as_ref()))
    )
}

/// SHA-256 over length-prefixed parts, first 128 bits in hex.
fn digest(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..16])
}

fn http_protocol(version: i32) -> &'static str {
    match HttpVersion::try_from(version) {
        Ok(HttpVersion::Http10) => "HTTP/1.0",
        Ok(HttpVersion::Http11) => "HTTP/1.1",
        Ok(HttpVersion::Http2) => "HTTP/2",
        Ok(HttpVersion::Http3) => "HTTP/3",
        Ok(HttpVersion::ProtocolUnspecified) | Err(_) => "HTTP",
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Whole milliseconds of a protobuf duration (negative → 0).
fn millis(d: &Duration) -> u64 {
    let ms = i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000;
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

/// `ip:port` (`[ip]:port` for IPv6) or a pipe path.
fn format_address(address: &Address) -> Option<String> {
    match address.address.as_ref()? {
        address::Address::SocketAddress(sa) if !sa.address.is_empty() => {
            let host = if sa.address.contains(':') {
                format!("[{}]", sa.address)
            } else {
                sa.address.clone()
            };
            Some(match &sa.port_specifier {
                Some(PortSpecifier::PortValue(port)) => format!("{host}:{port}"),
                Some(PortSpecifier::NamedPort(port)) => format!("{host}:{port}"),
                None => host,
            })
        }
        address::Address::Pipe(pipe) => non_empty(&pipe.path),
        _ => None,
    }
}

fn now_rfc3339() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    // subsec_nanos() < 1e9 always fits in i32.
    rfc3339_millis(seconds, i32::try_from(now.subsec_nanos()).unwrap_or(0))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a Unix time.
pub fn rfc3339_millis(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = kgw_common::time::civil_from_days(days);
    let millis = nanos.clamp(0, 999_999_999) / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::{
        envoy::{
            config::core::v3::SocketAddress,
            data::accesslog::v3::{ConnectionProperties, HttpRequestProperties, HttpResponseProperties},
        },
        google::protobuf::{Struct, UInt32Value, Value},
    };

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_millis(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_709_210_096, 123_999_999), "2024-02-29T12:34:56.123Z");
        assert_eq!(rfc3339_millis(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(-1, 0), "1969-12-31T23:59:59.000Z");
        assert_eq!(rfc3339_millis(253_402_300_799, 5_000_000), "9999-12-31T23:59:59.005Z");
    }

    #[test]
    fn parses_roles() {
        let id = |ns: &str, n: &str| {
            Some(GatewayId {
                namespace: ns.into(),
                name: n.into(),
            })
        };
        assert_eq!(GatewayId::parse_role("default~gw"), id("default", "gw"));
        assert_eq!(GatewayId::parse_role("kgateway-kube-gateway-api~ns~gw"), id("ns", "gw"));
        assert_eq!(GatewayId::parse_role("gw"), None);
        assert_eq!(GatewayId::parse_role("~gw"), None);
        assert_eq!(GatewayId::parse_role("ns~"), None);
    }

    #[test]
    fn gateway_from_node() {
        let role = |r: &str| Struct {
            fields: [(
                "role".to_string(),
                Value {
                    kind: Some(Kind::StringValue(r.into())),
                },
            )]
            .into(),
        };
        let node = Node {
            metadata: Some(role("a~b")),
            cluster: "c~d".into(),
            ..Default::default()
        };
        assert_eq!(GatewayId::from_node(Some(&node)).to_string(), "a/b");
        let node = Node {
            metadata: Some(role("bad")),
            cluster: "c~d".into(),
            ..Default::default()
        };
        assert_eq!(GatewayId::from_node(Some(&node)).to_string(), "c/d");
        let node = Node {
            cluster: "gateway-proxy".into(),
            ..Default::default()
        };
        assert_eq!(GatewayId::from_node(Some(&node)).to_string(), "unknown/gateway-proxy");
        assert_eq!(
            GatewayId::from_node(Some(&Node::default())).to_string(),
            "unknown/unknown"
        );
        assert_eq!(GatewayId::from_node(None).to_string(), "unknown/unknown");
    }

    fn socket(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    #[test]
    fn http_entry_to_json() {
        let gw = Arc::new(GatewayId {
            namespace: "default".into(),
            name: "gw".into(),
        });
        let entry = HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                start_time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 42_000_000,
                }),
                duration: Some(Duration {
                    seconds: 1,
                    nanos: 500_000_000,
                }),
                time_to_last_downstream_tx_byte: Some(Duration { seconds: 9, nanos: 0 }),
                upstream_cluster: "kube_default_echo_80".into(),
                route_name: "r0".into(),
                downstream_remote_address: socket("::1", 5555),
                upstream_remote_address: socket("10.0.0.1", 8080),
                ..Default::default()
            }),
            protocol_version: HttpVersion::Http11 as i32,
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Post as i32,
                authority: "example.com".into(),
                path: "/rewritten".into(),
                original_path: "/orig?q=1".into(),
                request_headers_bytes: 100,
                request_body_bytes: 20,
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: 201 }),
                response_headers_bytes: 50,
                response_body_bytes: 7,
                ..Default::default()
            }),
        };
        let json = serde_json::to_value(LogLine::from_http(&entry, &gw)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "2023-11-14T22:13:20.042Z", "gateway": "default/gw", "protocol": "HTTP/1.1",
                "method": "POST", "authority": "example.com", "path": "/orig?q=1", "status": 201,
                "duration_ms": 1500, "upstream_cluster": "kube_default_echo_80", "route_name": "r0",
                "bytes_in": 120, "bytes_out": 57, "downstream_remote": "[::1]:5555",
                "upstream_host": "10.0.0.1:8080"
            })
        );
        // Wire bytes win when present; time_to_last_downstream_tx_byte without duration.
        let mut entry = entry;
        let common = entry.common_properties.as_mut().unwrap();
        common.duration = None;
        common.downstream_wire_bytes_received = 1000;
        common.downstream_wire_bytes_sent = 2000;
        let line = LogLine::from_http(&entry, &gw);
        assert_eq!(
            (line.duration_ms, line.bytes_in, line.bytes_out),
            (Some(9000), 1000, 2000)
        );
    }

    #[test]
    fn tcp_entry_to_json() {
        let gw = Arc::new(GatewayId::unknown());
        let entry = TcpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                start_time: Some(Timestamp { seconds: 0, nanos: 0 }),
                upstream_cluster: "db".into(),
                ..Default::default()
            }),
            connection_properties: Some(ConnectionProperties {
                received_bytes: 3,
                sent_bytes: 4,
            }),
        };
        let json = serde_json::to_value(LogLine::from_tcp(&entry, &gw)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "1970-01-01T00:00:00.000Z", "gateway": "unknown/unknown", "protocol": "TCP",
                "upstream_cluster": "db", "bytes_in": 3, "bytes_out": 4
            })
        );
    }

    #[test]
    fn entry_ids() {
        let entry = |request_id: &str, nanos: i32, port: u32| HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                start_time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos,
                }),
                downstream_remote_address: socket("10.0.0.1", port),
                ..Default::default()
            }),
            request: Some(HttpRequestProperties {
                request_id: request_id.into(),
                path: "/a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = entry_id_http(&entry("r1", 1, 5000));
        assert_eq!(a.len(), 32);
        // Fields that are not part of the request's identity do not change it.
        let mut other_fields = entry("r1", 1, 5000);
        other_fields.request.as_mut().unwrap().path = "/b".into();
        assert_eq!(entry_id_http(&other_fields), a);
        // A reused request id at another time or from another connection is another entry.
        assert_ne!(entry_id_http(&entry("r1", 2, 5000)), a);
        assert_ne!(entry_id_http(&entry("r1", 1, 5001)), a);
        assert_ne!(entry_id_http(&entry("r2", 1, 5000)), a);
        // Without a request id: the whole entry.
        assert_ne!(entry_id_http(&entry("", 1, 5000)), entry_id_http(&other_fields_no_id()));
        assert_eq!(entry_id_http(&entry("", 1, 5000)), entry_id_http(&entry("", 1, 5000)));
        let gw = Arc::new(GatewayId::unknown());
        assert_eq!(LogLine::from_http(&entry("r1", 1, 5000), &gw).id, a);

        fn other_fields_no_id() -> HttpAccessLogEntry {
            HttpAccessLogEntry {
                request: Some(HttpRequestProperties {
                    path: "/b".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    }
}

//! Writes the binary seeds of `corpus/als_message` and `corpus/kv_value` (the text seeds
//! are plain files). A tool, not a test: run it after a change of the formats with
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.
use std::path::{Path, PathBuf};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{Address, Node, Pipe, RequestMethod, SocketAddress, address, socket_address::PortSpecifier},
        data::accesslog::v3::{
            AccessLogCommon, ConnectionProperties, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
            TcpAccessLogEntry, http_access_log_entry::HttpVersion,
        },
        service::accesslog::v3::{
            StreamAccessLogsMessage,
            stream_access_logs_message::{HttpAccessLogEntries, Identifier, LogEntries, TcpAccessLogEntries},
        },
    },
    google::protobuf::{Duration, Struct, Timestamp, UInt32Value, Value, value::Kind},
};
use kgw_common::chunk::MAGIC;
use kgw_proto::v1::{ChunkManifest, Proxy, Upstream};
use prost::Message as _;
use serde::Deserialize;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

fn socket(address: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn identifier(role: &str) -> Identifier {
    let fields = [(
        "role".to_string(),
        Value {
            kind: Some(Kind::StringValue(role.into())),
        },
    )]
    .into();
    Identifier {
        node: Some(Node {
            id: format!("envoy-{role}"),
            cluster: "gateway-proxy".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        }),
        log_name: "kgw-als".into(),
    }
}

fn http_entry(i: u32) -> HttpAccessLogEntry {
    HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            start_time: Some(Timestamp {
                seconds: 1_700_000_000 + i64::from(i),
                nanos: 123_000_000,
            }),
            duration: Some(Duration {
                seconds: 0,
                nanos: 4_000_000,
            }),
            time_to_last_downstream_tx_byte: Some(Duration { seconds: 1, nanos: 0 }),
            upstream_cluster: "echo_default".into(),
            route_name: "echo".into(),
            downstream_remote_address: socket("127.0.0.1", 51234),
            upstream_remote_address: socket("::1", 8081),
            downstream_wire_bytes_received: u64::from(i) * 10,
            ..Default::default()
        }),
        protocol_version: HttpVersion::Http11 as i32,
        request: Some(HttpRequestProperties {
            request_method: RequestMethod::Get as i32,
            authority: "127.0.0.1:8080".into(),
            path: "/echo/hello".into(),
            original_path: if i == 1 { "/old".into() } else { String::new() },
            user_agent: "curl/8.5.0".into(),
            request_id: "5f7e3a1c-0000-4000-8000-000000000001".into(),
            request_headers_bytes: 80,
            request_body_bytes: 0,
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: 200 }),
            response_headers_bytes: 120,
            response_body_bytes: 230,
            ..Default::default()
        }),
    }
}

fn als_seeds() {
    let http = StreamAccessLogsMessage {
        identifier: Some(identifier("default~gw")),
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: vec![http_entry(0), http_entry(1)],
        })),
    };
    write("als_message", "http-with-identifier.pb", &http.encode_to_vec());
    let later = StreamAccessLogsMessage {
        identifier: None,
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: vec![http_entry(2)],
        })),
    };
    write("als_message", "http-later-message.pb", &later.encode_to_vec());
    let tcp = StreamAccessLogsMessage {
        identifier: Some(Identifier {
            node: Some(Node {
                id: "envoy".into(),
                cluster: "kgateway-kube-gateway-api~default~gw".into(),
                ..Default::default()
            }),
            log_name: "tcp".into(),
        }),
        log_entries: Some(LogEntries::TcpLogs(TcpAccessLogEntries {
            log_entry: vec![TcpAccessLogEntry {
                common_properties: Some(AccessLogCommon {
                    start_time: Some(Timestamp {
                        seconds: -62_135_596_800,
                        nanos: 0,
                    }),
                    upstream_cluster: "tcp".into(),
                    downstream_remote_address: Some(Address {
                        address: Some(address::Address::Pipe(Pipe {
                            path: "/run/envoy.sock".into(),
                            mode: 0,
                        })),
                    }),
                    ..Default::default()
                }),
                connection_properties: Some(ConnectionProperties {
                    received_bytes: 7,
                    sent_bytes: 9,
                }),
            }],
        })),
    };
    write("als_message", "tcp-cluster-role.pb", &tcp.encode_to_vec());
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc {
    proxy: Option<Proxy>,
    upstream: Option<Upstream>,
}

/// `0 | value` for kgw_proxies, `1 | value` for kgw_upstreams; parts after the separator
/// of `fuzz_targets/kv_value.rs`.
fn kv_seeds() {
    const SEPARATOR: &[u8] = b"\n--kgw-part--\n";
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&golden)
        .expect("controller golden cases")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    let mut biggest: Option<Vec<u8>> = None;
    for case in cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("input.yaml")).expect("input.yaml");
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc = Doc::deserialize(doc).expect("golden document");
            if let Some(proxy) = doc.proxy {
                let bytes = proxy.encode_to_vec();
                write(
                    "kv_value",
                    &format!("proxy-{name}-{i}.bin"),
                    &[&[0u8][..], &bytes].concat(),
                );
                if biggest.as_ref().is_none_or(|b| b.len() < bytes.len()) {
                    biggest = Some(bytes);
                }
            }
            if let Some(upstream) = doc.upstream {
                let bytes = upstream.encode_to_vec();
                write(
                    "kv_value",
                    &format!("upstream-{name}-{i}.bin"),
                    &[&[1u8][..], &bytes].concat(),
                );
            }
        }
    }
    // A Proxy split in two parts behind a head, as a writer of large values lays it out.
    let whole = biggest.expect("a golden Proxy");
    let (a, b) = whole.split_at(whole.len() / 2);
    use sha2::Digest as _;
    let manifest = ChunkManifest {
        parts: 2,
        sha256: hex::encode(sha2::Sha256::digest(&whole)),
    };
    let mut seed = vec![0u8];
    seed.extend(MAGIC);
    seed.extend(manifest.encode_to_vec());
    for part in [a, b] {
        seed.extend(SEPARATOR);
        seed.extend(part);
    }
    write("kv_value", "proxy-split-head.bin", &seed);
}

fn main() {
    als_seeds();
    kv_seeds();
}

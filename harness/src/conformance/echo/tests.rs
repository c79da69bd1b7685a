use std::net::Ipv4Addr;
use std::time::Instant;

use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::conformance::certs::ConformancePki;

const NS: &str = "gateway-conformance-infra";

/// A loopback address of this process's own (Linux routes all of 127/8 to lo).
fn test_ip(slot: u8) -> IpAddr {
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(127, 177 + slot, (pid >> 8) as u8, (pid as u8).max(1)))
}

async fn pod(slot: u8, tls: Option<EchoTls>) -> EchoPod {
    start(EchoPodSpec {
        ip: test_ip(slot),
        pod_name: pod_name("infra-backend-v1", 0),
        namespace: NS.to_string(),
        tls,
    })
    .await
    .unwrap()
}

type Answer = (StatusCode, HeaderMap, Bytes);

async fn h1_on<I>(io: I, req: Request<Full<Bytes>>) -> hyper::Result<Answer>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let (parts, body) = sender.send_request(req).await?.into_parts();
    Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
}

async fn h2_on<I>(io: I, req: Request<Full<Bytes>>) -> hyper::Result<Answer>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let (parts, body) = sender.send_request(req).await?.into_parts();
    Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
}

async fn h1(ip: IpAddr, port: u16, req: Request<Full<Bytes>>) -> hyper::Result<Answer> {
    h1_on(TcpStream::connect((ip, port)).await.unwrap(), req).await
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "example.com")
        .body(Full::default())
        .unwrap()
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn http1_echo_fields_headers_and_special_paths() {
    let p = pod(0, None).await;
    let req = Request::get("/foo?x=1")
        .header("host", "example.com:8080")
        .header("x-foo", "a")
        .header("x-foo", "b")
        .header("user-agent", "test")
        .header("X-Echo-Set-Header", "X-Out: one, x-out:two,Other:v")
        .body(Full::default())
        .unwrap();
    let (status, headers, body) = h1(p.ip(), HTTP_PORT, req).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-out"], "one,two");
    assert_eq!(headers["other"], "v");
    let v = json(&body);
    assert_eq!(v["path"], "/foo?x=1");
    assert_eq!(v["host"], "example.com:8080");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["proto"], "HTTP/1.1");
    assert_eq!(v["headers"]["X-Foo"], serde_json::json!(["a", "b"]));
    assert_eq!(v["headers"]["User-Agent"], serde_json::json!(["test"]));
    assert_eq!(v["headers"]["X-Echo-Set-Header"][0], "X-Out: one, x-out:two,Other:v");
    assert!(v["headers"].get("Host").is_none());
    assert_eq!(v["httpPort"], "3000");
    assert_eq!(v["namespace"], NS);
    assert_eq!(v["ingress"], "");
    assert_eq!(v["service"], "");
    assert_eq!(v["pod"], p.name());
    assert!(v.get("tls").is_none());
    assert!(String::from_utf8_lossy(&body).starts_with("{\n \"path\""));

    let (status, _, body) = h1(p.ip(), HTTP_PORT, get("/health")).await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"OK"[..]));
    let (status, _, _) = h1(p.ip(), HTTP_PORT, get("//health")).await.unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = h1(p.ip(), HTTP_PORT, get("/status/418")).await.unwrap();
    assert_eq!(status, 418);
    let (status, _, _) = h1(p.ip(), HTTP_PORT, get("/status/418?x=1")).await.unwrap();
    assert_eq!(status, 400);
    // `//` is collapsed for dispatch only: the echoed path is the raw one.
    let (status, _, body) = h1(p.ip(), HTTP_PORT, get("//a//b")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["path"], "//a//b");
    assert_eq!(p.log(), vec!["/foo?x=1".to_string(), "//a//b".to_string()]);
    // The h2c port turns plain HTTP/1.1 away.
    let (status, _, _) = h1(p.ip(), H2C_PORT, get("/foo")).await.unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn h2c_prior_knowledge_and_upgrade() {
    let p = pod(1, None).await;
    let req = Request::get("http://h2.example.com/bar?y=2")
        .header("x-foo", "c")
        .header("x-echo-set-header", "x-h2:yes")
        .body(Full::default())
        .unwrap();
    let tcp = TcpStream::connect((p.ip(), H2C_PORT)).await.unwrap();
    let (status, headers, body) = h2_on(tcp, req).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-h2"], "yes");
    let v = json(&body);
    assert_eq!(v["proto"], "HTTP/2.0");
    assert_eq!(v["path"], "/bar?y=2");
    assert_eq!(v["host"], "h2.example.com");
    assert_eq!(v["headers"]["X-Foo"][0], "c");
    assert_eq!(v["httpPort"], "3001");

    // `Upgrade: h2c` without HTTP2-Settings: served as HTTP/1.1 (Go's handler does too).
    let req = Request::get("/plain")
        .header("host", "example.com")
        .header("upgrade", "h2c")
        .body(Full::default())
        .unwrap();
    let (status, _, body) = h1(p.ip(), H2C_PORT, req).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["proto"], "HTTP/1.1");

    // A real upgrade: 101, then the answer to the upgrading request on stream 1.
    let mut tcp = TcpStream::connect((p.ip(), H2C_PORT)).await.unwrap();
    tcp.write_all(
        b"GET /up?z=3 HTTP/1.1\r\nHost: up.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Foo: bar\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut data = Vec::new();
    let read = async {
        loop {
            let mut header = [0u8; 9];
            tcp.read_exact(&mut header).await.unwrap();
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            assert_ne!(header[3], 0x7, "GOAWAY: {payload:?}");
            if header[3] == 0x0 && stream == 1 {
                data.extend_from_slice(&payload);
                if header[4] & 0x1 != 0 {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), read).await.unwrap();
    let v = json(&Bytes::from(data));
    assert_eq!(v["proto"], "HTTP/2.0");
    assert_eq!(v["path"], "/up?z=3");
    assert_eq!(v["host"], "up.example.com");
    assert_eq!(v["headers"]["X-Foo"][0], "bar");
    assert!(v["headers"].get("Http2-Settings").is_none());
    assert_eq!(v["httpPort"], "3001");
    assert_eq!(p.log().len(), 3);
}

fn client_config(pki: &ConformancePki, client_cert: Option<&str>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = pki.config_map_ca(NS, "tls-checks-ca-certificate").unwrap();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(secret) => {
            let pair = pki.secret(NS, secret).unwrap();
            let certs = vec![CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    ip: IpAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((ip, HTTPS_PORT)).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

#[tokio::test]
async fn tls_reports_sni_alpn_and_client_certificates() {
    let pki = ConformancePki::generate().unwrap();
    let tls = EchoTls {
        server: pki.secret(NS, "tls-checks-certificate").unwrap().clone(),
        client_ca_pem: Some(pki.config_map_ca(NS, "tls-checks-ca-certificate").unwrap().to_string()),
    };
    let p = pod(2, Some(tls)).await;

    // HTTP/2 with the gateway's client certificate.
    let config = client_config(&pki, Some("tls-checks-client-certificate"), &[b"h2", b"http/1.1"]);
    let stream = tls_connect(p.ip(), config, "abc.example.com").await.unwrap();
    let req = Request::get("https://abc.example.com/tls?a=b")
        .body(Full::default())
        .unwrap();
    let (status, _, body) = h2_on(stream, req).await.unwrap();
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["proto"], "HTTP/2.0");
    assert_eq!(v["path"], "/tls?a=b");
    assert_eq!(v["host"], "abc.example.com");
    assert_eq!(v["httpPort"], "8443");
    let t = &v["tls"];
    assert_eq!(t["serverName"], "abc.example.com");
    assert_eq!(t["negotiatedProtocol"], "h2");
    assert_eq!(t["version"], "TLSv1.3");
    assert!(
        t["cipherSuite"].as_str().unwrap().starts_with("TLS_AES_")
            || t["cipherSuite"] == "TLS_CHACHA20_POLY1305_SHA256"
    );
    let client = &pki.secret(NS, "tls-checks-client-certificate").unwrap().cert_pem;
    assert_eq!(t["peerCertificates"], serde_json::json!([client]));

    // HTTP/1.1 without a client certificate: allowed, none reported.
    let config = client_config(&pki, None, &[b"http/1.1"]);
    let stream = tls_connect(p.ip(), config, "other.example.com").await.unwrap();
    let (status, _, body) = h1_on(stream, get("/plain")).await.unwrap();
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["proto"], "HTTP/1.1");
    assert_eq!(v["tls"]["serverName"], "other.example.com");
    assert_eq!(v["tls"]["negotiatedProtocol"], "http/1.1");
    assert!(v["tls"].get("peerCertificates").is_none());

    // A client certificate of another CA is refused.
    let config = client_config(&pki, Some("tls-validity-checks-client-certificate"), &[b"http/1.1"]);
    let refused = match tls_connect(p.ip(), config, "abc.example.com").await {
        Err(_) => true,
        // TLS 1.3: the client learns of the refusal when it reads.
        Ok(stream) => h1_on(stream, get("/x")).await.is_err(),
    };
    assert!(refused);
    assert_eq!(p.log(), vec!["/tls?a=b".to_string(), "/plain".to_string()]);
}

fn is_reset(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = s.source();
    }
    false
}

#[tokio::test]
async fn retry_simulator_and_delay() {
    let p = pod(3, None).await;
    let ip = p.ip();
    let uri = "/retry/x?responseCode=500&succeedAfter=2&uuid=u1";
    for expected in [500, 500, 200] {
        let (status, _, _) = h1(ip, HTTP_PORT, get(uri)).await.unwrap();
        assert_eq!(status, expected);
    }
    assert_eq!(p.log(), vec![uri.to_string()]);

    // Without responseCode: the connection is reset, no answer.
    let uri = "/retry/y?succeedAfter=1&uuid=u2";
    let err = h1(ip, HTTP_PORT, get(uri)).await.unwrap_err();
    assert!(is_reset(&err), "{err:?}");
    let (status, _, body) = h1(ip, HTTP_PORT, get(uri)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body)["path"], uri);
    // Also over HTTP/2.
    let req = || {
        Request::get("http://example.com/retry/z?succeedAfter=1&uuid=u3")
            .body(Full::default())
            .unwrap()
    };
    let tcp = TcpStream::connect((ip, H2C_PORT)).await.unwrap();
    assert!(h2_on(tcp, req()).await.is_err());
    let tcp = TcpStream::connect((ip, H2C_PORT)).await.unwrap();
    assert_eq!(h2_on(tcp, req()).await.unwrap().0, 200);

    let (status, _, _) = h1(ip, HTTP_PORT, get("/retry/x?succeedAfter=1")).await.unwrap();
    assert_eq!(status, 400);

    let started = Instant::now();
    let uri = "/retry/x?delayRetry=200ms&responseCode=503&succeedAfter=1&uuid=u4";
    let (status, _, _) = h1(ip, HTTP_PORT, get(uri)).await.unwrap();
    assert_eq!(status, 503);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let started = Instant::now();
    let (status, _, body) = h1(ip, HTTP_PORT, get("/slow?delay=300ms")).await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(json(&body)["path"], "/slow?delay=300ms");
    let (status, _, body) = h1(ip, HTTP_PORT, get("/slow?delay=soon")).await.unwrap();
    assert_eq!(status, 500);
    assert_eq!(json(&body)["message"], "time: invalid duration \"soon\"");
}

#[tokio::test]
async fn websocket_echo() {
    let p = pod(4, None).await;
    let tcp = TcpStream::connect((p.ip(), HTTP_PORT)).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://example.com/ws", tcp)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
    ws.close(None).await.unwrap();
    let (status, _, _) = h1(p.ip(), HTTP_PORT, get("/ws")).await.unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn fleet_logs_pod_names_and_shutdown() {
    let name = pod_name("infra-backend-v1", 0);
    assert_eq!(name, pod_name("infra-backend-v1", 0));
    let parts: Vec<&str> = name.rsplitn(3, '-').collect();
    assert_eq!(parts[2], "infra-backend-v1");
    assert_eq!(parts[1].len(), 10);
    assert_eq!(parts[0].len(), 5);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );
    let second = pod_name("infra-backend-v1", 1);
    assert_eq!(second.rsplit('-').nth(1), Some(parts[1]));
    assert_ne!(second, name);
    assert_ne!(pod_name("infra-backend-v2", 0).rsplit('-').nth(1), Some(parts[1]));

    let mut fleet = EchoFleet::new();
    fleet.add(pod(5, None).await);
    let ip = fleet.pods()[0].ip();
    let uri = "/mirror?gateway-api-conformance-request-id=abc";
    h1(ip, HTTP_PORT, get(uri)).await.unwrap();
    h1(ip, HTTP_PORT, get(uri)).await.unwrap();
    assert!(fleet.echoed(NS, "infra-backend-v1", uri));
    assert_eq!(fleet.echo_count(NS, "infra-backend-v1", uri), 2);
    assert!(!fleet.echoed(NS, "infra-backend", uri));
    assert!(!fleet.echoed("other", "infra-backend-v1", uri));
    assert!(!fleet.echoed(NS, "infra-backend-v1", "/mirror"));
    fleet.clear_logs();
    assert!(!fleet.echoed(NS, "infra-backend-v1", uri));

    drop(fleet);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect((ip, HTTP_PORT)).await.is_err());
}

#[test]
fn helpers() {
    assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
    assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("1"), None);
    assert_eq!(parse_go_duration("s"), None);
    assert_eq!(parse_go_duration(""), None);
    assert_eq!(canonical_header_name("x-foo-bar"), "X-Foo-Bar");
    assert_eq!(canonical_header_name("user-agent"), "User-Agent");
    assert_eq!(canonical_header_name("x-mixedcase-add-1"), "X-Mixedcase-Add-1");
    assert_eq!(query_param("/a?b=1&uuid=x%2Dy&c", "uuid").as_deref(), Some("x-y"));
    assert_eq!(query_param("/a?b=1&c", "c").as_deref(), Some(""));
    assert_eq!(query_param("/a", "c"), None);
    let long = "v".repeat(300);
    let frame = h2_headers_frame(&[("x".into(), long.clone())]).unwrap();
    // 0x00, name (1 + 1 bytes), value length 300 = 127 + 173 -> 0x7f, 0xad, 0x01.
    assert_eq!(&frame[9..15], &[0x00, 0x01, b'x', 0x7f, 0xad, 0x01]);
    assert_eq!(frame.len(), 9 + 6 + 300);
}

use super::*;
use std::net::Ipv4Addr;

#[test]
fn url_host_follows_go() {
    let ep = |declared| Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(127, 10, 0, 1)),
        port: 18080,
        declared_port: declared,
    };
    assert_eq!(ep(80).url_host("http"), "127.10.0.1");
    assert_eq!(ep(8080).url_host("http"), "127.10.0.1:8080");
    assert_eq!(ep(443).url_host("https"), "127.10.0.1");
    assert_eq!(ep(443).url_host("http"), "127.10.0.1:443");
    assert_eq!(ep(8443).url_host("https"), "127.10.0.1:8443");
}

fn case_json(v: serde_json::Value) -> Case {
    serde_json::from_value(v).expect("case")
}

/// Sends every protocol to the echo stand-in (HTTP/1.1, h2c, WebSocket, HTTPS with a
/// client certificate, HTTP/2 over TLS, a TLS failure).
#[tokio::test]
async fn against_the_echo_stand_in() {
    use crate::conformance::certs::ConformancePki;
    use crate::conformance::echo;
    const NS: &str = "gateway-conformance-infra";
    let pki = ConformancePki::generate().expect("pki");
    let server = pki.secret(NS, "tls-validity-checks-certificate").expect("cert").clone();
    let client_ca = pki
        .config_map_ca(NS, "tls-validity-checks-ca-certificate")
        .map(str::to_string);
    let ip = IpAddr::V4(Ipv4Addr::new(127, 213, 7, 1));
    let _pod = echo::start(echo::EchoPodSpec {
        ip,
        pod_name: "infra-backend-v1-abcde-fghij".into(),
        namespace: NS.into(),
        tls: Some(echo::EchoTls {
            server: server.clone(),
            client_ca_pem: client_ca,
        }),
    })
    .await
    .expect("echo pod");
    let ep = |port, declared_port| Endpoint {
        ip,
        port,
        declared_port,
    };

    let plain = case_json(serde_json::json!({
        "name": "plain", "target": {"gateway": "x/y", "port": 80, "scheme": "http", "protocol": "HTTP/1.1"},
        "request": {"method": "GET", "host": null, "path": "/a/b?x=1&y=%20", "headers": {"X-Foo": "bar"}},
        "backend_set_response_headers": {"Some-Header": "v"},
        "expected": {"mode": "status", "status": [200]}
    }));
    let o = send(&plain, &ep(3000, 80), &ClientTls::default(), "/a/b?x=1&y=%20")
        .await
        .expect("HTTP/1.1");
    assert_eq!(o.status, 200);
    let echo = o.echo.clone().expect("echo json");
    assert_eq!(echo["path"], "/a/b?x=1&y=%20");
    assert_eq!(echo["host"], "127.213.7.1");
    assert_eq!(echo["headers"]["X-Foo"][0], "bar");
    assert_eq!(o.header_values("some-header"), vec!["v"]);
    assert_eq!(o.request_url, "http://127.213.7.1/a/b?x=1&y=%20");
    let o = send(&plain, &ep(3000, 8080), &ClientTls::default(), "/")
        .await
        .expect("HTTP/1.1");
    assert_eq!(
        o.echo.as_ref().map(|e| e["host"].clone()),
        Some("127.213.7.1:8080".into())
    );

    let mut h2c = plain.clone();
    h2c.target.protocol = "h2c-prior-knowledge".into();
    let o = send(&h2c, &ep(3001, 80), &ClientTls::default(), "/h2c")
        .await
        .expect("h2c");
    assert_eq!((o.status, o.protocol.as_str()), (200, "HTTP/2.0"));
    assert_eq!(o.echo.as_ref().map(|e| e["proto"].clone()), Some("HTTP/2.0".into()));

    let mut ws = plain.clone();
    ws.target.protocol = "websocket".into();
    let o = send(&ws, &ep(3000, 80), &ClientTls::default(), "/ws")
        .await
        .expect("ws");
    assert_eq!((o.status, o.websocket_echoed), (101, Some(true)));

    let mut https = plain.clone();
    https.target.scheme = "https".into();
    https.target.sni = Some("example.org".into());
    https.request.host = Some("example.org".into());
    let tls = ClientTls {
        trust_root_pem: Some(server.cert_pem.clone()),
        client_cert: pki.secret(NS, "tls-validity-checks-client-certificate").cloned(),
        sni: None,
    };
    let o = send(&https, &ep(8443, 443), &tls, "/tls").await.expect("https");
    assert_eq!(o.status, 200);
    assert!(o.client_cert_requested);
    let echo = o.echo.clone().expect("echo json");
    assert_eq!(echo["tls"]["serverName"], "example.org");
    assert_eq!(echo["host"], "example.org");
    assert_eq!(echo["tls"]["peerCertificates"].as_array().map(Vec::len), Some(1));

    let mut h2 = https.clone();
    h2.target.protocol = "HTTP/2".into();
    let o = send(&h2, &ep(8443, 443), &tls, "/h2").await.expect("h2");
    assert_eq!((o.status, o.protocol.as_str()), (200, "HTTP/2.0"));
    assert_eq!(o.echo.as_ref().map(|e| e["host"].clone()), Some("example.org".into()));

    let wrong = ClientTls {
        trust_root_pem: pki.config_map_ca(NS, "mismatch-ca-certificate").map(str::to_string),
        ..tls.clone()
    };
    let err = send(&https, &ep(8443, 443), &wrong, "/").await.expect_err("untrusted");
    assert_eq!(err.stage, Stage::Tls, "{err}");
    let err = send(&plain, &ep(3999, 80), &ClientTls::default(), "/")
        .await
        .expect_err("closed port");
    assert_eq!(err.stage, Stage::Connect, "{err}");
}

#[test]
fn host_name_strips_port() {
    assert_eq!(host_name("example.org"), "example.org");
    assert_eq!(host_name("foo.com:8080"), "foo.com");
    assert_eq!(host_name("[::1]:80"), "::1");
}

use super::*;
use crate::conformance::cases::{Cases, default_path, load};
use serde_json::json;

fn cases() -> Cases {
    load(&default_path()).expect("cases.json")
}

fn case<'a>(cases: &'a Cases, test: &str, index: usize) -> &'a Case {
    &cases.test(test).expect("test").cases[index]
}

fn echo(path: &str, method: &str, namespace: &str, pod: &str, headers: Value) -> Observed {
    let mut o = Observed::new(200);
    o.headers = vec![("content-type".into(), "application/json".into())];
    o.echo = Some(json!({
        "path": path, "host": "127.10.0.1", "method": method, "proto": "HTTP/1.1",
        "headers": headers, "namespace": namespace, "pod": pod,
    }));
    o.request_url = format!("http://127.10.0.1{path}");
    o
}

#[test]
fn passing_echo_and_wrong_path() {
    let all = cases();
    let c = case(&all, "HTTPRouteSimpleSameNamespace", 0);
    let path = c.request.path.clone();
    let good = echo(
        &path,
        "GET",
        "gateway-conformance-infra",
        "infra-backend-v1-6d8f9c7b5-abcde",
        json!({}),
    );
    assert_eq!(judge(c, &path, &good), Ok(()));

    let bad = echo(
        "/v2",
        "GET",
        "gateway-conformance-infra",
        "infra-backend-v1-6d8f9c7b5-abcde",
        json!({}),
    );
    let err = judge(c, &path, &bad).expect_err("wrong path");
    assert!(err.starts_with("echo path \"/v2\" expected"), "{err}");

    let wrong_pod = echo(
        &path,
        "GET",
        "gateway-conformance-infra",
        "infra-backend-v2-6d8f9c7b5-abcde",
        json!({}),
    );
    assert!(judge(c, &path, &wrong_pod).is_err());

    let mut s503 = Observed::new(503);
    s503.request_url = "http://127.10.0.1/".into();
    assert_eq!(judge(c, &path, &s503), Err("status 503, expected [200]".to_string()));
}

#[test]
fn request_headers_are_joined_and_case_insensitive() {
    let all = cases();
    let t = all.test("HTTPRouteRequestMirror").expect("test");
    let c = &t.cases[1];
    let path = c.request.path.replace("{uuid}", "1234");
    let headers = json!({
        "X-Header-Add": ["header-val-1"],
        "x-header-add-append": ["append-val-1", "header-val-2"],
        "X-Header-Set": ["set-overwrites-values"],
    });
    let o = echo(
        &path,
        "GET",
        "gateway-conformance-infra",
        "infra-backend-v1-a-b",
        headers.clone(),
    );
    assert_eq!(judge(c, &path, &o), Ok(()));
    // The uuid must be the one sent.
    let other = c.request.path.replace("{uuid}", "9999");
    assert!(judge(c, &other, &o).expect_err("uuid").starts_with("echo path"));

    let mut with_removed = headers;
    with_removed["X-Header-Remove"] = json!(["remove-val"]);
    let o = echo(
        &path,
        "GET",
        "gateway-conformance-infra",
        "infra-backend-v1-a-b",
        with_removed,
    );
    assert!(judge(c, &path, &o).expect_err("absent").contains("X-Header-Remove"));
}

fn redirect(status: u16, location: &str, request_url: &str) -> Observed {
    let mut o = Observed::new(status);
    o.headers = vec![("location".into(), location.into())];
    o.location = Some(location.into());
    o.request_url = request_url.into();
    o
}

#[test]
fn redirects_and_the_port_rule() {
    let all = cases();
    // scheme https, host/port unset: no port or 443.
    let t = all.test("HTTPRouteRedirectScheme").expect("test");
    let c = &t.cases[0];
    let base = "http://127.10.0.1/scheme";
    assert_eq!(
        judge(c, "/scheme", &redirect(302, "https://127.10.0.1/scheme", base)),
        Ok(())
    );
    assert_eq!(
        judge(c, "/scheme", &redirect(302, "https://127.10.0.1:443/scheme", base)),
        Ok(())
    );
    let err = judge(c, "/scheme", &redirect(302, "https://127.10.0.1:8443/scheme", base)).expect_err("port");
    assert!(err.contains("expected none or 443"), "{err}");
    let err = judge(c, "/scheme", &redirect(302, "http://127.10.0.1/scheme", base)).expect_err("scheme");
    assert!(err.contains("scheme \"http\" expected \"https\""), "{err}");
    let err = judge(c, "/scheme", &redirect(301, "https://127.10.0.1/scheme", base)).expect_err("status");
    assert_eq!(err, "status 301, expected [302]");

    // Listener declared on 8080, nothing set: Location must carry :8080.
    let t = all.test("HTTPRouteRedirectPortAndScheme").expect("test");
    let c = t.cases.iter().find(|c| c.name.starts_with("6 ")).expect("case 6");
    let path = "/scheme-nil-and-port-nil";
    let base = "http://127.10.0.19:8080/scheme-nil-and-port-nil";
    assert_eq!(
        judge(
            c,
            path,
            &redirect(302, "http://example.org:8080/scheme-nil-and-port-nil", base)
        ),
        Ok(())
    );
    let err = judge(
        c,
        path,
        &redirect(302, "http://example.org/scheme-nil-and-port-nil", base),
    )
    .expect_err("port");
    assert!(err.contains("port \"\" expected \"8080\""), "{err}");

    // A relative Location resolves against the request URL (no port for 80).
    let t = all.test("HTTPRouteRedirectPath").expect("test");
    let c = &t.cases[0];
    let want = c.expected.redirect.as_ref().and_then(|r| r.path.clone()).expect("path");
    let base = format!("http://127.10.0.1{}", c.request.path);
    assert_eq!(judge(c, &c.request.path, &redirect(302, &want, &base)), Ok(()));
    let with_port = format!("http://127.10.0.1:8080{want}");
    assert!(judge(c, &c.request.path, &redirect(302, &with_port, &base)).is_err());
}

#[test]
fn timeout_codes_match_each_other() {
    let all = cases();
    let c = case(&all, "HTTPRouteTimeoutRequest", 1);
    assert_eq!(c.expected.status, Some(vec![504]));
    assert_eq!(judge(c, &c.request.path, &Observed::new(504)), Ok(()));
    assert_eq!(judge(c, &c.request.path, &Observed::new(408)), Ok(()));
    assert!(judge(c, &c.request.path, &Observed::new(200)).is_err());
}

#[test]
fn cors_preflight_must_come_from_the_gateway() {
    let all = cases();
    let t = all.test("HTTPRouteCORS").expect("test");
    let c = t
        .cases
        .iter()
        .find(|c| c.request.method == "OPTIONS" && c.request.path == "/cors-wildcard-methods-headers")
        .expect("preflight case");
    assert_eq!(c.expected.namespace.as_deref(), Some(""));
    let mut o = Observed::new(204);
    o.headers = vec![
        ("access-control-allow-origin".into(), "https://other.foo.com".into()),
        ("access-control-allow-methods".into(), "PUT".into()),
        ("Access-Control-Allow-Headers".into(), "x-header-2,x-header-1".into()),
        ("access-control-allow-credentials".into(), "true".into()),
    ];
    assert_eq!(judge(c, &c.request.path, &o), Ok(()));

    // Forwarded to the echo server: fails on the namespace.
    let mut forwarded = echo(
        &c.request.path,
        "OPTIONS",
        "gateway-conformance-infra",
        "infra-backend-v1-a-b",
        json!({}),
    );
    forwarded.headers.extend(o.headers.clone());
    let err = judge(c, &c.request.path, &forwarded).expect_err("echo answer");
    assert!(err.contains("expected an answer from the gateway"), "{err}");

    // A wrong alternative.
    let mut wrong = o.clone();
    wrong.headers[0].1 = "*".into();
    assert!(
        judge(c, &c.request.path, &wrong)
            .expect_err("origin")
            .contains("access-control-allow-origin")
    );
}

#[test]
fn response_headers_and_absent_headers() {
    let all = cases();
    let c = case(&all, "HTTPRouteResponseHeaderModifier", 0);
    let mut o = echo(
        &c.request.path,
        "GET",
        "gateway-conformance-infra",
        "infra-backend-v1-a-b",
        json!({}),
    );
    o.headers.push(("some-other-header".into(), "val".into()));
    o.headers.push(("x-header-set".into(), "set-overwrites-values".into()));
    assert_eq!(judge(c, &c.request.path, &o), Ok(()));
    o.headers.push(("x-header-set".into(), "again".into()));
    let err = judge(c, &c.request.path, &o).expect_err("joined");
    assert!(err.contains("set-overwrites-values,again"), "{err}");
}

#[test]
fn backend_tls_sni() {
    let all = cases();
    let c = case(&all, "BackendTLSPolicy", 0);
    let mut o = echo(
        &c.request.path,
        "GET",
        "gateway-conformance-infra",
        "tls-backend-a-b",
        json!({}),
    );
    if let Some(e) = o.echo.as_mut() {
        e["tls"] = json!({"serverName": "abc.example.com", "peerCertificates": []});
    }
    assert_eq!(judge(c, &c.request.path, &o), Ok(()));
    if let Some(e) = o.echo.as_mut() {
        e["tls"]["serverName"] = json!("other.example.com");
    }
    assert!(judge(c, &c.request.path, &o).expect_err("sni").contains("SNI"));
}

/// The loops against the echo stand-in: status mode, fresh uuids for the retry
/// simulator, a mirror log check, not_200 and transport_error.
#[tokio::test]
async fn run_case_against_the_echo_stand_in() {
    use crate::conformance::certs::ConformancePki;
    use crate::conformance::echo;
    use std::net::{IpAddr, Ipv4Addr};
    const NS: &str = "gateway-conformance-infra";
    let pki = ConformancePki::generate().expect("pki");
    let server = pki.secret(NS, "tls-validity-checks-certificate").expect("cert").clone();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 213, 8, 1));
    let mut fleet = echo::EchoFleet::new();
    fleet.add(
        echo::start(echo::EchoPodSpec {
            ip,
            pod_name: echo::pod_name("infra-backend-v1", 0),
            namespace: NS.into(),
            tls: Some(echo::EchoTls {
                server: server.clone(),
                client_ca_pem: pki
                    .config_map_ca(NS, "tls-validity-checks-ca-certificate")
                    .map(str::to_string),
            }),
        })
        .await
        .expect("echo pod"),
    );
    let endpoint = Endpoint {
        ip,
        port: 3000,
        declared_port: 80,
    };
    let opts = RetryOptions {
        timeout: Duration::from_secs(3),
        mirror_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let make = |v: Value| -> Case { serde_json::from_value(v).expect("case") };
    let target = json!({"gateway": "x/y", "port": 80, "scheme": "http", "protocol": "HTTP/1.1"});
    let plain = ClientTls::default();

    let ok = make(json!({
        "name": "ok", "target": target,
        "request": {"method": "GET", "host": null, "path": "/mirror?gateway-api-conformance-request-id={uuid}", "headers": {}},
        "expected": {"mode": "status", "status": [200], "backend": "infra-backend-v1", "namespace": NS,
            "request_seen_by_backend": {"path": "/mirror?gateway-api-conformance-request-id={uuid}", "host": null, "method": "GET", "headers": {}},
            "mirrored_to": [{"service": "infra-backend-v1", "namespace": NS, "percent": null}]}
    }));
    let out = run_case(&ok, &endpoint, &plain, &fleet, &opts).await;
    assert!(out.passed, "{out:?}");
    assert_eq!(out.attempts, 3);
    let mut not_mirrored = ok.clone();
    not_mirrored.expected.mirrored_to[0].service = "infra-backend-v2".into();
    let out = run_case(&not_mirrored, &endpoint, &plain, &fleet, &opts).await;
    assert!(!out.passed);
    assert!(out.first_difference.unwrap_or_default().contains("infra-backend-v2"));

    // The simulator fails the first try of every uuid: only fresh uuids give 3 × 500.
    let retry = make(json!({
        "name": "retry", "target": target,
        "request": {"method": "GET", "host": null, "path": "/retry/x?responseCode=500&succeedAfter=1&uuid={uuid}", "headers": {}},
        "expected": {"mode": "status", "status": [500]}
    }));
    let out = run_case(&retry, &endpoint, &plain, &fleet, &opts).await;
    assert!(out.passed, "{out:?}");

    let not_200 = make(json!({
        "name": "n", "target": target,
        "request": {"method": "GET", "host": null, "path": "/status/404", "headers": {}},
        "expected": {"mode": "not_200"}
    }));
    assert!(run_case(&not_200, &endpoint, &plain, &fleet, &opts).await.passed);
    let mut is_200 = not_200.clone();
    is_200.request.path = "/".into();
    let out = run_case(&is_200, &endpoint, &plain, &fleet, &opts).await;
    assert_eq!((out.passed, out.attempts), (false, 1));

    // A client certificate from another CA: the handshake must fail, after a request.
    let https = make(json!({
        "name": "t",
        "target": {"gateway": "x/y", "port": 443, "scheme": "https", "protocol": "HTTP/1.1", "sni": "example.org",
            "trust_ca_from_secret": "a/b", "client_cert_secret": "c/d"},
        "request": {"method": "GET", "host": "example.org", "path": "/", "headers": {}},
        "expected": {"mode": "transport_error"}
    }));
    let tls_endpoint = Endpoint {
        port: 8443,
        declared_port: 443,
        ..endpoint
    };
    let tls = ClientTls {
        trust_root_pem: Some(server.cert_pem.clone()),
        client_cert: pki
            .secret(NS, "tls-validity-checks-per-port-client-certificate")
            .cloned(),
        sni: None,
    };
    let out = run_case(&https, &tls_endpoint, &tls, &fleet, &opts).await;
    assert!(out.passed, "{out:?}");
    let good = ClientTls {
        client_cert: pki.secret(NS, "tls-validity-checks-client-certificate").cloned(),
        ..tls
    };
    let out = run_case(&https, &tls_endpoint, &good, &fleet, &opts).await;
    assert!(!out.passed);
}

#[test]
fn helpers() {
    assert_eq!(backend_from_pod("infra-backend-v1-6d8f9c7b5-abcde"), "infra-backend-v1");
    assert_eq!(backend_from_pod("pod"), "pod");
    assert_eq!(
        add_query_param("/percent-mirror", REQUEST_ID_PARAM, "u"),
        "/percent-mirror?gateway-api-conformance-request-id=u"
    );
    assert_eq!(add_query_param("/p?z=1&a=2", "m", "u"), "/p?a=2&m=u&z=1");
    assert_eq!(uuid_in("/mirror?id={uuid}", "/mirror?id=abc"), Some("abc"));
    assert_eq!(uuid_in("/r?uuid={uuid}&x=1", "/r?uuid=abc&x=1"), Some("abc"));
    let l = resolve_location("//h.example:81/a%20b?q", "http://1.2.3.4/x", "http").expect("parse");
    assert_eq!(
        l,
        LocationParts {
            scheme: "http".into(),
            host: "h.example".into(),
            port: "81".into(),
            path: "/a b".into()
        }
    );
    let shares: BTreeMap<String, f64> = [("a".to_string(), 0.7), ("b".to_string(), 0.3), ("c".to_string(), 0.0)].into();
    let round = |a: usize, b: usize, c: usize| -> Vec<Result<String, String>> {
        let mut v = vec![Ok("a-x-y".to_string()); a];
        v.extend(vec![Ok("b-x-y".to_string()); b]);
        v.extend(vec![Ok("c-x-y".to_string()); c]);
        v
    };
    assert_eq!(weight_verdict(&round(350, 150, 0), &shares, 0.05), Ok(()));
    assert!(weight_verdict(&round(349, 150, 1), &shares, 0.05).is_err());
    assert!(weight_verdict(&round(400, 100, 0), &shares, 0.05).is_err());
}

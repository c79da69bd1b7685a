//! The gateway's validating admission webhook (8443, HTTPS) against the real controller's
//! validation service (9988): AdmissionReview JSON as the API server posts it, with
//! `alwaysAccept: false`. An invalid regex is an error (from the controller), a missing
//! backend Service a warning (from the gateway): denied only while allowWarnings is false.
use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use kgw_harness::{Component, Placement, System, SystemConfig, wait_for, write_manifest_atomically};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};
use tokio_rustls::{TlsConnector, rustls};

use crate::support::{WAIT, gateway_yaml, service_yaml};

struct Webhook {
    system: System,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    _certs: tempfile::TempDir,
}

/// nats-server, controller and gateway on a block of their own; the gateway's webhook
/// serves a certificate this test generates (KGW_WEBHOOK_CERT/KEY) and trusts.
async fn start(allow_warnings: bool) -> Result<Webhook> {
    let lease = kgw_harness::addr::allocate()?;
    let layout = lease.layout.clone();
    let addr = layout.webhook_addr();
    let config = tempfile::tempdir()?.keep();
    write_manifest_atomically(&config, "gateway.yaml", &gateway_yaml())?;
    write_manifest_atomically(&config, "svc-echo.yaml", &service_yaml("echo", &[layout.backend(1)]))?;

    let certs = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![addr.ip().to_string()])?.self_signed(&key)?;
    let (cert_path, key_path) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&cert_path)?)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let env = [
        ("KGW_ALWAYS_ACCEPT", "false".to_string()),
        ("KGW_ALLOW_WARNINGS", allow_warnings.to_string()),
        ("KGW_WEBHOOK_CERT", cert_path.display().to_string()),
        ("KGW_WEBHOOK_KEY", key_path.display().to_string()),
        // The controller's other ports on the block's controller host (flags, when the
        // harness passes them, take precedence).
        (
            "KGW_REST_XDS_ADDR",
            SocketAddr::new(layout.controller, 9976).to_string(),
        ),
        ("KGW_DEBUG_ADDR", SocketAddr::new(layout.controller, 9966).to_string()),
    ];
    let system = System::start(SystemConfig {
        config_dir: Some(config),
        placement: Placement::Lease(lease),
        // Discovery too: the controller serves (and so knows the problems of) a Proxy once
        // it has read the Upstreams discovery writes.
        components: vec![
            Component::Nats,
            Component::Controller,
            Component::Gateway,
            Component::Discovery,
        ],
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    })
    .await?;
    let webhook = Webhook {
        system,
        addr,
        tls: Arc::new(tls),
        _certs: certs,
    };
    // Up when a valid route is allowed: the webhook listens, the gateway has read its
    // config and the controller answers.
    wait_for(WAIT, || async {
        let response = webhook
            .review(&create_route("probe", "PathPrefix", "/probe", "echo"))
            .await?;
        ensure!(response["allowed"] == json!(true), "not ready: {response}");
        Ok(())
    })
    .await
    .with_context(|| format!("gateway log:\n{}", webhook.system.log_tail(Component::Gateway, 30)))?;
    Ok(webhook)
}

impl Webhook {
    /// Posts `body` to /validation over HTTPS.
    async fn post(&self, body: Bytes) -> Result<hyper::Response<hyper::body::Incoming>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let stream = TlsConnector::from(self.tls.clone())
            .connect(ServerName::IpAddress(self.addr.ip().into()), tcp)
            .await
            .context("TLS handshake")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::post("/validation?timeout=10s")
            .header("host", format!("gateway.kgw.svc:{}", self.addr.port()))
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        Ok(sender.send_request(request).await?)
    }

    /// Posts `review` to POST /validation over HTTPS; the AdmissionReview's `response`.
    async fn review(&self, review: &Value) -> Result<Value> {
        let response = self.post(Bytes::from(review.to_string())).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != hyper::StatusCode::OK {
            bail!("POST /validation: {status}: {}", String::from_utf8_lossy(&body));
        }
        let answer: Value = serde_json::from_slice(&body)?;
        ensure!(
            answer["response"]["uid"] == review["request"]["uid"],
            "uid mismatch: {answer}"
        );
        Ok(answer["response"].clone())
    }
}

/// A CREATE of an HTTPRoute on Gateway `default/gw`, as the API server sends it.
fn create_route(name: &str, path_type: &str, path: &str, service: &str) -> Value {
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": name, "namespace": "default", "uid": "e2c1b9a0-0000-4000-8000-000000000001",
            "generation": 1, "creationTimestamp": "2024-05-01T10:00:00Z",
            "managedFields": [{"apiVersion": "gateway.networking.k8s.io/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {}}, "manager": "kubectl", "operation": "Update", "time": "2024-05-01T10:00:00Z"}]
        },
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "rules": [{
                "matches": [{"path": {"type": path_type, "value": path}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": 80, "weight": 1}]
            }]
        }
    });
    let gvk = json!({"group": "gateway.networking.k8s.io", "version": "v1", "kind": "HTTPRoute"});
    let gvr = json!({"group": "gateway.networking.k8s.io", "version": "v1", "resource": "httproutes"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("b1d2c3e4-{name}"),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": name, "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": route, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-client-side-apply"}
        }
    })
}

fn message(response: &Value) -> String {
    response["status"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_regex_and_missing_backend_are_denied_without_allow_warnings() -> Result<()> {
    let webhook = start(false).await?;

    let response = webhook
        .review(&create_route("bad-regex", "RegularExpression", "([", "echo"))
        .await?;
    ensure!(
        response["allowed"] == json!(false),
        "an invalid regex must be denied: {response}"
    );
    let text = message(&response);
    ensure!(
        text.contains("HTTPRoute/default/bad-regex") && text.contains("invalid regex \"([\""),
        "the controller's error names the route and the regex: {text}"
    );

    let response = webhook
        .review(&create_route("lost", "PathPrefix", "/lost", "nope"))
        .await?;
    ensure!(
        response["allowed"] == json!(false),
        "allowWarnings is false: {response}"
    );
    let text = message(&response);
    ensure!(text.contains("Service default/nope not found"), "{text}");

    let response = webhook
        .review(&create_route("fine", "PathPrefix", "/fine", "echo"))
        .await?;
    ensure!(response["allowed"] == json!(true), "{response}");
    Ok(())
}

/// A body over the webhook's 8 MiB cap is answered 413 (the client, still sending, gets it).
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_review_is_refused_with_413() -> Result<()> {
    let webhook = start(true).await?;
    let status = webhook.post(Bytes::from(vec![b' '; 20 * 1024 * 1024])).await?.status();
    ensure!(status == hyper::StatusCode::PAYLOAD_TOO_LARGE, "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_backend_is_allowed_with_allow_warnings() -> Result<()> {
    let webhook = start(true).await?;
    let response = webhook
        .review(&create_route("lost", "PathPrefix", "/lost", "nope"))
        .await?;
    ensure!(
        response["allowed"] == json!(true),
        "a warning alone is allowed: {response}"
    );
    let warnings = response["warnings"].to_string();
    ensure!(warnings.contains("Service default/nope not found"), "{warnings}");

    let response = webhook
        .review(&create_route("bad-regex", "RegularExpression", "([", "echo"))
        .await?;
    ensure!(response["allowed"] == json!(false), "an error still denies: {response}");
    Ok(())
}

/// The controller's `kgw_controller_validations_total`, by `request/answer`.
async fn validations(system: &System) -> Result<std::collections::BTreeMap<String, u64>> {
    let url = system
        .monitoring_url(Component::Controller, "/metrics")
        .context("controller has no monitoring port")?;
    let text = kgw_harness::get(&url, None).await?.text();
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("kgw_controller_validations_total{"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            Some((
                format!("{}/{}", label("request")?, label("answer")?),
                value.trim().parse::<f64>().ok()? as u64,
            ))
        })
        .collect())
}

/// `gateway status problems.validation`: what the background validation reports.
fn validation_status(system: &System) -> Result<String> {
    let out = std::process::Command::new(kgw_harness::bins::bin("gateway")?)
        .args(["status", "--nats-url", &system.nats_url(), "problems.validation"])
        .args(system.admin_cli_args())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_mode_reports_what_would_be_denied_and_the_cli_validates_files() -> Result<()> {
    let webhook = start(false).await?;
    let system = &webhook.system;
    let bad = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-regex, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: RegularExpression, value: '(['}}]
    backendRefs: [{name: echo, port: 80}]
";
    // The webhook's probe reviews at start dry-ran Proxies; the background checks need not.
    let before = validations(system).await?;
    write_manifest_atomically(system.config_dir(), "bad-regex.yaml", bad)?;
    let status = wait_for(WAIT, || async {
        let text = validation_status(system)?;
        ensure!(text.contains("HTTPRoute/default/bad-regex"), "status so far: {text}");
        Ok(text)
    })
    .await?;
    ensure!(
        status.contains("wouldDeny: true") && status.contains("invalid regex"),
        "{status}"
    );
    // The controller said what it found translating the Proxy it serves: the gateway
    // neither translated the state again nor sent a Proxy for it.
    let after = validations(system).await?;
    let count = |counts: &std::collections::BTreeMap<String, u64>, key: &str| counts.get(key).copied().unwrap_or(0);
    ensure!(
        count(&after, "served/ok") > count(&before, "served/ok")
            && count(&after, "dry_run/ok") == count(&before, "dry_run/ok"),
        "validations answered: {before:?} before, {after:?} after"
    );
    // Fixed: the report clears.
    kgw_harness::remove_manifest(system.config_dir(), "bad-regex.yaml")?;
    wait_for(WAIT, || async {
        let text = validation_status(system)?;
        ensure!(!text.contains("bad-regex"), "status so far: {text}");
        Ok(())
    })
    .await?;

    // `gateway validate` of the config dir plus the bad file, against the same controller.
    let files = tempfile::tempdir()?;
    std::fs::write(files.path().join("bad-regex.yaml"), bad)?;
    let validation_addr = SocketAddr::new(system.layout().controller, 9988).to_string();
    let run = |paths: Vec<String>| -> Result<(i32, String)> {
        let out = std::process::Command::new(kgw_harness::bins::bin("gateway")?)
            .arg("validate")
            .args(paths)
            .args(["--validation-addr", &validation_addr])
            .args(system.admin_cli_args())
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
        ))
    };
    let config = system.config_dir().display().to_string();
    let (code, out) = run(vec![config.clone(), files.path().display().to_string()])?;
    ensure!(code == 1, "exit {code}: {out}");
    ensure!(
        out.contains("HTTPRoute/default/bad-regex\n  error: ") && out.contains("invalid regex"),
        "{out}"
    );
    let (code, out) = run(vec![config])?;
    ensure!(code == 0, "exit {code}: {out}");
    Ok(())
}

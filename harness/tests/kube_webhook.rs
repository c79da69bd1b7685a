//! The gateway's validating webhook called by a real kube-apiserver: the Gateway API CRDs
//! applied, a ValidatingWebhookConfiguration pointing at the gateway (by URL: no
//! kube-proxy runs, so the API server cannot reach a Service) with the CA that signed the
//! webhook's certificate, and HTTPRoutes and RouteOptions created with kubectl. With
//! `alwaysAccept=false` an invalid route is refused and kubectl shows our reason (a
//! RouteOption whose problem is only a warning is admitted with it); with `alwaysAccept`
//! the invalid route is admitted and kubectl prints our finding as a warning.
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kgw_harness::kube::KubeCluster;
use kgw_harness::manifest::{gateway_yaml, service_yaml};
use kgw_harness::{Component, Placement, System, SystemConfig, wait_for, write_manifest_atomically};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const CONFIG_NAME: &str = "kgw-test-validation";
const WAIT: Duration = Duration::from_secs(60);

/// The gateway's webhook (with the controller it asks, and NATS) on a block of its own,
/// serving a certificate the cluster CA signed for its address.
struct Webhook {
    system: System,
    url: String,
    _certs: tempfile::TempDir,
}

async fn start_webhook(cluster: &KubeCluster, always_accept: bool) -> Result<Webhook> {
    let lease = kgw_harness::addr::allocate()?;
    let layout = lease.layout.clone();
    let addr = layout.webhook_addr();
    let config = tempfile::tempdir()?.keep();
    write_manifest_atomically(&config, "gateway.yaml", &gateway_yaml())?;
    write_manifest_atomically(
        &config,
        "svc-echo.yaml",
        &service_yaml("echo", &[layout.backend(1).ip()], 8080),
    )?;
    // A route the gateway already serves, for RouteOptions to attach to.
    write_manifest_atomically(&config, "route-base.yaml", &route("base", "PathPrefix", "/base"))?;

    let certs = tempfile::tempdir()?;
    let pair = cluster.serving_cert(&[&addr.ip().to_string()])?;
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert, &pair.cert_pem)?;
    std::fs::write(&key, &pair.key_pem)?;
    let env = [
        ("KGW_ALWAYS_ACCEPT", always_accept.to_string()),
        ("KGW_WEBHOOK_CERT", cert.display().to_string()),
        ("KGW_WEBHOOK_KEY", key.display().to_string()),
        // The controller's other ports on the block's controller host.
        ("KGW_REST_XDS_ADDR", format!("{}:9976", layout.controller)),
        ("KGW_DEBUG_ADDR", format!("{}:9966", layout.controller)),
    ];
    let system = System::start(SystemConfig {
        config_dir: Some(config),
        placement: Placement::Lease(lease),
        components: vec![Component::Nats, Component::Controller, Component::Gateway],
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    })
    .await?;
    Ok(Webhook {
        system,
        url: format!("https://{addr}/validation"),
        _certs: certs,
    })
}

/// Registers (or replaces) the webhook for HTTPRoutes and Gateways, failing closed so
/// that an unreachable webhook shows as an error rather than as admission.
async fn register(cluster: &KubeCluster, url: &str) -> Result<()> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client());
    if api.get_opt(CONFIG_NAME).await?.is_some() {
        api.delete(CONFIG_NAME, &DeleteParams::default()).await?;
    }
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": CONFIG_NAME},
        "webhooks": [{
            "name": "gateway.kgw.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {"url": url, "caBundle": b64(cluster.ca_pem().as_bytes())},
            "rules": [{
                "apiGroups": ["gateway.networking.k8s.io"], "apiVersions": ["*"],
                "resources": ["httproutes", "gateways"], "operations": ["CREATE", "UPDATE", "DELETE"]
            }, {
                "apiGroups": ["gateway.solo.io"], "apiVersions": ["*"],
                "resources": ["routeoptions"], "operations": ["CREATE", "UPDATE", "DELETE"]
            }]
        }]
    }))?;
    api.create(&PostParams::default(), &config)
        .await
        .context("creating the ValidatingWebhookConfiguration")?;
    Ok(())
}

/// Standard base64 (the JSON form of a `[]byte` field), without another dependency.
fn b64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn gateway_api_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kgw/crds/gateway-api")
}

/// kubectl with `stdin` as its input.
fn kubectl(cluster: &KubeCluster, args: &[&str], stdin: &str) -> Result<Output> {
    cluster.kubectl_with_input(args, stdin)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Gateway API CRDs and our RouteOption CRD, applied and Established.
fn apply_crds(cluster: &KubeCluster) -> Result<()> {
    let dir = gateway_api_crds();
    // Server-side: the largest CRDs exceed the client-side apply annotation's size.
    let out = kubectl(
        cluster,
        &["apply", "--server-side", "-f", &dir.display().to_string()],
        "",
    )?;
    ensure!(
        out.status.success(),
        "kubectl apply of the Gateway API CRDs: {}",
        text(&out)
    );
    for ours in ["gateway.solo.io_routeoptions.yaml", "gloo.solo.io_upstreams.yaml"] {
        let file = gateway_api_crds().join("..").join(ours);
        let out = kubectl(
            cluster,
            &["apply", "--server-side", "-f", &file.display().to_string()],
            "",
        )?;
        ensure!(out.status.success(), "kubectl apply of our CRD {ours}: {}", text(&out));
    }
    let out = kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/routeoptions.gateway.solo.io",
            "crd/upstreams.gloo.solo.io",
        ],
        "",
    )?;
    ensure!(out.status.success(), "CRDs not Established: {}", text(&out));
    Ok(())
}

fn route_option(name: &str, timeout: &str) -> String {
    format!(
        "apiVersion: gateway.solo.io/v1
kind: RouteOption
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: base}}]
  options: {{timeout: {timeout}}}
"
    )
}

fn route(name: &str, path_type: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: {path_type}, value: '{path}'}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"
    )
}

/// Up when the API server, calling the webhook, admits a valid route (server dry run:
/// validated the same, stored nowhere).
async fn wait_until_called(cluster: &KubeCluster, webhook: &Webhook) -> Result<()> {
    wait_for(WAIT, || async {
        let out = kubectl(
            cluster,
            &["create", "--dry-run=server", "-f", "-"],
            &route("probe", "PathPrefix", "/probe"),
        )?;
        ensure!(out.status.success(), "not admitted yet: {}", text(&out));
        Ok(())
    })
    .await
    .with_context(|| format!("gateway log:\n{}", webhook.system.log_tail(Component::Gateway, 30)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_calls_our_webhook_and_the_client_sees_our_reason() -> Result<()> {
    let cluster = KubeCluster::start().await?;
    apply_crds(&cluster)?;
    // An invalid regex: the CRD's schema accepts it, our validation (the controller's
    // dry run, as Envoy would) refuses it.
    let bad = route("bad-regex", "RegularExpression", "([");

    // alwaysAccept=false: denied, and kubectl shows why.
    let webhook = start_webhook(&cluster, false).await?;
    register(&cluster, &webhook.url).await?;
    wait_until_called(&cluster, &webhook).await?;
    let out = kubectl(&cluster, &["create", "-f", "-"], &bad)?;
    let shown = text(&out);
    println!("alwaysAccept=false, kubectl create:\n{shown}");
    ensure!(!out.status.success(), "an invalid regex must be denied:\n{shown}");
    ensure!(
        shown.contains("denied the request")
            && shown.contains("HTTPRoute/default/bad-regex")
            && shown.contains("invalid regex \"([\""),
        "kubectl shows the webhook's denial and our reason:\n{shown}"
    );
    let out = kubectl(&cluster, &["get", "httproute", "bad-regex", "-n", "default"], "")?;
    ensure!(!out.status.success(), "a denied route is not stored: {}", text(&out));
    let out = kubectl(&cluster, &["create", "-f", "-"], &route("fine", "PathPrefix", "/fine"))?;
    ensure!(out.status.success(), "a valid route is admitted: {}", text(&out));
    // RouteOptions are sent too: a timeout that is no duration, on the route the gateway
    // serves, is a warning in our validation (the rule is reported, not refused), so with
    // allowWarnings it is admitted and kubectl shows our warning.
    let out = kubectl(&cluster, &["create", "-f", "-"], &route_option("slow", "fives"))?;
    let shown = text(&out);
    println!("RouteOption, alwaysAccept=false, kubectl create:\n{shown}");
    ensure!(
        out.status.success() && shown.contains("Warning:") && shown.contains("\"fives\" is not a duration"),
        "an invalid RouteOption timeout comes back as our warning:\n{shown}"
    );
    drop(webhook);

    // alwaysAccept: admitted, with our finding as a warning.
    let webhook = start_webhook(&cluster, true).await?;
    register(&cluster, &webhook.url).await?;
    wait_until_called(&cluster, &webhook).await?;
    let out = kubectl(&cluster, &["create", "-f", "-"], &bad)?;
    let shown = text(&out);
    println!("alwaysAccept=true, kubectl create:\n{shown}");
    ensure!(out.status.success(), "alwaysAccept admits the route:\n{shown}");
    ensure!(
        shown.contains("Warning:") && shown.contains("alwaysAccept") && shown.contains("invalid regex"),
        "kubectl prints our finding as a warning:\n{shown}"
    );
    Ok(())
}

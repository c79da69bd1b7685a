//! The Helm chart in deploy/helm/kgw: lints clean, renders with default and
//! overridden values, and installs the legacy pods and ports (checked by
//! deploy/scripts/check_chart.py, which renders offline with Helm's library
//! from PyPI `helm-python-sdk`; no cluster and no helm binary needed), mTLS
//! included. Then, rendered by the real `helm`, the chart's mTLS against our
//! controller and a real Envoy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python interpreter: `$PYTHON` if set, else `python3`.
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is python3 installed?)"))
}

fn can_import(py: &str, module: &str) -> bool {
    run(Command::new(py).args(["-c", &format!("import {module}")]))
        .status
        .success()
}

/// Installs the chart renderer (helm-python-sdk) and PyYAML if they are missing.
fn ensure_renderer(py: &str) {
    let mut missing = Vec::new();
    if !can_import(py, "helm_python") {
        missing.push("helm-python-sdk>=0.2,<0.3");
    }
    if !can_import(py, "yaml") {
        missing.push("pyyaml");
    }
    if missing.is_empty() {
        return;
    }
    eprintln!("helm_chart: installing {missing:?} with pip");
    let out = run(Command::new(py)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(&missing));
    assert!(
        out.status.success(),
        "pip install {missing:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        can_import(py, "helm_python") && can_import(py, "yaml"),
        "helm_python / yaml still not importable after pip install"
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn helm_chart_lints_renders_and_has_the_legacy_layout() {
    let py = python();
    ensure_renderer(&py);
    let root = repo_root();
    let script = root.join("deploy/scripts/check_chart.py");
    let chart = root.join("deploy/helm/kgw");
    assert!(script.is_file(), "missing {}", script.display());
    assert!(chart.join("Chart.yaml").is_file(), "missing {}", chart.display());

    // With our binaries at hand, the check also runs each one's --help to prove every flag
    // the chart passes exists.
    let bin_dir = kgw_harness::bins::bin_dir().expect("our binaries are built (cargo build --workspace --bins)");
    let out = run(Command::new(&py)
        .arg(&script)
        .arg("--chart")
        .arg(&chart)
        .env("KGW_BIN_DIR", bin_dir)
        .current_dir(&root));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture, and always on failure.
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "check_chart.py failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("cases passed"),
        "check_chart.py exited 0 without its closing line\n{stdout}"
    );
}

/// The chart rendered by the real `helm` (namespace `ns`, `values` as `--set` pairs),
/// as JSON documents.
fn helm_template(dir: &Path, ns: &str, values: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize as _;
    let tools = kgw_harness::kube::tools()?;
    let chart = repo_root().join("deploy/helm/kgw");
    let mut cmd = Command::new(&tools.helm);
    cmd.args(["template", "kgw"])
        .arg(&chart)
        .args(["--namespace", ns, "--kube-version", "1.33.0"])
        .env("HELM_CACHE_HOME", dir.join("cache"))
        .env("HELM_CONFIG_HOME", dir.join("config"))
        .env("HELM_DATA_HOME", dir.join("data"));
    for value in values {
        cmd.args(["--set", value]);
    }
    let out = run(&mut cmd);
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout)?) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn object<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> anyhow::Result<&'a serde_json::Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("the chart renders no {kind}/{name}"))
}

/// A rendered kubernetes.io/tls Secret written as its pod mounts it (`tls.crt`, `tls.key`,
/// `ca.crt` in `dir`).
fn write_secret(docs: &[serde_json::Value], name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(object(docs, "Secret", name)?.clone())?;
    let data = secret.data.unwrap_or_default();
    std::fs::create_dir_all(dir)?;
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        let bytes = data
            .get(file)
            .ok_or_else(|| anyhow::anyhow!("Secret {name} lacks {file}"))?;
        std::fs::write(dir.join(file), &bytes.0)?;
    }
    Ok(dir.to_path_buf())
}

/// The gateway-proxy's mTLS as the chart renders it is what the controller itself writes
/// and prints: the SDS files of ConfigMap gateway-proxy-sds are those of `controller
/// bootstrap --proxy-tls-dir /etc/kgw/tls --write-sds`, and the bootstrap's xDS cluster has
/// the transport socket of `controller bootstrap --proxy-tls-dir /etc/kgw/tls
/// --proxy-sds-dir /etc/kgw/sds`. Then the chart's generated certificates, bootstrap and
/// SDS files at work: a controller serving with the chart's controller certificate answers
/// the chart's admin certificate, lets the chart's gateway-proxy certificate read only its
/// own role and refuses a client without one; a real Envoy with the chart's bootstrap
/// (paths and the gloo address pointed at this host) holds an ADS stream to it over mTLS.
#[tokio::test(flavor = "multi_thread")]
async fn the_charts_mtls_matches_the_controller_and_works() -> anyhow::Result<()> {
    use anyhow::{Context as _, ensure};
    use kgw_harness::{Method, StatusCode, request_tls};

    let dir = tempfile::tempdir()?;
    let ns = "kgw-system";
    let docs = helm_template(dir.path(), ns, &[])?;
    let controller = kgw_harness::bins::bin(kgw_harness::bins::CONTROLLER)?;
    let role = format!("{ns}~gateway-proxy");

    // The SDS files, byte for byte as JSON values.
    let written = dir.path().join("sds-written");
    let out = run(Command::new(&controller)
        .args([
            "bootstrap",
            "--role",
            &role,
            "--proxy-tls-dir",
            "/etc/kgw/tls",
            "--write-sds",
        ])
        .arg("--proxy-sds-dir")
        .arg(&written));
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sds = object(&docs, "ConfigMap", "gateway-proxy-sds")?;
    for file in ["sds-cert.json", "sds-ca.json"] {
        let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(written.join(file))?)?;
        let chart: serde_json::Value =
            serde_json::from_str(sds["data"][file].as_str().context("a file of gateway-proxy-sds")?)?;
        ensure!(
            ours == chart,
            "{file}: the chart has\n{chart:#}\nthe controller writes\n{ours:#}"
        );
    }
    // The xDS cluster's transport socket.
    let out = run(Command::new(&controller).args([
        "bootstrap",
        "--role",
        &role,
        "--proxy-tls-dir",
        "/etc/kgw/tls",
        "--proxy-sds-dir",
        "/etc/kgw/sds",
    ]));
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let envoy_yaml = object(&docs, "ConfigMap", "gateway-proxy-envoy-config")?["data"]["envoy.yaml"]
        .as_str()
        .context("envoy.yaml")?
        .to_string();
    let bootstrap: serde_json::Value = serde_yaml::from_str(&envoy_yaml)?;
    let chart_socket = &bootstrap["static_resources"]["clusters"][0]["transport_socket"];
    let our_socket = &printed["static_resources"]["clusters"][0]["transport_socket"];
    ensure!(
        chart_socket == our_socket && !our_socket.is_null(),
        "xDS transport socket: the chart has\n{chart_socket:#}\nthe controller prints\n{our_socket:#}"
    );

    // The chart's certificates with our controller.
    let pki = dir.path().join("pki");
    let controller_tls = write_secret(&docs, "kgw-controller-tls", &pki.join("controller"))?;
    let admin_tls = write_secret(&docs, "kgw-admin-tls", &pki.join("admin"))?;
    let proxy_tls = write_secret(&docs, "kgw-gateway-proxy-tls", &pki.join("proxy"))?;
    let lease = kgw_harness::addr::allocate()?;
    let l = lease.layout.clone();
    let addr = |port: u16| std::net::SocketAddr::new(l.controller, port).to_string();
    let mut process = kgw_harness::Process::new(
        "controller",
        &controller,
        [
            "--nats-url".to_string(),
            // No broker: the ports serve regardless.
            format!("nats://{}:1", l.nats),
            "--xds-addr".into(),
            addr(9977),
            "--rest-xds-addr".into(),
            addr(9976),
            "--validation-addr".into(),
            addr(9988),
            "--debug-addr".into(),
            addr(9966),
            "--wasm-cache-addr".into(),
            addr(9979),
            "--wasm-cache-dir".into(),
            dir.path().join("wasm").display().to_string(),
            "--monitoring-addr".into(),
            addr(9092),
            "--access-log-addr".into(),
            String::new(),
            "--tls-dir".into(),
            controller_tls.display().to_string(),
        ],
        dir.path().join("controller.log"),
    );
    process.start()?;
    let rest = format!("https://{}/v3/discovery:listeners", addr(9976));
    let body = |role: &str| serde_json::json!({ "node": { "metadata": { "role": role } } }).to_string();
    let admin = kgw_common::tls::TlsMode::Mtls(kgw_common::tls::Mtls::load(&admin_tls)?);
    // The admin reads any role (none is served yet: 404 from past the TLS and the check).
    let answer = kgw_harness::wait_for(std::time::Duration::from_secs(30), || async {
        request_tls(&admin, "controller", Method::POST, &rest, &[], body(&role)).await
    })
    .await
    .with_context(|| format!("controller log:\n{}", process.log_tail(30)))?;
    ensure!(
        answer.status == StatusCode::NOT_FOUND && answer.text().contains("unknown role"),
        "{}: {}",
        answer.status,
        answer.text()
    );
    let proxy = kgw_common::tls::TlsMode::Mtls(kgw_common::tls::Mtls::load(&proxy_tls)?);
    let own = request_tls(&proxy, "controller", Method::POST, &rest, &[], body(&role)).await?;
    ensure!(own.status == StatusCode::NOT_FOUND, "{}: {}", own.status, own.text());
    let other = request_tls(&proxy, "controller", Method::POST, &rest, &[], body("other~gw")).await?;
    ensure!(
        other.status == StatusCode::FORBIDDEN,
        "{}: {}",
        other.status,
        other.text()
    );
    let plain = kgw_harness::request(Method::POST, &rest.replace("https", "http"), None, &[], body(&role)).await;
    ensure!(plain.is_err(), "the controller answered a client without a certificate");

    // Envoy with the chart's bootstrap and SDS files, mounted elsewhere.
    let sds_dir = dir.path().join("sds");
    std::fs::create_dir_all(&sds_dir)?;
    for file in ["sds-cert.json", "sds-ca.json"] {
        let text = sds["data"][file].as_str().context("an SDS file")?;
        std::fs::write(
            sds_dir.join(file),
            text.replace("/etc/kgw/tls", &proxy_tls.display().to_string()),
        )?;
    }
    let envoy_yaml = envoy_yaml
        .replace("/etc/kgw/sds", &sds_dir.display().to_string())
        .replace(&format!("gloo.{ns}.svc.cluster.local"), &l.controller.to_string())
        .replace("address: 0.0.0.0", &format!("address: {}", l.envoy_admin().ip()));
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, &envoy_yaml)?;
    let mut envoy = kgw_harness::Process::new(
        "envoy",
        kgw_harness::ensure_envoy()?,
        kgw_harness::envoy::args(&config, "info"),
        dir.path().join("envoy.log"),
    );
    envoy.start()?;
    let stats = format!(
        "http://{}/stats?filter=^control_plane.connected_state$",
        l.envoy_admin()
    );
    kgw_harness::wait_for(std::time::Duration::from_secs(30), || async {
        let text = kgw_harness::get(&stats, None).await?.text();
        ensure!(text.contains("control_plane.connected_state: 1"), "{text}");
        Ok(())
    })
    .await
    .with_context(|| {
        format!(
            "Envoy never held an ADS stream; its log:\n{}\ncontroller log:\n{}",
            envoy.log_tail(30),
            process.log_tail(30)
        )
    })?;
    Ok(())
}

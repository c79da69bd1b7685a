//! The controller's operator ports on a running system: REST xDS (9976) answers the node
//! Envoy reports at 19000/server_info with that Envoy's listeners, as JSON (and 304 for the
//! version it already has); `controller proxies` prints the Proxy it holds from the proxy
//! debug gRPC (9966). Both over mTLS with the admin's certificate.
use anyhow::{Context as _, Result, ensure};
use kgw_harness::{Method, StatusCode, get, request, request_tls, wait_status, write_manifest_atomically};

use crate::support::{WAIT, config_dir, route_yaml, start};

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

#[tokio::test(flavor = "multi_thread")]
async fn rest_xds_and_proxy_debug() -> Result<()> {
    let running = start(&["echo-1"]).await?;
    let system = &running.system;
    write_manifest_atomically(
        config_dir(system),
        "route.yaml",
        &route_yaml("echo", "/echo", &[("echo-1", 1)]),
    )?;
    wait_status(&system.url("/echo/x"), None, 200, WAIT).await?;

    // The node exactly as Envoy reports it.
    let info = get(&system.admin_url("/server_info"), None).await?.json()?;
    let node = info.get("node").cloned().context("server_info has no node")?;
    // Over mTLS as the admin (who may read every role), the server checked as the
    // controller.
    let admin = system.admin_tls()?;
    let rest = format!("https://{}/v3/discovery:listeners", system.layout().rest_xds_addr());
    let post = |body: Vec<u8>| request_tls(&admin, "controller", Method::POST, &rest, &[], body);
    let body = serde_json::json!({ "node": node }).to_string();
    // Plain text, without a client certificate, gets no answer.
    let plain = format!("http://{}/v3/discovery:listeners", system.layout().rest_xds_addr());
    ensure!(
        request(Method::POST, &plain, None, &[], body.clone()).await.is_err(),
        "REST xDS answered a plain-text request"
    );
    let response = post(body.into_bytes()).await?;
    ensure!(
        response.status == StatusCode::OK,
        "{}: {}",
        response.status,
        response.text()
    );
    let json = response.json()?;
    ensure!(json["typeUrl"] == LISTENER, "{json}");
    let listeners = json["resources"].as_array().context("no resources")?;
    ensure!(
        listeners
            .iter()
            .any(|l| l["@type"] == LISTENER && l["address"]["socketAddress"]["portValue"] == 8080),
        "no listener on 8080 in {json}"
    );
    // Envoy's own config dump shows the same version of its listeners as REST answers.
    let version = json["versionInfo"].as_str().context("no versionInfo")?.to_string();
    let dump = get(&system.admin_url("/config_dump?resource=dynamic_listeners"), None).await?;
    ensure!(
        dump.text().contains(&version),
        "Envoy's listeners are not at version {version}"
    );
    let again = serde_json::json!({ "node": node, "versionInfo": version }).to_string();
    let response = post(again.into_bytes()).await?;
    ensure!(response.status == StatusCode::NOT_MODIFIED, "{}", response.status);
    // A 100 MB body is refused with 413, not a closed connection.
    let huge = vec![b' '; 100 * 1024 * 1024];
    let response = post(huge).await?;
    ensure!(response.status == StatusCode::PAYLOAD_TOO_LARGE, "{}", response.status);

    // `controller proxies`: the Proxy of Gateway default/gw, as JSON and as YAML.
    let controller = kgw_harness::bins::bin(kgw_harness::bins::CONTROLLER)?;
    let debug_addr = system.layout().debug_addr().to_string();
    let proxies = |args: &[&str]| {
        std::process::Command::new(&controller)
            .arg("proxies")
            .args(args)
            .args(["--debug-addr", &debug_addr])
            .args(system.admin_cli_args())
            .output()
    };
    let out = proxies(&["-o", "json"])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let names: Vec<_> = list["proxies"]
        .as_array()
        .context("no proxies")?
        .iter()
        .map(|p| format!("{}/{}", p["metadata"]["namespace"], p["metadata"]["name"]))
        .collect();
    ensure!(names == ["\"default\"/\"gw\""], "{names:?}");
    let out = proxies(&["-n", "default", "gw", "-o", "yaml"])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout)?;
    ensure!(yaml.contains("bindPort: 8080") && yaml.contains("name: gw"), "{yaml}");
    let out = proxies(&["-n", "default", "nope"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("default/nope"), "{stderr}");
    Ok(())
}

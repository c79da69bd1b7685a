//! A route change writes one small value to `kgw_proxies`: the virtual host it touches,
//! not the whole Proxy (the layout in `kgw_proto::nats`).
use anyhow::{Result, ensure};
use kgw_harness::{wait_status, write_manifest_atomically};
use kgw_proto::nats::{PROXIES_BUCKET, vhost_part_head};

use crate::support::{WAIT, config_dir, start};

/// An HTTPRoute for `host` (all paths) to Service `echo`.
fn host_route(name: &str, host: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_change_writes_one_small_kv_value() -> Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let dir = config_dir(system);
    const HOSTS: usize = 40;
    let many: Vec<String> = (0..HOSTS)
        .map(|i| host_route(&format!("host-{i}"), &format!("h{i}.example")))
        .collect();
    write_manifest_atomically(dir, "hosts.yaml", &many.join("---\n"))?;
    let last = format!("h{}.example", HOSTS - 1);
    wait_status(&system.url("/"), Some(&last), 200, WAIT).await?;

    let before = system.kv_entries(PROXIES_BUCKET).await?;
    let proxy_bytes: usize = before
        .iter()
        .filter(|(k, _)| *k == "default.gw" || vhost_part_head(k) == Some("default.gw"))
        .map(|(_, v)| v.len())
        .sum();
    let sequence = system.kv_last_sequence(PROXIES_BUCKET).await?;

    write_manifest_atomically(dir, "new.yaml", &host_route("new", "new.example"))?;
    wait_status(&system.url("/"), Some("new.example"), 200, WAIT).await?;
    let after = system.kv_entries(PROXIES_BUCKET).await?;
    let written = system.kv_last_sequence(PROXIES_BUCKET).await? - sequence;
    let changed: Vec<(&String, usize)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k, v.len()))
        .collect();
    println!("a new route: {written} KV write(s) {changed:?}; the whole Proxy is {proxy_bytes} bytes");
    ensure!(written == 1, "one write, not {written}: {changed:?}");
    ensure!(
        changed.len() == 1 && vhost_part_head(changed[0].0) == Some("default.gw"),
        "only the new virtual host's key: {changed:?}"
    );
    ensure!(changed[0].1 < 4096, "a small value: {changed:?}");
    ensure!(
        proxy_bytes > 10 * changed[0].1,
        "the Proxy ({proxy_bytes} bytes) is not rewritten"
    );
    Ok(())
}

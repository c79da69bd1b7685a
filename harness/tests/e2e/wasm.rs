//! A proxy-wasm module (written in WAT, assembled here) that adds a response header,
//! configured on a route through a RouteOption: the controller fetches it from a file,
//! verifies its sha256, caches it and serves it on 9979; Envoy loads it by remote data
//! source. A wrong digest is refused and the route keeps its last good module.
use kgw_harness::{Component, get, wait_for, wait_status, write_manifest_atomically};
use sha2::{Digest, Sha256};

use crate::support::{WAIT, config_dir, start};

/// proxy-wasm ABI 0.2.1: adds `x-wasm-filter: kgw` to every response.
const MODULE: &str = r#"
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-wasm-filter")
  (data (i32.const 1040) "kgw")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    ;; map type 2 = response headers
    (drop (call $add (i32.const 2) (i32.const 1024) (i32.const 13) (i32.const 1040) (i32.const 3)))
    (i32.const 0)))
"#;

fn route_option(url: &str, sha256: &str) -> String {
    format!(
        "apiVersion: gateway.solo.io/v1
kind: RouteOption
metadata: {{name: add-header, namespace: default}}
spec:
  options:
    wasm:
      filters:
      - {{name: add-header, url: \"{url}\", sha256: \"{sha256}\"}}
"
    )
}

const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wasm, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /with-wasm}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.solo.io, kind: RouteOption, name: add-header}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /without}}]
    backendRefs: [{name: echo, port: 80}]
";

#[tokio::test(flavor = "multi_thread")]
async fn wasm_filter_adds_header_and_wrong_digest_keeps_last_good_module() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let dir = config_dir(system);
    let module = wat::parse_str(MODULE)?;
    let module_path = system.run_dir().join("add-header.wasm");
    std::fs::write(&module_path, &module)?;
    let digest = hex::encode(Sha256::digest(&module));
    let url = format!("file://{}", module_path.display());

    write_manifest_atomically(dir, "option.yaml", &route_option(&url, &digest))?;
    write_manifest_atomically(dir, "routes.yaml", ROUTES)?;
    let with = wait_for(WAIT, || async {
        let response = get(&system.url("/with-wasm"), None).await?;
        anyhow::ensure!(
            response.header("x-wasm-filter") == "kgw",
            "no header yet: {:?}",
            response.status
        );
        Ok(response)
    })
    .await?;
    assert_eq!(with.status.as_u16(), 200);
    let without = wait_status(&system.url("/without"), None, 200, WAIT).await?;
    assert_eq!(without.header("x-wasm-filter"), "", "the filter runs only on its route");

    // The same URL with a digest that does not match: refused, the route keeps the module.
    let wrong = "0".repeat(64);
    write_manifest_atomically(dir, "option.yaml", &route_option(&url, &wrong))?;
    wait_for(WAIT, || async {
        let log = std::fs::read_to_string(system.log_path(Component::Controller))?;
        anyhow::ensure!(log.contains("sha256 mismatch"), "controller has not refused it yet");
        Ok(())
    })
    .await?;
    for _ in 0..20 {
        let response = get(&system.url("/with-wasm"), None).await?;
        assert_eq!(response.status.as_u16(), 200);
        assert_eq!(response.header("x-wasm-filter"), "kgw", "last good module still runs");
    }
    Ok(())
}

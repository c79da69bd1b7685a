//! A proxy-wasm module (written in WAT, assembled here) that adds a response header,
//! configured on a route through a RouteOption: the controller fetches it from a file,
//! verifies its sha256, caches it and serves it on 9979; Envoy loads it by remote data
//! source. A wrong digest is refused and the route keeps its last good module. A file
//! outside `--wasm-file-root` is never read, a refused file never echoed, and a module that
//! fails in Envoy affects only the routes that use it.
use kgw_harness::{Component, get, get_tls, wait_for, wait_status, write_manifest_atomically};
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

/// Exports the ABI but refuses to start its VM: a module that passes the controller's
/// checks and fails in Envoy.
const FAILING_MODULE: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0)))
"#;

fn route_option(url: &str, sha256: &str) -> String {
    named_route_option("add-header", url, sha256, false)
}

fn named_route_option(name: &str, url: &str, sha256: &str, fail_open: bool) -> String {
    format!(
        "apiVersion: gateway.solo.io/v1
kind: RouteOption
metadata: {{name: {name}, namespace: default}}
spec:
  options:
    wasm:
      filters:
      - {{name: {name}, url: \"{url}\", sha256: \"{sha256}\", failOpen: {fail_open}}}
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
    let module_path = system.wasm_modules_dir().join("add-header.wasm");
    std::fs::write(&module_path, &module)?;
    let digest = hex::encode(Sha256::digest(&module));
    let url = format!("file://{}", module_path.display());

    write_manifest_atomically(dir, "option.yaml", &route_option(&url, &digest))?;
    write_manifest_atomically(dir, "routes.yaml", ROUTES)?;
    let with = wait_for(WAIT, || async {
        let response = get(&system.url("/with-wasm"), None).await?;
        // Both: the module runs, and the backend's Upstream has arrived (until then 500).
        anyhow::ensure!(
            response.header("x-wasm-filter") == "kgw" && response.status.as_u16() == 200,
            "not yet: {:?}, header {:?}",
            response.status,
            response.header("x-wasm-filter")
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

/// A RouteOption naming a host file: outside `--wasm-file-root` it is never read (right
/// digest or not), nothing of it is logged or served, and its route fails closed.
#[tokio::test(flavor = "multi_thread")]
async fn host_files_are_never_read_logged_or_served() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let dir = config_dir(system);
    let secret = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n";
    let secret_path = system.run_dir().join("shadow");
    std::fs::write(&secret_path, secret)?;
    let real_digest = hex::encode(Sha256::digest(secret));
    let url = format!("file://{}", secret_path.display());
    write_manifest_atomically(dir, "routes.yaml", ROUTES)?;

    // First a wrong digest (the old leak: the error named the real one), then the real one.
    for (round, digest) in ["0".repeat(64), real_digest.clone()].into_iter().enumerate() {
        write_manifest_atomically(dir, "option.yaml", &route_option(&url, &digest))?;
        wait_for(WAIT, || async {
            let log = std::fs::read_to_string(system.log_path(Component::Controller))?;
            anyhow::ensure!(
                log.matches("outside the folder file:// modules may come from").count() > round,
                "controller has not refused it yet"
            );
            Ok(())
        })
        .await?;
        // Fails closed: the route answers 503, the route without the filter still serves.
        wait_status(&system.url("/with-wasm"), None, 503, WAIT).await?;
        wait_status(&system.url("/without"), None, 200, WAIT).await?;
    }
    let log = std::fs::read_to_string(system.log_path(Component::Controller))?;
    assert!(!log.contains(&real_digest), "the file's digest reached the log");
    assert!(!log.contains("not-a-real-hash"), "the file's bytes reached the log");
    // Asked as the admin over mTLS (the cache serves no one without a certificate).
    let cache = format!("https://{}/{real_digest}.wasm", system.layout().wasm_cache_addr());
    let served = get_tls(&system.admin_tls()?, "controller", &cache).await?;
    assert_eq!(served.status.as_u16(), 404, "the file is not served");
    Ok(())
}

/// A module that passes the controller's checks but cannot start in Envoy: the routes that
/// use it answer 503 (fail closed) or serve without it (fail open); every other route and
/// unrouted paths are untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_module_affects_only_its_routes() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let dir = config_dir(system);
    let module = wat::parse_str(FAILING_MODULE)?;
    let module_path = system.wasm_modules_dir().join("failing.wasm");
    std::fs::write(&module_path, &module)?;
    let digest = hex::encode(Sha256::digest(&module));
    let url = format!("file://{}", module_path.display());
    write_manifest_atomically(dir, "option.yaml", &named_route_option("closed", &url, &digest, false))?;
    write_manifest_atomically(
        dir,
        "option-open.yaml",
        &named_route_option("open", &url, &digest, true),
    )?;
    write_manifest_atomically(
        dir,
        "routes.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wasm, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /closed}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: gateway.solo.io, kind: RouteOption, name: closed}}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /open}}]
    filters:
    - {type: ExtensionRef, extensionRef: {group: gateway.solo.io, kind: RouteOption, name: open}}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /without}}]
    backendRefs: [{name: echo, port: 80}]
",
    )?;
    // First the controller answers 503 itself, while it fetches the module ("... is not
    // available"); then Envoy runs the module, which fails: wait for that before counting.
    wait_for(WAIT, || async {
        let closed = get(&system.url("/closed"), None).await?;
        anyhow::ensure!(
            closed.status.as_u16() == 503 && !closed.text().contains("is not available"),
            "module not in Envoy yet: {} {}",
            closed.status,
            closed.text()
        );
        Ok(())
    })
    .await?;
    wait_status(&system.url("/open"), None, 200, WAIT).await?;
    for _ in 0..10 {
        assert_eq!(get(&system.url("/without"), None).await?.status.as_u16(), 200);
        assert_eq!(get(&system.url("/nothing-here"), None).await?.status.as_u16(), 404);
        assert_eq!(get(&system.url("/closed"), None).await?.status.as_u16(), 503);
    }
    Ok(())
}

//! Builds a descriptor set of the Envoy API protos that envoy-types ships, so resources can
//! be shown as proto3 JSON (golden files, REST xDS, config dumps). envoy-types itself has
//! no serde and no descriptors. Its proto folder is found through `cargo metadata`, which
//! works for registry, vendored and path dependencies alike.
use std::{env, path::PathBuf, process::Command};

/// Every type we put in an `Any` or serve, plus the xDS envelope.
const ROOTS: &[&str] = &[
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/on_demand/v3/on_demand.proto",
    "envoy/extensions/access_loggers/grpc/v3/als.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/wasm/v3/wasm.proto",
    "envoy/extensions/filters/http/grpc_json_transcoder/v3/transcoder.proto",
    "google/protobuf/wrappers.proto",
    "envoy/service/discovery/v3/discovery.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = env::var("CARGO_MANIFEST_DIR")?;
    // Only this platform's packages: others (Windows crates) are never downloaded.
    let target = env::var("TARGET")?;
    // Offline first (nothing to fetch once the workspace's packages are in cargo's cache);
    // on a fresh machine a `--bins` build has not fetched the dev-dependencies that
    // `cargo metadata` resolves too, so it is asked again with the registry allowed.
    let run_metadata = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.args(["metadata", "--format-version", "1", "--filter-platform", &target]);
        if offline {
            command.arg("--offline");
        }
        command
            .arg("--manifest-path")
            .arg(PathBuf::from(&manifest).join("Cargo.toml"))
            .output()
    };
    let mut metadata = run_metadata(true)?;
    if !metadata.status.success() {
        metadata = run_metadata(false)?;
    }
    if !metadata.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&metadata.stderr)).into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout)?;
    let envoy_types = metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == "envoy-types"))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("envoy-types not found in cargo metadata")?;
    let proto = PathBuf::from(envoy_types)
        .parent()
        .ok_or("envoy-types path")?
        .join("proto");
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "opentelemetry-proto",
        "client_model",
        "cel-spec/proto",
    ]
    .iter()
    .map(|dir| proto.join(dir))
    .collect();
    let mut compiler = protox::Compiler::new(&includes)?;
    compiler.include_imports(true);
    compiler.open_files(ROOTS)?;
    let out = PathBuf::from(env::var("OUT_DIR")?).join("envoy_descriptors.bin");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

//! Compiles proto/protos with protox (a protobuf compiler in Rust), so a fresh machine
//! needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "protos/kgw/v1/common.proto",
        "protos/kgw/v1/proxy.proto",
        "protos/kgw/v1/parts.proto",
        "protos/kgw/v1/upstream.proto",
        "protos/kgw/v1/discovery.proto",
        "protos/kgw/v1/report.proto",
        "protos/kgw/v1/validation.proto",
        "protos/kgw/v1/debug.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["protos"])?;
    // serde for golden files and human-readable dumps (YAML/JSON); the wire format stays
    // protobuf. Oneofs are flattened so a Route reads `routeAction: {...}`, not
    // `action: {routeAction: {...}}`.
    let mut builder = tonic_prost_build::configure()
        .btree_map(".")
        .message_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default, rename_all = \"camelCase\")]",
        )
        .enum_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\")]",
        );
    for oneof in [
        "kgw.v1.Listener.listener_type",
        "kgw.v1.Route.action",
        "kgw.v1.RouteFilter.kind",
        "kgw.v1.Matcher.path_specifier",
        "kgw.v1.RouteAction.destination",
        "kgw.v1.RedirectAction.path_rewrite",
        "kgw.v1.Upstream.upstream_type",
        "kgw.v1.Function.spec",
        "kgw.v1.SubjectAltName.name",
    ] {
        builder = builder.field_attribute(oneof, "#[serde(flatten)]");
    }
    builder.compile_fds(descriptors)?;
    Ok(())
}

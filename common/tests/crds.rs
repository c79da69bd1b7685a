//! Our own CRDs, as the Helm chart ships them, are exactly what the Rust types generate.
//! `UPDATE_CRDS=1 cargo test -p kgw-common --test crds` rewrites the shipped files.
use std::path::{Path, PathBuf};

/// Shipped file (relative to the repo root) and the YAML the types generate for it.
fn generated() -> Vec<(&'static str, String)> {
    let file = |source: &str, crd| {
        let yaml = serde_yaml::to_string(&crd).expect("a CRD serializes");
        format!(
            "# Generated from {source}; do not edit.\n\
             # Regenerate: UPDATE_CRDS=1 cargo test -p kgw-common --test crds\n{yaml}"
        )
    };
    vec![
        (
            "deploy/helm/kgw/crds/gateway.solo.io_routeoptions.yaml",
            file("common/src/policy.rs", kgw_common::policy::route_option_crd()),
        ),
        (
            "deploy/helm/kgw/crds/gloo.solo.io_upstreams.yaml",
            file("common/src/gloo.rs", kgw_common::gloo::upstream_crd()),
        ),
    ]
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn shipped_crds_equal_what_the_types_generate() {
    let update = std::env::var_os("UPDATE_CRDS").is_some();
    for (file, want) in generated() {
        let path = repo_root().join(file);
        if update {
            std::fs::write(&path, &want).unwrap_or_else(|e| panic!("write {file}: {e}"));
            continue;
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{file} differs from what common/src/policy.rs generates; run \
             UPDATE_CRDS=1 cargo test -p kgw-common --test crds\n--- generated\n{want}"
        );
    }
}

/// The API server accepts only structural schemas: no `$ref`, a `type` on every node.
#[test]
fn our_schemas_are_structural() {
    for crd in [kgw_common::policy::route_option_crd(), kgw_common::gloo::upstream_crd()] {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut problems = Vec::new();
        check_structural(&schema["openAPIV3Schema"], "$", &mut problems);
        assert!(
            problems.is_empty(),
            "{:?} not structural: {problems:#?}",
            crd.metadata.name
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
    }
}

fn check_structural(node: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    for bad in ["$ref", "$schema", "definitions", "$defs", "anyOf", "oneOf"] {
        if map.contains_key(bad) {
            problems.push(format!("{at}: has {bad}"));
        }
    }
    if !map.contains_key("type") && map.get("x-kubernetes-int-or-string").is_none() {
        problems.push(format!("{at}: no type"));
    }
    if let Some(properties) = map.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in properties {
            check_structural(child, &format!("{at}.{name}"), problems);
        }
    }
    if let Some(items) = map.get("items") {
        check_structural(items, &format!("{at}[]"), problems);
    }
}

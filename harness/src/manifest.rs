//! Manifests in a directory config source, written so that a watcher never sees half a file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Writes `dir/file` atomically: a hidden temporary file beside it, then a rename.
pub fn write_manifest_atomically(dir: &Path, file: &str, yaml: &str) -> Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let target = dir.join(file);
    let parent = target.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    std::fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    Ok(target)
}

/// Removes `dir/file`; a file already gone is fine.
pub fn remove_manifest(dir: &Path, file: &str) -> Result<()> {
    let path = dir.join(file);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Every document of kind `kind` in the YAML files under `dir` (recursively; hidden files
/// and unparsable documents are skipped).
pub fn documents_of_kind(dir: &Path, kind: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let mut out = Vec::new();
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files);
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(v) = serde_yaml::Value::deserialize(doc) else {
                continue;
            };
            if v.get("kind").and_then(|k| k.as_str()) == Some(kind) {
                out.push(v);
            }
        }
    }
    out
}

/// `(namespace, name)` of a manifest (namespace `default` when absent).
pub fn namespaced_name(doc: &serde_yaml::Value) -> Option<(String, String)> {
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let ns = meta
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default")
        .to_string();
    Some((ns, name))
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// GatewayClass `kgateway` (ours) and Gateway `default/gw` with one HTTP listener on 8080:
/// the base every end-to-end test and benchmark starts from.
pub fn gateway_yaml() -> String {
    "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgateway}
spec: {controllerName: kgateway.dev/kgateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgateway
  listeners: [{name: http, protocol: HTTP, port: 8080}]
"
    .into()
}

/// A Service on port 80 whose EndpointSlice lists `ips` (all on `port`).
pub fn service_yaml(name: &str, ips: &[IpAddr], port: u16) -> String {
    let endpoints: String = ips
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
{endpoints}"
    )
}

/// An HTTPRoute `default/<name>` on Gateway `gw` sending `prefix` to weighted Services
/// (name, weight), each on port 80.
pub fn route_yaml(name: &str, prefix: &str, backends: &[(&str, u32)]) -> String {
    let refs: String = backends
        .iter()
        .map(|(svc, weight)| format!("    - {{name: {svc}, port: 80, weight: {weight}}}\n"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs:
{refs}"
    )
}

//! `kubectl apply` in Rust: manifests (multi-document YAML) applied server-side through the
//! API server, and the chart's CRDs installed and waited for. Shared by the Kubernetes
//! tests and `kgw-kube-up`.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::TypeMeta;
use serde::Deserialize as _;

use crate::http::wait_for;

/// The field manager of what the harness applies.
const MANAGER: &str = "kgw-harness";

/// The chart's CRD folder: the Gateway API CRDs (`gateway-api/`) and ours.
pub fn chart_crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kgw/crds")
}

/// Every YAML document of `text` as a `DynamicObject` (empty documents skipped).
pub fn documents(text: &str) -> Result<Vec<DynamicObject>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        out.push(serde_yaml::from_value(value)?);
    }
    Ok(out)
}

/// Where `object` is served, as the API server's discovery says.
pub async fn api_for(client: &kube::Client, object: &DynamicObject) -> Result<Api<DynamicObject>> {
    let TypeMeta { api_version, kind } = object.types.clone().context("a manifest without apiVersion/kind")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the API server does not serve {api_version} {kind}"))?;
    Ok(match capabilities.scope {
        kube::discovery::Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.metadata.namespace.as_deref().unwrap_or("default"),
            &resource,
        ),
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

/// Server-side apply of every document of `yaml`, as `kubectl apply --server-side` does.
pub async fn apply_yaml(client: &kube::Client, yaml: &str) -> Result<()> {
    for object in documents(yaml)? {
        let name = object.metadata.name.clone().context("a manifest without a name")?;
        api_for(client, &object)
            .await?
            .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {name}"))?;
    }
    Ok(())
}

/// Deletes what every document of `yaml` names.
pub async fn delete_yaml(client: &kube::Client, yaml: &str) -> Result<()> {
    for object in documents(yaml)? {
        let name = object.metadata.name.clone().context("a manifest without a name")?;
        api_for(client, &object)
            .await?
            .delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting {name}"))?;
    }
    Ok(())
}

/// Applies every CRD under `dir` (recursively) and waits until each is Established.
pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<()> {
    install_crds_from(client, &[dir.to_path_buf()]).await
}

/// Applies the CRDs of each path (a YAML file, or a folder read recursively) and waits
/// until each is Established.
pub async fn install_crds_from(client: &kube::Client, paths: &[PathBuf]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(yaml_files(path)?);
        } else {
            files.push(path.clone());
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_yaml::from_value(value).with_context(|| format!("{} is not a CRD", file.display()))?;
            let name = crd.metadata.name.clone().context("a CRD without a name")?;
            api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
                .await
                .with_context(|| format!("applying {}", file.display()))?;
            names.push(name);
        }
    }
    wait_for(Duration::from_secs(60), || async {
        for name in &names {
            ensure!(established(&api.get(name).await?), "CRD {name} not established yet");
        }
        Ok(())
    })
    .await
}

/// Whether the API server serves `crd` (condition Established).
pub fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

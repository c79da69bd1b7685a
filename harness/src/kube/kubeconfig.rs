//! Kubeconfig files for the test cluster, read by kube-rs, kubectl and helm alike.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

/// How a kubeconfig's user authenticates.
pub(crate) enum Credentials<'a> {
    Token(&'a str),
    /// Paths of a client certificate and its key.
    ClientCert {
        cert: &'a Path,
        key: &'a Path,
    },
}

/// Writes a one-context kubeconfig for `server`, trusting the CA in `ca_file`.
pub(crate) fn write(path: &Path, server: &str, ca_file: &Path, user: &str, creds: Credentials<'_>) -> Result<()> {
    let user_entry: Value = match creds {
        Credentials::Token(token) => json!({ "token": token }),
        Credentials::ClientCert { cert, key } => json!({
            "client-certificate": cert,
            "client-key": key,
        }),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "kgw-test", "cluster": {
            "server": server,
            "certificate-authority": ca_file,
        }}],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": "kgw-test", "context": { "cluster": "kgw-test", "user": user }}],
        "current-context": "kgw-test",
    });
    let yaml = serde_yaml::to_string(&config).context("serializing a kubeconfig")?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

/// A client for the current context of the kubeconfig at `path`.
pub async fn client_from_kubeconfig(path: impl AsRef<Path>) -> Result<kube::Client> {
    let path = path.as_ref();
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    kube::Client::try_from(config).with_context(|| format!("a client for {}", path.display()))
}

/// `dir/<stem>.kubeconfig`.
pub(crate) fn path_in(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.kubeconfig"))
}

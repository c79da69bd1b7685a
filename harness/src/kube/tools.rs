//! The Go test binaries (the Kubernetes ones here, Jaeger for [`crate::jaeger`]), built from
//! the pinned Go modules under `harness/kube-tools/` by `scripts/kube-tools.sh` into a cache
//! outside the repository. The script builds whatever is missing, so a test never skips for
//! want of a binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

use crate::tools::is_elf;

/// Paths of the built binaries.
#[derive(Clone, Debug)]
pub struct KubeTools {
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
    pub helm: PathBuf,
}

/// The binaries, built first when missing (minutes, once per version); checked once per
/// process.
pub fn tools() -> Result<KubeTools> {
    static CELL: OnceLock<Result<KubeTools, String>> = OnceLock::new();
    CELL.get_or_init(|| run_script().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube-tools.sh")
}

/// Builds (if missing) and finds the Kubernetes binaries.
fn run_script() -> Result<KubeTools> {
    let mut paths = go_tools(&["kube-apiserver", "kubectl", "etcd", "helm"])?;
    let mut binary = |name: &str| paths.remove(name).ok_or_else(|| anyhow!("no path for {name}"));
    Ok(KubeTools {
        kube_apiserver: binary("kube-apiserver")?,
        kubectl: binary("kubectl")?,
        etcd: binary("etcd")?,
        helm: binary("helm")?,
    })
}

/// Runs the script for the binaries `names` (it builds only what its cache lacks; minutes
/// for a cold build) and returns their paths, each checked to be an executable binary.
pub(crate) fn go_tools(names: &[&str]) -> Result<HashMap<String, PathBuf>> {
    let script = script_path();
    // Progress (and the Go build's errors) go straight to the terminal.
    let out = Command::new("bash")
        .arg(&script)
        .args(names)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({}); is Go installed?", script.display(), out.status);
    }
    let mut paths = parse_paths(&String::from_utf8_lossy(&out.stdout));
    names
        .iter()
        .map(|&name| {
            let path = paths
                .remove(name)
                .ok_or_else(|| anyhow!("{} printed no path for {name}", script.display()))?;
            if !is_elf(&path) {
                bail!("{name} at {} is not an executable binary", path.display());
            }
            Ok((name.to_string(), path))
        })
        .collect()
}

fn parse_paths(stdout: &str) -> HashMap<String, PathBuf> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, path)| (name.trim().to_string(), PathBuf::from(path.trim())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_path_lines() {
        let paths = parse_paths("etcd=/c/etcd-v3.6.17/etcd\nnoise\nhelm=/c/helm-v3.22.0/helm\n");
        assert_eq!(paths["etcd"], PathBuf::from("/c/etcd-v3.6.17/etcd"));
        assert_eq!(paths["helm"], PathBuf::from("/c/helm-v3.22.0/helm"));
        assert_eq!(paths.len(), 2);
    }
}

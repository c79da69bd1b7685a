//! `machine`: what the figures were measured on.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::procstat;

pub fn describe(quick: bool) -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let envoy = kgw_harness::ensure_envoy()
        .ok()
        .and_then(|p| first_line(Command::new(p).arg("--version")))
        .map(|v| envoy_version(&v))
        .unwrap_or_else(|| "unknown".into());
    let nats = kgw_harness::ensure_nats_server()
        .ok()
        .and_then(|p| first_line(Command::new(p).arg("--version")))
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cores": cores,
        "cpu_model": procstat::cpu_model(),
        "envoy": envoy,
        "nats_server": nats,
        "git_commit": git_commit(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default(),
        "wrk": crate::load::wrk_path().map(|p| p.display().to_string()).unwrap_or_else(|_| "missing".into()),
        "quick": quick,
    })
}

fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

/// "envoy  version: 5a8f2c/1.40.0/Clean/RELEASE/BoringSSL" → "1.40.0 (5a8f2c…)".
fn envoy_version(line: &str) -> String {
    let v = line.split("version:").nth(1).unwrap_or(line).trim();
    let parts: Vec<&str> = v.split('/').collect();
    match parts.as_slice() {
        [sha, version, ..] => format!("{version} ({sha})"),
        _ => v.to_string(),
    }
}

/// HEAD of the repository this binary was built from, `+dirty` with local changes.
fn git_commit() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}+dirty") } else { head }
        }
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn envoy_version_line() {
        assert_eq!(
            super::envoy_version("envoy  version: abc123/1.40.0/Clean/RELEASE/BoringSSL"),
            "1.40.0 (abc123)"
        );
    }
}

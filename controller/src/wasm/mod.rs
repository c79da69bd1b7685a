//! The WASM filter cache (port 9979, Gloo's wasm cache): fetches the modules routes name
//! (http://, https://, or file:// under the one folder the operator allows), verifies their
//! sha256 and that they are proxy-wasm modules, keeps them on disk as `<sha256>.wasm`, and
//! serves only those to Envoy, which loads them as a remote data source with the same digest.
//!
//! A refused module is never echoed: no digest of what was read and none of its bytes reach
//! a log line, an error or status (the URL may point at any file of the controller's host).
mod fetch;
pub mod module;
mod server;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

pub use fetch::{Fetched, WasmFetcher, spawn_fetcher};
pub use server::WasmCache;

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url}: sha256 mismatch: the module does not have the sha256 {expected} the config names")]
    Digest { url: String, expected: String },
    #[error("{url}: unsupported scheme (use http://, https:// or file://)")]
    Scheme { url: String },
    #[error("{url}: file:// modules are turned off (the controller has no --wasm-file-root)")]
    FileOff { url: String },
    #[error("{url}: outside the folder file:// modules may come from (--wasm-file-root)")]
    FileOutsideRoot { url: String },
    #[error("{url}: larger than {limit} bytes (--wasm-max-bytes)")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {source}")]
    Module {
        url: String,
        #[source]
        source: module::ModuleError,
    },
    #[error("cache directory {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where modules may come from, and how much of them the controller takes.
#[derive(Clone, Debug)]
pub struct FetchLimits {
    /// file:// URLs must resolve (symlinks followed) to a file under this folder; None:
    /// file:// URLs are refused.
    pub file_root: Option<PathBuf>,
    /// The most a module may weigh.
    pub max_bytes: usize,
    /// The longest a download may take, body included.
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            file_root: None,
            max_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Digests of the modules this process verified: the only ones the cache serves.
#[derive(Clone, Debug, Default)]
pub struct Verified(Arc<RwLock<BTreeSet<String>>>);

impl Verified {
    fn insert(&self, digest: &str) {
        if let Ok(mut set) = self.0.write() {
            set.insert(digest.to_string());
        }
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.0.read().map(|set| set.contains(digest)).unwrap_or(false)
    }
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

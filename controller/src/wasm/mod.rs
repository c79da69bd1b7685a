//! The WASM filter cache (port 9979, Gloo's wasm cache): fetches the modules routes name
//! (http://, https:// or file://), verifies their sha256, keeps them on disk as
//! `<sha256>.wasm`, and serves them to Envoy, which loads them as a remote data source
//! with the same digest.
mod fetch;
mod server;

pub use fetch::{Fetched, WasmFetcher, spawn_fetcher};
pub use server::serve;

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url}: sha256 mismatch: the module has {actual}, the config says {expected}")]
    Digest {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: unsupported scheme (use http://, https:// or file://)")]
    Scheme { url: String },
    #[error("cache directory {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

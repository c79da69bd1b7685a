//! Fetching and verifying modules, one task per request, never the same (url, digest) twice.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use kgw_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{WasmError, sha256_hex};

/// The most a module may weigh.
const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// Asks for modules; results come back on the channel given to [`spawn_fetcher`].
#[derive(Clone)]
pub struct WasmFetcher {
    requests: mpsc::UnboundedSender<pb::WasmFilter>,
    asked: Arc<Mutex<HashSet<(String, String)>>>,
}

impl WasmFetcher {
    /// Fetches `filter`'s module unless this (url, digest) was asked for before.
    pub fn want(&self, filter: &pb::WasmFilter) {
        let key = (filter.url.clone(), filter.sha256.clone());
        let fresh = self.asked.lock().map(|mut asked| asked.insert(key)).unwrap_or(false);
        if fresh {
            let _ = self.requests.send(filter.clone());
        }
    }
}

/// The outcome of one fetch.
pub type Fetched = (pb::WasmFilter, Result<(), String>);

/// Starts the fetcher. Modules already on disk under their digest count as fetched.
pub fn spawn_fetcher(dir: PathBuf, results: mpsc::UnboundedSender<Fetched>) -> Result<WasmFetcher, WasmError> {
    std::fs::create_dir_all(&dir).map_err(|source| WasmError::Io {
        path: dir.clone(),
        source,
    })?;
    let (requests, mut rx) = mpsc::unbounded_channel::<pb::WasmFilter>();
    let dir = Arc::new(dir);
    tokio::spawn(async move {
        while let Some(filter) = rx.recv().await {
            let (dir, results) = (dir.clone(), results.clone());
            tokio::spawn(async move {
                let outcome = ensure(&dir, &filter).await.map_err(|e| e.to_string());
                match &outcome {
                    Ok(()) => tracing::info!(filter = %filter.name, sha256 = %filter.sha256, "WASM module cached"),
                    Err(error) => {
                        tracing::error!(filter = %filter.name, url = %filter.url, %error, "WASM module refused")
                    }
                }
                let _ = results.send((filter, outcome));
            });
        }
    });
    Ok(WasmFetcher {
        requests,
        asked: Arc::default(),
    })
}

/// Makes `<dir>/<sha256>.wasm` hold the verified module.
async fn ensure(dir: &Path, filter: &pb::WasmFilter) -> Result<(), WasmError> {
    let path = dir.join(format!("{}.wasm", filter.sha256));
    if let Ok(bytes) = tokio::fs::read(&path).await
        && sha256_hex(&bytes) == filter.sha256
    {
        return Ok(());
    }
    let bytes = download(&filter.url).await?;
    let actual = sha256_hex(&bytes);
    if actual != filter.sha256 {
        return Err(WasmError::Digest {
            url: filter.url.clone(),
            expected: filter.sha256.clone(),
            actual,
        });
    }
    let tmp = dir.join(format!(".{}.tmp", filter.sha256));
    let io = |source| WasmError::Io {
        path: path.clone(),
        source,
    };
    tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
    tokio::fs::rename(&tmp, &path).await.map_err(io)?;
    Ok(())
}

async fn download(url: &str) -> Result<Bytes, WasmError> {
    let fail = |message: String| WasmError::Fetch {
        url: url.to_string(),
        message,
    };
    if let Some(path) = url.strip_prefix("file://") {
        return tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(|e| fail(e.to_string()));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| fail(e.to_string()))?;
    let connector = match uri.scheme_str() {
        Some("http") | Some("https") => hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| fail(format!("TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build(),
        _ => return Err(WasmError::Scheme { url: url.to_string() }),
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .map_err(|_| fail("timed out after 30 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_MODULE_BYTES);
    let collected = body.collect().await.map_err(|e| fail(e.to_string()))?;
    Ok(collected.to_bytes())
}

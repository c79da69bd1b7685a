//! Fetching and verifying modules, one task per request, never the same (url, digest) twice.
use std::{
    collections::HashSet,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use kgw_proto::v1 as pb;
use tokio::{io::AsyncReadExt as _, sync::mpsc};

use super::{FetchLimits, Verified, WasmError, module, sha256_hex};

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

/// Starts the fetcher. Modules already on disk under their digest count as fetched once
/// they pass the same checks as a download.
pub fn spawn_fetcher(
    dir: PathBuf,
    limits: FetchLimits,
    verified: Verified,
    results: mpsc::UnboundedSender<Fetched>,
) -> Result<WasmFetcher, WasmError> {
    std::fs::create_dir_all(&dir).map_err(|source| WasmError::Io {
        path: dir.clone(),
        source,
    })?;
    let (requests, mut rx) = mpsc::unbounded_channel::<pb::WasmFilter>();
    let shared = Arc::new((dir, limits, verified));
    tokio::spawn(async move {
        while let Some(filter) = rx.recv().await {
            let (shared, results) = (shared.clone(), results.clone());
            tokio::spawn(async move {
                let (dir, limits, verified) = &*shared;
                let outcome = ensure(dir, limits, &filter).await;
                match &outcome {
                    Ok(()) => {
                        verified.insert(&filter.sha256);
                        tracing::info!(filter = %filter.name, sha256 = %filter.sha256, "WASM module cached");
                    }
                    // The error names the URL and what is wrong, never what was read.
                    Err(error) => tracing::error!(filter = %filter.name, %error, "WASM module refused"),
                }
                let _ = results.send((filter, outcome.map_err(|e| e.to_string())));
            });
        }
    });
    Ok(WasmFetcher {
        requests,
        asked: Arc::default(),
    })
}

/// Makes `<dir>/<sha256>.wasm` hold the verified module.
async fn ensure(dir: &Path, limits: &FetchLimits, filter: &pb::WasmFilter) -> Result<(), WasmError> {
    let path = dir.join(format!("{}.wasm", filter.sha256));
    if let Ok(bytes) = tokio::fs::read(&path).await
        && sha256_hex(&bytes) == filter.sha256
        && module::check(&bytes).is_ok()
    {
        return Ok(());
    }
    let bytes = download(&filter.url, limits).await?;
    if sha256_hex(&bytes) != filter.sha256 {
        return Err(WasmError::Digest {
            url: filter.url.clone(),
            expected: filter.sha256.clone(),
        });
    }
    module::check(&bytes).map_err(|source| WasmError::Module {
        url: filter.url.clone(),
        source,
    })?;
    let tmp = dir.join(format!(".{}.tmp", filter.sha256));
    let io = |source| WasmError::Io {
        path: path.clone(),
        source,
    };
    tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
    tokio::fs::rename(&tmp, &path).await.map_err(io)?;
    Ok(())
}

async fn download(url: &str, limits: &FetchLimits) -> Result<Bytes, WasmError> {
    let fetch = async {
        match url.strip_prefix("file://") {
            Some(path) => read_file(url, path, limits).await,
            None => download_http(url, limits).await,
        }
    };
    tokio::time::timeout(limits.timeout, fetch)
        .await
        .map_err(|_| WasmError::Fetch {
            url: url.to_string(),
            message: format!("timed out after {} s", limits.timeout.as_secs_f64()),
        })?
}

/// Reads a file under the allowed root. The path is checked as written before the file
/// system is touched (so nothing outside the root is even looked up), then again once
/// symlinks are resolved.
async fn read_file(url: &str, path: &str, limits: &FetchLimits) -> Result<Bytes, WasmError> {
    let Some(root) = &limits.file_root else {
        return Err(WasmError::FileOff { url: url.to_string() });
    };
    let outside = || WasmError::FileOutsideRoot { url: url.to_string() };
    let fail = |message: String| WasmError::Fetch {
        url: url.to_string(),
        message,
    };
    let requested = Path::new(path);
    if !requested.is_absolute() {
        return Err(fail("a file:// URL needs an absolute path".into()));
    }
    let canonical_root = tokio::fs::canonicalize(root)
        .await
        .map_err(|e| fail(format!("--wasm-file-root {}: {e}", root.display())))?;
    let lexical = normalize(requested);
    if !lexical.starts_with(root) && !lexical.starts_with(&canonical_root) {
        return Err(outside());
    }
    let resolved = tokio::fs::canonicalize(&lexical)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resolved.starts_with(&canonical_root) {
        return Err(outside());
    }
    let file = tokio::fs::File::open(&resolved)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let metadata = file.metadata().await.map_err(|e| fail(e.to_string()))?;
    if !metadata.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let too_large = || WasmError::TooLarge {
        url: url.to_string(),
        limit: limits.max_bytes,
    };
    if metadata.len() > limits.max_bytes as u64 {
        return Err(too_large());
    }
    // The file may grow between the size check and the read: never read past the limit.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limits.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() > limits.max_bytes {
        return Err(too_large());
    }
    Ok(Bytes::from(bytes))
}

/// `/a/./b/../c` → `/a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

async fn download_http(url: &str, limits: &FetchLimits) -> Result<Bytes, WasmError> {
    let fail = |message: String| WasmError::Fetch {
        url: url.to_string(),
        message,
    };
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
    let response = client.get(uri).await.map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body = http_body_util::Limited::new(response.into_body(), limits.max_bytes);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(WasmError::TooLarge {
            url: url.to_string(),
            limit: limits.max_bytes,
        }),
        Err(error) => Err(fail(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MODULE: &str = r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#;

    fn filter(url: String, bytes: &[u8]) -> pb::WasmFilter {
        pb::WasmFilter {
            name: "f".into(),
            url,
            sha256: sha256_hex(bytes),
            ..Default::default()
        }
    }

    fn limits(root: Option<&Path>) -> FetchLimits {
        FetchLimits {
            file_root: root.map(Path::to_path_buf),
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn file_urls_are_off_without_a_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let module = wat::parse_str(MODULE).expect("module");
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, &module).expect("write");
        let error = ensure(
            dir.path(),
            &limits(None),
            &filter(format!("file://{}", path.display()), &module),
        )
        .await
        .expect_err("off");
        assert!(matches!(error, WasmError::FileOff { .. }), "{error}");
    }

    #[tokio::test]
    async fn files_outside_the_root_are_refused_even_through_dot_dot_and_symlinks() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let module = wat::parse_str(MODULE).expect("module");
        let secret = outside.path().join("secret.wasm");
        std::fs::write(&secret, &module).expect("write");
        std::os::unix::fs::symlink(&secret, root.path().join("link.wasm")).expect("symlink");
        let dotdot = format!(
            "file://{}/../{}/secret.wasm",
            root.path().display(),
            outside.path().display().to_string().trim_start_matches('/')
        );
        for url in [
            format!("file://{}", secret.display()),
            format!("file://{}/link.wasm", root.path().display()),
            dotdot,
        ] {
            let error = ensure(cache.path(), &limits(Some(root.path())), &filter(url.clone(), &module))
                .await
                .expect_err("outside");
            assert!(matches!(error, WasmError::FileOutsideRoot { .. }), "{url}: {error}");
        }
    }

    #[tokio::test]
    async fn a_non_wasm_file_with_its_right_digest_is_refused_and_never_quoted() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let secret = b"root:$6$hash:19000:0:99999:7:::\n";
        let path = root.path().join("shadow");
        std::fs::write(&path, secret).expect("write");
        let wanted = filter(format!("file://{}", path.display()), secret);
        let error = ensure(cache.path(), &limits(Some(root.path())), &wanted)
            .await
            .expect_err("not wasm");
        assert!(matches!(error, WasmError::Module { .. }), "{error}");
        assert!(!error.to_string().contains("root:"), "{error}");
        assert_eq!(
            std::fs::read_dir(cache.path()).expect("cache").count(),
            0,
            "nothing cached"
        );

        // A wrong digest says so without the digest of what was read.
        let mut wrong = wanted.clone();
        wrong.sha256 = "0".repeat(64);
        let error = ensure(cache.path(), &limits(Some(root.path())), &wrong)
            .await
            .expect_err("digest");
        assert!(!error.to_string().contains(&sha256_hex(secret)), "{error}");
    }

    #[tokio::test]
    async fn a_module_under_the_root_is_cached_and_large_files_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let module = wat::parse_str(MODULE).expect("module");
        let path = root.path().join("sub").join("m.wasm");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &module).expect("write");
        let wanted = filter(format!("file://{}", path.display()), &module);
        ensure(cache.path(), &limits(Some(root.path())), &wanted)
            .await
            .expect("cached");
        assert!(cache.path().join(format!("{}.wasm", wanted.sha256)).exists());

        let big = vec![0u8; 2048];
        std::fs::write(root.path().join("big.wasm"), &big).expect("write");
        let error = ensure(
            cache.path(),
            &limits(Some(root.path())),
            &filter(format!("file://{}/big.wasm", root.path().display()), &big),
        )
        .await
        .expect_err("too large");
        assert!(matches!(error, WasmError::TooLarge { .. }), "{error}");
    }
}

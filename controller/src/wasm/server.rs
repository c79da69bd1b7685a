//! `GET /<sha256>.wasm` from the cache directory: what Envoy's remote data source fetches.
//! Only modules this process verified are served, whatever else the folder holds.
use std::{convert::Infallible, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming};
use kgw_common::{serve::HttpHandler, tls::ConnInfo};
use kgw_proto::identity::Identity;

use super::Verified;

/// The cache's HTTP handler (see [`kgw_common::serve::serve_http`]): Envoys and admins only.
pub struct WasmCache {
    dir: Arc<PathBuf>,
    verified: Verified,
}

impl WasmCache {
    pub fn new(dir: PathBuf, verified: Verified) -> Self {
        Self {
            dir: Arc::new(dir),
            verified,
        }
    }
}

impl HttpHandler for WasmCache {
    async fn handle(&self, request: Request<Incoming>, info: &ConnInfo) -> Response<Full<Bytes>> {
        if !info.peer.allows(Identity::is_proxy_or_admin) {
            tracing::info!(peer = %info.peer, "WASM cache request refused: not an Envoy's certificate");
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "{} may not read the WASM cache\n",
                info.peer
            ))));
            *response.status_mut() = StatusCode::FORBIDDEN;
            return response;
        }
        let Ok(response) = handle(request, self.dir.clone(), self.verified.clone()).await;
        response
    }
}

async fn handle(
    request: Request<Incoming>,
    dir: Arc<PathBuf>,
    verified: Verified,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let name = request.uri().path().trim_start_matches('/');
    let digest = name
        .strip_suffix(".wasm")
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|d| verified.contains(d));
    let reply = |status: StatusCode, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response
    };
    let Some(digest) = digest else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"expected /<sha256>.wasm of a verified module\n"),
        ));
    };
    match tokio::fs::read(dir.join(format!("{digest}.wasm"))).await {
        Ok(bytes) => {
            let mut response = reply(StatusCode::OK, Bytes::from(bytes));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/wasm"),
            );
            Ok(response)
        }
        Err(_) => Ok(reply(
            StatusCode::NOT_FOUND,
            Bytes::from(format!("module {digest} is not cached\n")),
        )),
    }
}

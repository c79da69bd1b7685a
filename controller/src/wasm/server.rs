//! `GET /<sha256>.wasm` from the cache directory: what Envoy's remote data source fetches.
//! Only modules this process verified are served, whatever else the folder holds.
use std::{convert::Infallible, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use kgw_common::shutdown::Shutdown;

use super::Verified;

/// Serves the cache directory until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, dir: PathBuf, verified: Verified, shutdown: Shutdown) {
    let dir = Arc::new(dir);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "WASM cache accept failed");
                    continue;
                }
            },
        };
        let (dir, verified) = (dir.clone(), verified.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, dir.clone(), verified.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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

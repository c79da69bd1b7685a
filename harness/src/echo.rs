//! The echo backend: answers every request 200 with a JSON description of it
//! (`{"backend", "method", "path", "host", "headers"}`) and the header `x-backend`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The JSON body for one request.
pub fn describe<B>(name: &str, req: &Request<B>) -> serde_json::Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": path,
        "host": host,
        "headers": headers,
    })
}

async fn handle(name: String, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = describe(&name, &req);
    // Drain the request body so the connection stays reusable.
    let _ = req.into_body().collect().await;
    let resp = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-backend", name.as_str())
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid");
    Ok(resp)
}

/// Serves the echo backend on a bound listener until the task is aborted.
pub async fn serve(listener: TcpListener, name: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(name.clone(), req));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Binds `addr` and serves the echo backend on it in a task. Abort the handle to stop.
/// The bound address (for port 0) is `listener.local_addr()`: use [`spawn_echo_on`].
pub async fn spawn_echo(addr: SocketAddr, name: &str) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(spawn_echo_on(listener, name))
}

/// Serves the echo backend on an already bound listener in a task.
pub fn spawn_echo_on(listener: TcpListener, name: &str) -> JoinHandle<()> {
    tokio::spawn(serve(listener, name.to_string()))
}

//! HTTP/1.1 servers (REST xDS, WASM cache, webhook, monitoring) on a [`Listener`].
use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};

use super::Listener;
use crate::{shutdown::Shutdown, tls::ConnInfo};

/// Answers one request; `peer` says who asked (for authorization).
pub trait HttpHandler: Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>, peer: &ConnInfo)
    -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Timeouts of an HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct HttpOptions {
    /// A client that has not sent its request headers by then is dropped.
    pub header_read_timeout: Duration,
    /// At shutdown, open connections get this long to finish their request.
    pub drain: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown`, then lets open connections finish
/// their current request (at most [`HttpOptions::drain`]).
pub async fn serve_http<H: HttpHandler>(listener: Listener, handler: H, options: HttpOptions, shutdown: Shutdown) {
    let name = listener.name();
    let handler = Arc::new(handler);
    let graceful = GracefulShutdown::new();
    let mut incoming = listener.incoming(shutdown);
    while let Some(conn) = incoming.next().await {
        let Ok(conn) = conn else { continue };
        let info = Arc::new(conn.info().clone());
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let (handler, info) = (handler.clone(), info.clone());
            async move { Ok::<_, Infallible>(handler.handle(request, &info).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .serve_connection(TokioIo::new(conn), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(server = name, %error, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(options.drain, graceful.shutdown()).await.is_err() {
        tracing::info!(
            server = name,
            "connections still open after the drain period; closing them"
        );
    }
}

//! A small HTTP/1.1 GET for the OpenAPI detector: a fresh connection per request (probes
//! are rare, and a pool would hold sockets to thousands of Services), one timeout over the
//! whole exchange, and a cap on the body so a hostile or confused server cannot make
//! discovery buffer gigabytes.
use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP/1.1 exchange failed")]
    Http(#[source] hyper::Error),
    #[error("invalid request")]
    Request(#[source] hyper::http::Error),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read the body")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl HttpError {
    /// The address itself is unusable (nothing listens, or it does not answer): asking it
    /// for other paths would only wait again.
    pub(crate) fn unreachable(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout(_))
    }
}

pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
}

/// `GET path` on `addr`, within `timeout`, reading at most `limit` bytes of body.
pub(crate) async fn get(addr: SocketAddr, path: &str, timeout: Duration, limit: usize) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, exchange(addr, path, limit))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange(addr: SocketAddr, path: &str, limit: usize) -> Result<Response, HttpError> {
    let stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Http)?;
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::ACCEPT, "application/json, application/yaml;q=0.9, */*;q=0.5")
        .header(header::USER_AGENT, "kgw-discovery-fds")
        .body(Empty::<Bytes>::new())
        .map_err(HttpError::Request)?;
    // The connection is driven here, not spawned, so a timeout drops it with the request.
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(HttpError::Http)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| match error.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => HttpError::TooLarge { limit },
                Err(other) => HttpError::Body(other),
            })?
            .to_bytes();
        Ok(Response {
            status,
            content_type,
            body,
        })
    };
    let (result, _connection) = tokio::join!(exchange, connection);
    result
}

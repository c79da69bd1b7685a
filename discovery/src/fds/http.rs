//! A small HTTP/1.1 GET for the OpenAPI detector: a fresh connection per request (probes
//! are rare, and a pool would hold sockets to thousands of Services), one timeout over the
//! whole exchange, and a cap on the body so a hostile or confused server cannot make
//! discovery buffer gigabytes. Over TLS when the upstream only speaks TLS (see [`super::tls`]).
use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::tls::{self, Alpn, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("TLS")]
    Tls(#[source] TlsError),
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
    /// The address itself is unusable (nothing listens, it does not answer, or its TLS
    /// handshake fails): asking it for other paths would only fail again.
    pub(crate) fn unreachable(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout(_) | Self::Tls(_))
    }
}

pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
}

/// Over TLS: the name to send (SNI, and verified unless `skip_verify`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tls<'a> {
    pub(crate) server_name: &'a str,
    pub(crate) skip_verify: bool,
}

/// `GET path` on `addr` (over TLS when `tls` says), within `timeout`, reading at most
/// `limit` bytes of body.
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    tls: Option<Tls<'_>>,
    timeout: Duration,
    limit: usize,
) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, connect_and_get(addr, path, tls, limit))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn connect_and_get(
    addr: SocketAddr,
    path: &str,
    tls: Option<Tls<'_>>,
    limit: usize,
) -> Result<Response, HttpError> {
    let stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, addr.to_string(), path, limit).await,
        Some(Tls {
            server_name,
            skip_verify,
        }) => {
            let stream = tls::connect(stream, addr, server_name, skip_verify, Alpn::Http1)
                .await
                .map_err(HttpError::Tls)?;
            // The Host the certificate names, with the port unless it is HTTPS's.
            let host = if server_name.parse::<std::net::IpAddr>().is_ok() {
                addr.to_string()
            } else if addr.port() == 443 {
                server_name.to_string()
            } else {
                format!("{server_name}:{}", addr.port())
            };
            exchange(stream, host, path, limit).await
        }
    }
}

async fn exchange<S>(stream: S, host: String, path: &str, limit: usize) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Http)?;
    let request = Request::get(path)
        .header(header::HOST, host)
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

//! The webhook's HTTPS server: rustls (ring) + hyper 1, `POST /validation` (Gloo's path)
//! and `POST /validate`. The certificate comes from PEM files or, without them, is
//! generated (self-signed) at start.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use kgw_common::{
    serve::{HttpHandler, HttpOptions, Listener, ServerTls, serve_http},
    shutdown::Shutdown,
    tls::ConnInfo,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use super::{Webhook, review::AdmissionReview};
use crate::validation::Validator;

/// The paths the webhook answers on.
pub const PATHS: [&str; 2] = ["/validation", "/validate"];
/// Largest AdmissionReview accepted (the API server's objects are at most a few MiB).
const MAX_BODY: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook-cert and --webhook-key must be given together")]
    HalfPair,
    #[error("cannot read the webhook {what} from {path}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot generate the webhook's self-signed certificate")]
    Generate(#[source] rcgen::Error),
    #[error("the webhook certificate and key are not usable")]
    Tls(#[source] rustls::Error),
    #[error("cannot listen on {addr} (--webhook-addr)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The server's TLS configuration and the certificate it presents (clients of a generated
/// one trust exactly that certificate).
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub certificate: CertificateDer<'static>,
}

impl Tls {
    /// From PEM files (certificate chain, private key), or a self-signed certificate for
    /// `localhost`, 127.0.0.1 and `addr`'s IP when no files are given.
    pub fn load(cert: Option<&Path>, key: Option<&Path>, addr: SocketAddr) -> Result<Self, WebhookError> {
        let (chain, key) = match (cert, key) {
            (Some(cert), Some(key)) => read_pem(cert, key)?,
            (None, None) => generate(addr)?,
            _ => return Err(WebhookError::HalfPair),
        };
        let certificate = chain.first().cloned().ok_or_else(|| WebhookError::Pem {
            what: "certificate",
            path: cert.map(Path::to_path_buf).unwrap_or_default(),
            source: rustls_pki_types::pem::Error::NoItemsFound,
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(WebhookError::Tls)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(WebhookError::Tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            certificate,
        })
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pem(cert: &Path, key: &Path) -> Result<Identity, WebhookError> {
    let pem_error = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| WebhookError::Pem { what, path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_error("certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate", cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error("private key", key))?;
    Ok((chain, key))
}

fn generate(addr: SocketAddr) -> Result<Identity, WebhookError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !addr.ip().is_unspecified() && !names.contains(&addr.ip().to_string()) {
        names.push(addr.ip().to_string());
    }
    let key = rcgen::KeyPair::generate().map_err(WebhookError::Generate)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(WebhookError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kgw gateway validation webhook");
    let cert = params.self_signed(&key).map_err(WebhookError::Generate)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}

/// Binds the webhook's address, serving `tls`.
pub async fn bind(addr: SocketAddr, tls: &Tls) -> Result<Listener, WebhookError> {
    Listener::bind("admission webhook", addr, ServerTls::Fixed(tls.config.clone()))
        .await
        .map_err(|error| WebhookError::Bind {
            addr,
            source: error.source,
        })
}

/// Serves the webhook on `listener` until shutdown.
pub fn spawn<V: Validator>(listener: Listener, webhook: Arc<Webhook<V>>, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(serve_http(listener, Handler(webhook), HttpOptions::default(), shutdown))
}

struct Handler<V: Validator>(Arc<Webhook<V>>);

impl<V: Validator> HttpHandler for Handler<V> {
    async fn handle(&self, request: Request<Incoming>, _peer: &ConnInfo) -> Response<Full<Bytes>> {
        handle(&self.0, request).await
    }
}

async fn handle<V: Validator>(webhook: &Webhook<V>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !PATHS.contains(&request.uri().path()) {
        return plain(StatusCode::NOT_FOUND, "not found: the webhook answers POST /validation");
    }
    if request.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an admission.k8s.io/v1 AdmissionReview",
        );
    }
    let body = match kgw_common::body::read_capped(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(error @ kgw_common::body::BodyError::TooLarge { .. }) => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, &error.to_string());
        }
        Err(error) => return plain(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    let review = match AdmissionReview::decode_body(&body) {
        Ok(review) => review,
        Err(error) => {
            tracing::warn!(%error, "webhook got an invalid AdmissionReview");
            return plain(StatusCode::BAD_REQUEST, &format!("invalid AdmissionReview: {error}"));
        }
    };
    let answer = webhook.review(review).await;
    match serde_json::to_vec(&answer) {
        Ok(json) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response")),
        Err(error) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {error}"),
        ),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}

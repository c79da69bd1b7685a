//! TLS for the probes of Services and static Upstreams that only speak TLS (a port with
//! appProtocol `https` / `tls`, named `https`, or number 443; a static Upstream with
//! `useTls`): rustls on ring, as the rest of the project.
//!
//! Certificates are verified, against the system's roots (`SSL_CERT_FILE` /
//! `SSL_CERT_DIR` add or replace them, as for the Lambda API). That is what Gloo did: its
//! OpenAPI detector fetched `https://` documents with Go's default HTTP client, which
//! verifies against the system pool and the URL's host. A probe that skipped verification
//! would still only read API documents, but it would take functions (and, for gRPC, the
//! descriptors the controller configures Envoy with) from whoever answers on the address;
//! so skipping is an operator's choice: `--fds-tls-insecure-skip-verify` (clusters whose
//! Services present certificates of a private CA that cannot be mounted).
//!
//! The SNI (and the name verified) is the static host's `sniAddr`, else its address; for
//! a Service, `<service>.<namespace>.svc.cluster.local` (Gloo's name for a kube upstream).
use std::{
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

/// What the TLS connection carries: chosen by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    Http1,
    H2,
}

/// Connection errors of a TLS probe.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load the system's TLS roots")]
    Roots(#[source] io::Error),
    #[error("TLS setup")]
    Setup(#[source] rustls::Error),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("TLS handshake with {server_name}")]
    Handshake {
        server_name: String,
        #[source]
        source: io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration, built once per process for each (verification, ALPN).
fn client_config(skip_verify: bool, alpn: Alpn) -> Result<Arc<ClientConfig>, TlsError> {
    static CONFIGS: [OnceLock<Result<Arc<ClientConfig>, String>>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = usize::from(skip_verify) * 2 + usize::from(alpn == Alpn::H2);
    let built = CONFIGS[slot].get_or_init(|| build(skip_verify, alpn).map(Arc::new).map_err(|e| super::chain(&e)));
    built
        .clone()
        .map_err(|message| TlsError::Roots(io::Error::other(message)))
}

fn build(skip_verify: bool, alpn: Alpn) -> Result<ClientConfig, TlsError> {
    use hyper_rustls::ConfigBuilderExt as _;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    } else {
        builder
            .with_native_roots()
            .map_err(TlsError::Roots)?
            .with_no_client_auth()
    };
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    Ok(config)
}

/// TLS over `stream` to `addr`, sending `server_name` (a DNS name or an IP address).
pub(crate) async fn connect(
    stream: TcpStream,
    addr: SocketAddr,
    server_name: &str,
    skip_verify: bool,
    alpn: Alpn,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let config = client_config(skip_verify, alpn)?;
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|_| TlsError::ServerName(server_name.to_string()))?;
    tracing::trace!(%addr, server_name, "TLS handshake");
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|source| TlsError::Handshake {
            server_name: server_name.to_string(),
            source,
        })
}

/// Accepts any certificate (`--fds-tls-insecure-skip-verify`); the handshake's signatures
/// are still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! One generation of certificates read from a TLS folder, and the rustls configurations
//! built from it.
use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};

use super::TlsError;

/// The CA, the chain and the key.
pub(super) const CA_FILE: &str = "ca.crt";
pub(super) const CERT_FILE: &str = "tls.crt";
pub(super) const KEY_FILE: &str = "tls.key";

/// The protocol a server speaks, announced by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC.
    H2,
    /// Plain HTTP/1.1 servers.
    Http1,
}

/// The certificates of one generation and the configurations built from them.
#[derive(Debug)]
pub struct Material {
    /// sha256 over the three files, to notice a rotation.
    pub digest: [u8; 32],
    /// The common name and serial of our certificate, for log lines.
    subject: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub ca: Vec<CertificateDer<'static>>,
    grpc: Arc<ServerConfig>,
    http1: Arc<ServerConfig>,
    /// Our certificate as a client, the CA as the only root.
    pub client: Arc<ClientConfig>,
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// sha256 of the folder's three files.
pub(crate) fn digest_files(dir: &Path) -> Result<[u8; 32], TlsError> {
    let mut hasher = Sha256::new();
    for name in [CA_FILE, CERT_FILE, KEY_FILE] {
        hasher.update(read(&dir.join(name))?);
        hasher.update([0]);
    }
    Ok(hasher.finalize().into())
}

fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The CA certificates as a root store.
pub(crate) fn roots(path: &Path, ca: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|source| TlsError::Ca {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

impl Material {
    /// Reads and checks `dir`: the certificate must be usable with the key, and the CA
    /// must parse.
    pub fn read(dir: &Path) -> Result<Self, TlsError> {
        let (ca_path, cert_path, key_path) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
        let (ca_pem, cert_pem, key_pem) = (read(&ca_path)?, read(&cert_path)?, read(&key_path)?);
        let ca = certs(&ca_path, &ca_pem)?;
        let chain = certs(&cert_path, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Pem {
            path: key_path.clone(),
            source,
        })?;
        let roots = Arc::new(roots(&ca_path, &ca)?);
        let config_error = |source| TlsError::Config {
            dir: dir.to_path_buf(),
            source,
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|source| TlsError::Verifier {
                dir: dir.to_path_buf(),
                source,
            })?;
        let server = |alpn: Alpn| -> Result<Arc<ServerConfig>, TlsError> {
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(config_error)?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(config_error)?;
            config.alpn_protocols = match alpn {
                Alpn::H2 => vec![b"h2".to_vec()],
                Alpn::Http1 => vec![b"http/1.1".to_vec()],
            };
            Ok(Arc::new(config))
        };
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(config_error)?;
        Ok(Self {
            digest: digest_files(dir)?,
            subject: super::peer::describe(&chain[0]),
            grpc: server(Alpn::H2)?,
            http1: server(Alpn::Http1)?,
            client: Arc::new(client),
            chain,
            ca,
        })
    }

    /// The server configuration for `alpn`.
    pub fn server(&self, alpn: Alpn) -> Arc<ServerConfig> {
        match alpn {
            Alpn::H2 => self.grpc.clone(),
            Alpn::Http1 => self.http1.clone(),
        }
    }

    /// `<common name> (serial <hex>)`.
    pub fn describe(&self) -> &str {
        &self.subject
    }
}

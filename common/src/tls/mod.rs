//! mTLS between our processes: one CA, a certificate per process (and per Envoy role),
//! reloaded from disk while running so that certificates rotate without a restart.
//!
//! A TLS folder holds `ca.crt`, `tls.crt` and `tls.key` (the layout of a Kubernetes TLS
//! Secret with its CA, as cert-manager writes it). Who a client is comes from its
//! certificate's common name ([`kgw_proto::identity`]).
pub mod client;
pub mod grpc;
mod material;
mod peer;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use material::{Alpn, Material};
pub use peer::{ConnInfo, Peer};
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;

/// How often the files are checked for a new certificate.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM {what} in it")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: invalid PEM")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: cannot use the CA certificate")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{dir}: certificate and key do not make a TLS configuration")]
    Config {
        dir: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{dir}: cannot build the client-certificate verifier")]
    Verifier {
        dir: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error(
        "no TLS folder: give --tls-dir (ca.crt, tls.crt, tls.key), or --insecure-no-mtls to run every port in plain text (debugging only)"
    )]
    NoTlsDir,
}

/// The certificates of this process, kept current: every reader sees the latest good
/// material; a rotated file that does not parse is logged and the previous one stays.
#[derive(Clone, Debug)]
pub struct Mtls {
    current: watch::Receiver<Arc<Material>>,
}

impl Mtls {
    /// Loads `dir` (an error at once if it is incomplete) and checks it for changes every
    /// [`RELOAD_INTERVAL`] on a task that ends when the last clone is dropped.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let dir = dir.into();
        let material = Material::read(&dir)?;
        tracing::info!(dir = %dir.display(), identity = %material.describe(), "mTLS certificates loaded");
        let (tx, current) = watch::channel(Arc::new(material));
        tokio::spawn(reload(dir, tx));
        Ok(Self { current })
    }

    /// The current material.
    pub fn material(&self) -> Arc<Material> {
        self.current.borrow().clone()
    }

    /// The server configuration for new connections: client certificates required.
    pub fn server_config(&self, alpn: Alpn) -> Arc<ServerConfig> {
        self.material().server(alpn)
    }

    /// The client configuration for new connections: our certificate, the CA as the only
    /// root.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.material().client.clone()
    }
}

async fn reload(dir: PathBuf, tx: watch::Sender<Arc<Material>>) {
    let mut seen = tx.borrow().digest;
    let mut interval = tokio::time::interval(RELOAD_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = interval.tick() => {}
        }
        let digest = match material::digest_files(&dir) {
            Ok(digest) => digest,
            // Mid-rotation (a file replaced): try again on the next tick.
            Err(_) => continue,
        };
        if digest == seen {
            continue;
        }
        seen = digest;
        match Material::read(&dir) {
            Ok(material) => {
                tracing::info!(dir = %dir.display(), identity = %material.describe(), "mTLS certificates reloaded");
                tx.send_replace(Arc::new(material));
            }
            Err(error) => {
                tracing::warn!(
                    dir = %dir.display(),
                    error = %crate::telemetry::error_chain(&error),
                    "new mTLS certificates refused; the previous ones stay in use"
                );
            }
        }
    }
}

/// What `--tls-dir` / `--insecure-no-mtls` resolve to.
#[derive(Clone, Debug)]
pub enum TlsMode {
    /// Every port with TLS and client certificates.
    Mtls(Mtls),
    /// Plain text everywhere (debugging).
    Insecure,
}

impl TlsMode {
    /// From the flags: a folder gives mTLS; `insecure` gives plain text, loudly; neither
    /// is an error (mTLS is the default and needs certificates).
    pub fn from_flags(dir: Option<&std::path::Path>, insecure: bool) -> Result<Self, TlsError> {
        match (dir, insecure) {
            (Some(dir), _) => Ok(TlsMode::Mtls(Mtls::load(dir)?)),
            (None, true) => {
                tracing::warn!(
                    "mTLS is OFF (--insecure-no-mtls): every port of this process is plain text and \
                     unauthenticated; anyone who reaches it can read and change the gateway's config. \
                     Debugging only."
                );
                Ok(TlsMode::Insecure)
            }
            (None, false) => Err(TlsError::NoTlsDir),
        }
    }

    /// The certificates, unless mTLS is off.
    pub fn mtls(&self) -> Option<&Mtls> {
        match self {
            TlsMode::Mtls(mtls) => Some(mtls),
            TlsMode::Insecure => None,
        }
    }
}

//! One way to serve a port, for every HTTP and gRPC server of ours: TLS (mTLS, a fixed
//! certificate, or plain text), a cap on open connections, a handshake timeout, backoff on
//! accept errors, and a stream of connections that ends at shutdown so that servers drain.
mod conn;
mod http;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use conn::Conn;
pub use http::{HttpHandler, HttpOptions, serve_http};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    shutdown::Shutdown,
    tls::{Alpn, Mtls, Peer, TlsMode},
};

/// The TLS a port speaks.
#[derive(Clone, Debug)]
pub enum ServerTls {
    /// Client certificates required, certificates reloaded on rotation.
    Mtls { mtls: Mtls, alpn: Alpn },
    /// A fixed certificate, no client certificate asked (the admission webhook, which the
    /// Kubernetes API server calls).
    Fixed(Arc<rustls::ServerConfig>),
    /// Plain text.
    Off,
}

impl ServerTls {
    /// What a port of ours speaks in `mode`.
    pub fn for_mode(mode: &TlsMode, alpn: Alpn) -> Self {
        match mode.mtls() {
            Some(mtls) => ServerTls::Mtls {
                mtls: mtls.clone(),
                alpn,
            },
            None => ServerTls::Off,
        }
    }
}

/// Limits of one port.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A TLS handshake that takes longer is dropped.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A bound port, ready to serve.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    /// For log lines: `REST xDS`, `validation gRPC`, ...
    name: &'static str,
    tls: ServerTls,
    limits: Limits,
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: cannot listen on {addr}")]
pub struct BindError {
    pub name: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The first wait after an accept error (out of file descriptors, ...); doubles to 1 s.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

impl Listener {
    /// Binds `addr` now, so that a taken port fails the start with its address.
    pub async fn bind(name: &'static str, addr: SocketAddr, tls: ServerTls) -> Result<Self, BindError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { name, addr, source })?;
        Ok(Self {
            tcp,
            name,
            tls,
            limits: Limits::default(),
        })
    }

    /// Other limits than the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr().ok()
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Accepted (and, with TLS, handshaken) connections until `shutdown`; then the stream
    /// ends, and tonic or [`serve_http`] drain what is open.
    pub fn incoming(self, shutdown: Shutdown) -> ReceiverStream<std::io::Result<Conn>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.accept_loop(tx, shutdown));
        ReceiverStream::new(rx)
    }

    async fn accept_loop(self, tx: mpsc::Sender<std::io::Result<Conn>>, shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let mut backoff = ACCEPT_BACKOFF;
        loop {
            // The server stopped reading connections: nothing left to accept for.
            if tx.is_closed() {
                return;
            }
            let permit = tokio::select! {
                _ = shutdown.wait() => return,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (stream, remote) = tokio::select! {
                _ = shutdown.wait() => return,
                accepted = self.tcp.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(server = self.name, %error, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            backoff = ACCEPT_BACKOFF;
            let _ = stream.set_nodelay(true);
            let (tx, tls, name, timeout) = (tx.clone(), self.tls.clone(), self.name, self.limits.handshake_timeout);
            // Handshakes run beside the accept loop, so a slow client holds up no one.
            tokio::spawn(async move {
                let conn = match tls {
                    ServerTls::Off => Conn::plain(stream, remote, Peer::Plaintext, permit),
                    ServerTls::Mtls { mtls, alpn } => {
                        match handshake(stream, mtls.server_config(alpn), timeout).await {
                            Ok(tls) => Conn::tls(tls, remote, permit),
                            // A port probe (connect, close) is not worth a line.
                            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                                tracing::debug!(server = name, %remote, %error, "TLS handshake abandoned");
                                return;
                            }
                            Err(error) => {
                                tracing::info!(server = name, %remote, %error, "TLS handshake refused");
                                return;
                            }
                        }
                    }
                    ServerTls::Fixed(config) => match handshake(stream, config, timeout).await {
                        Ok(tls) => Conn::tls(tls, remote, permit),
                        Err(error) => {
                            tracing::debug!(server = name, %remote, %error, "TLS handshake failed");
                            return;
                        }
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    }
}

async fn handshake(
    stream: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(config).accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out")),
    }
}

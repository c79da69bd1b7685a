//! Authorization at the gRPC edge: who may call which server.
use kgw_proto::identity::Identity;
use tonic::{Request, Status, service::Interceptor};

use super::{ConnInfo, Peer};

/// Who sent `request`: the peer our [`crate::serve::Listener`] established. A request
/// that did not come through one (an in-process test server) counts as plain text.
pub fn peer_of<T>(request: &Request<T>) -> Peer {
    request
        .extensions()
        .get::<ConnInfo>()
        .map(|info| info.peer.clone())
        .unwrap_or(Peer::Plaintext)
}

/// `Ok` if the peer passes `allowed`; else PERMISSION_DENIED naming the peer, and a log line.
pub fn authorize<T>(request: &Request<T>, server: &str, allowed: impl Fn(&Identity) -> bool) -> Result<(), Status> {
    let peer = peer_of(request);
    if peer.allows(allowed) {
        return Ok(());
    }
    tracing::info!(server, %peer, "request refused: this certificate may not use this server");
    Err(Status::permission_denied(format!("{peer} may not use the {server}")))
}

/// An interceptor that lets through only peers that pass `allowed`.
#[derive(Clone, Copy)]
pub struct Require {
    pub server: &'static str,
    pub allowed: fn(&Identity) -> bool,
}

impl Interceptor for Require {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        authorize(&request, self.server, self.allowed)?;
        Ok(request)
    }
}

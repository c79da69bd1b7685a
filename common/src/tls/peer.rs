//! Who is on the other end of a connection.
use std::net::SocketAddr;

use kgw_proto::identity::Identity;
use rustls::pki_types::CertificateDer;

/// The other end as the handshake established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A client certificate signed by our CA, naming a known identity.
    Verified(Identity),
    /// A certificate signed by our CA whose common name is none of ours: refused by every
    /// authorization check, kept apart for the log line.
    Unknown(String),
    /// TLS without a client certificate (only where a server accepts that).
    Anonymous,
    /// mTLS is off (`--insecure-no-mtls`): everyone is allowed.
    Plaintext,
}

impl Peer {
    /// From the certificates the client presented (already verified by rustls).
    pub fn from_certificates(certs: Option<&[CertificateDer<'_>]>) -> Self {
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return Peer::Anonymous;
        };
        match common_name(leaf) {
            Some(name) => match Identity::from_common_name(&name) {
                Some(identity) => Peer::Verified(identity),
                None => Peer::Unknown(name),
            },
            None => Peer::Unknown(String::new()),
        }
    }

    /// Whether `allowed` holds for this peer (always, with mTLS off).
    pub fn allows(&self, allowed: impl Fn(&Identity) -> bool) -> bool {
        match self {
            Peer::Verified(identity) => allowed(identity),
            Peer::Plaintext => true,
            Peer::Unknown(_) | Peer::Anonymous => false,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Verified(identity) => write!(f, "{identity}"),
            Peer::Unknown(name) => write!(f, "unknown certificate {name:?}"),
            Peer::Anonymous => f.write_str("a client without a certificate"),
            Peer::Plaintext => f.write_str("a plain-text client (mTLS off)"),
        }
    }
}

/// What a server knows about one connection (tonic puts it in each request's extensions).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub peer: Peer,
}

/// The subject's common name of a DER certificate.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// `<common name> (serial <hex>)`, for log lines.
pub(crate) fn describe(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) => format!(
            "{} (serial {})",
            common_name(cert).unwrap_or_default(),
            parsed.raw_serial_as_string()
        ),
        Err(_) => "an unparsable certificate".into(),
    }
}

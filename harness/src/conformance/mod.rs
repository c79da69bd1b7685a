//! The Gateway API conformance runner: the suite's HTTP cases (../shared/conformance) run
//! against our processes, real Envoy and in-process stand-ins of the suite's echo backend,
//! on loopback, with the directory source.
pub mod cases;
pub mod certs;
pub mod client;
pub mod compare;
pub mod echo;
pub mod go_checks;
pub mod mutations;
pub mod report;
pub mod run;
pub mod status;
pub mod world;

pub use run::{RunOptions, run};

/// A key pair in PEM (a `kubernetes.io/tls` Secret's `tls.crt` / `tls.key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What the echo pods echoed: the mirror checks look here instead of in pod logs.
pub trait EchoLogs: Send + Sync {
    /// Whether a pod of Service `service` (its name starts with the Service's name) in
    /// `namespace` logged "Echoing back request made to `request_uri`".
    fn echoed(&self, namespace: &str, service: &str, request_uri: &str) -> bool;
    /// How many requests with this exact request URI the pods of `service` echoed.
    fn echo_count(&self, namespace: &str, service: &str, request_uri: &str) -> usize;
}

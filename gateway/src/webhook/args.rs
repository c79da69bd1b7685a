//! The gateway's validation flags (each also an environment variable), as Gloo names its
//! validation settings.
use std::{net::SocketAddr, path::PathBuf, str::FromStr};

use clap::ArgAction;
use kgw_common::tls::TlsMode;

use super::ValidationConfig;
use crate::validation::Policy;

/// Where the webhook listens, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookAddr(pub Option<SocketAddr>);

impl FromStr for WebhookAddr {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "off" | "none" | "" => Ok(Self(None)),
            _ => text.parse().map(|addr| Self(Some(addr))),
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct ValidationArgs {
    /// The validating admission webhook (HTTPS, POST /validation); `off` disables it. In a
    /// pod: 0.0.0.0:8443.
    #[arg(long, env = "KGW_WEBHOOK_ADDR", default_value = "127.0.0.2:8443")]
    pub webhook_addr: WebhookAddr,
    /// The webhook's PEM certificate chain; without it (and --webhook-key) a self-signed
    /// certificate is generated at start.
    #[arg(long, env = "KGW_WEBHOOK_CERT", requires = "webhook_key")]
    pub webhook_cert: Option<PathBuf>,
    /// The webhook's PEM private key.
    #[arg(long, env = "KGW_WEBHOOK_KEY", requires = "webhook_cert")]
    pub webhook_key: Option<PathBuf>,
    /// The controller's validation gRPC service.
    #[arg(long, env = "KGW_VALIDATION_ADDR", default_value = crate::validation::grpc::DEFAULT_ADDR, global = true)]
    pub validation_addr: String,
    /// Report problems but allow every change; `--always-accept=false` denies.
    #[arg(long, env = "KGW_ALWAYS_ACCEPT", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub always_accept: bool,
    /// Warnings alone do not deny; `--allow-warnings=false` denies on warnings too.
    #[arg(long, env = "KGW_ALLOW_WARNINGS", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub allow_warnings: bool,
    /// Validate every config-dir change against the controller in the background and
    /// report what would be denied (`gateway status problems.validation`).
    #[arg(long, env = "KGW_BACKGROUND_VALIDATION", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub background_validation: bool,
}

impl ValidationArgs {
    /// The settings; `tls` is how the validation client reaches the controller.
    pub fn config(&self, tls: TlsMode) -> ValidationConfig {
        ValidationConfig {
            tls,
            validation_addr: self.validation_addr.clone(),
            policy: Policy {
                always_accept: self.always_accept,
                allow_warnings: self.allow_warnings,
            },
            webhook_addr: self.webhook_addr.0,
            cert: self.webhook_cert.clone(),
            key: self.webhook_key.clone(),
            background: self.background_validation,
        }
    }
}

//! Command-line pieces every process shares.
use std::path::PathBuf;

use crate::telemetry::LogFormat;

/// Where resources come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// A folder of Kubernetes YAML manifests, watched for changes.
    #[default]
    Directory,
    /// The Kubernetes API (not available yet: the binaries say so and exit).
    Kubernetes,
}

/// Flags shared by the processes that read the config source and talk to NATS.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// NATS server URL.
    #[arg(long, env = "KGW_NATS_URL", default_value = "nats://127.0.0.1:4222", global = true)]
    pub nats_url: String,
    /// Log format on stderr: text or json.
    #[arg(long, env = "KGW_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// Flags of processes that read resources.
#[derive(Clone, Debug, clap::Args)]
pub struct SourceArgs {
    /// Config source: `directory` (default) or `kubernetes`.
    #[arg(long, env = "KGW_SOURCE", value_enum, default_value = "directory")]
    pub source: SourceKind,
    /// Folder of Kubernetes YAML manifests (directory source).
    #[arg(long, env = "KGW_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--source kubernetes is not supported yet; use --source directory --config-dir DIR")]
    KubernetesUnsupported,
    #[error("--config-dir is required with --source directory")]
    MissingConfigDir,
}

impl SourceArgs {
    /// The directory to read, or why there is none.
    pub fn directory(&self) -> Result<PathBuf, ConfigError> {
        match self.source {
            SourceKind::Kubernetes => Err(ConfigError::KubernetesUnsupported),
            SourceKind::Directory => self.config_dir.clone().ok_or(ConfigError::MissingConfigDir),
        }
    }
}

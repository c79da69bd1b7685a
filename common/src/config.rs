//! Command-line pieces every process shares.
use std::path::PathBuf;

use crate::telemetry::LogFormat;

/// Where resources come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// A folder of Kubernetes YAML manifests, watched for changes.
    #[default]
    Directory,
    /// The Kubernetes API: watchers per kind (and per namespace with `--namespaces`).
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
    /// NATS user (a broker with authorization): gateway, controller, discovery or
    /// access-log, each allowed only what that process does.
    #[arg(long, env = "KGW_NATS_USER", global = true)]
    pub nats_user: Option<String>,
    /// File holding the NATS user's password (a mounted Secret).
    #[arg(long, env = "KGW_NATS_PASSWORD_FILE", global = true)]
    pub nats_password_file: Option<PathBuf>,
    /// mTLS folder: `ca.crt`, `tls.crt`, `tls.key` (a Kubernetes TLS Secret with its CA).
    /// Every port of ours then requires a client certificate from that CA, our clients
    /// present this certificate, and NATS is reached over TLS. Files are re-read when they
    /// change (rotation without a restart).
    #[arg(long, env = "KGW_TLS_DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// Serve every port in plain text without client certificates, and reach NATS without
    /// TLS. For debugging only: anyone who reaches a port can read or change the config.
    #[arg(long, env = "KGW_INSECURE_NO_MTLS", global = true, conflicts_with = "tls_dir")]
    pub insecure_no_mtls: bool,
}

impl CommonArgs {
    /// The credentials these flags give; with mTLS, NATS is reached over TLS with this
    /// process's certificate.
    pub fn nats_auth(&self, tls: &crate::tls::TlsMode) -> crate::bus::NatsAuth {
        crate::bus::NatsAuth {
            user: self.nats_user.clone(),
            password_file: self.nats_password_file.clone(),
            tls: tls.mtls().cloned(),
        }
    }

    /// mTLS from `--tls-dir`, or plain text with `--insecure-no-mtls` (loudly); neither is
    /// an error. Call inside the tokio runtime (a task watches the files).
    pub fn tls_mode(&self) -> Result<crate::tls::TlsMode, crate::tls::TlsError> {
        crate::tls::TlsMode::from_flags(self.tls_dir.as_deref(), self.insecure_no_mtls)
    }
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
    /// Largest manifest file read (directory source); a larger file is reported and its
    /// last good content keeps serving.
    #[arg(long, env = "KGW_MAX_FILE_BYTES", default_value_t = DirSpec::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// Kubeconfig file(s), `:`-separated (kubernetes source). Without it: the in-cluster
    /// config (a pod's service account), else the usual inference (`~/.kube/config`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// Namespaces to watch, comma-separated; empty: all namespaces.
    #[arg(long, env = "KGW_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Only objects matching this label selector (e.g. `app=web,tier!=test`), every kind.
    #[arg(long, env = "KGW_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
}

/// Where the Kubernetes source connects and what it watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeSpec {
    /// Kubeconfig files (merged in order); empty: in-cluster, else inferred.
    pub kubeconfig: Vec<PathBuf>,
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
}

/// The directory source: which folder, and how large a file it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSpec {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
}

impl DirSpec {
    /// Far above any real manifest, far below what would strain a process.
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
}

impl From<PathBuf> for DirSpec {
    fn from(dir: PathBuf) -> Self {
        Self {
            dir,
            max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// The config source a process reads, as chosen on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    Directory(DirSpec),
    Kubernetes(KubeSpec),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--config-dir is required with --source directory")]
    MissingConfigDir,
}

impl SourceArgs {
    /// The source these flags choose, or why they choose none.
    pub fn spec(&self) -> Result<SourceSpec, ConfigError> {
        match self.source {
            SourceKind::Directory => self
                .config_dir
                .clone()
                .map(|dir| {
                    SourceSpec::Directory(DirSpec {
                        dir,
                        max_file_bytes: self.max_file_bytes,
                    })
                })
                .ok_or(ConfigError::MissingConfigDir),
            SourceKind::Kubernetes => Ok(SourceSpec::Kubernetes(KubeSpec {
                kubeconfig: self
                    .kubeconfig
                    .iter()
                    .flat_map(|paths| std::env::split_paths(paths).collect::<Vec<_>>())
                    .filter(|path| !path.as_os_str().is_empty())
                    .collect(),
                namespaces: self
                    .namespaces
                    .iter()
                    .map(|ns| ns.trim().to_string())
                    .filter(|ns| !ns.is_empty())
                    .collect(),
                label_selector: self.label_selector.clone().filter(|s| !s.trim().is_empty()),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        source: SourceArgs,
    }

    fn spec(args: &[&str]) -> Result<SourceSpec, ConfigError> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("valid flags")
            .source
            .spec()
    }

    #[test]
    fn kubernetes_flags() {
        let parsed = spec(&[
            "--source",
            "kubernetes",
            "--kubeconfig",
            "a.yaml:b.yaml",
            "--namespaces",
            "team-a, team-b,",
            "--label-selector",
            "app=web",
        ]);
        let Ok(SourceSpec::Kubernetes(kube)) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(kube.kubeconfig, [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")]);
        assert_eq!(kube.namespaces, ["team-a", "team-b"]);
        assert_eq!(kube.label_selector.as_deref(), Some("app=web"));
    }

    #[test]
    fn directory_needs_a_folder() {
        // Built, not parsed: KGW_CONFIG_DIR in the environment would fill it.
        let without = SourceArgs {
            source: SourceKind::Directory,
            config_dir: None,
            max_file_bytes: DirSpec::DEFAULT_MAX_FILE_BYTES,
            kubeconfig: None,
            namespaces: Vec::new(),
            label_selector: None,
        };
        assert!(matches!(without.spec(), Err(ConfigError::MissingConfigDir)));
        assert_eq!(
            spec(&["--config-dir", "examples"]).ok(),
            Some(SourceSpec::Directory(PathBuf::from("examples").into()))
        );
    }
}

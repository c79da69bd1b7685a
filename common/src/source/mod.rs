//! Config sources: where resources come from. Two sources, one contract: each sends
//! [`Batch`]es (changes since the last batch, every current problem, and `initial` on the
//! first, which holds the whole state) into one mpsc channel, and a process picks one with
//! [`spawn`] from its `--source` flags.
//!
//! - [`directory`]: a folder of YAML manifests, watched for changes.
//! - [`kubernetes`]: kube-rs watchers per kind (and per namespace), relisted on desync.
use std::{path::PathBuf, sync::Arc};

use tokio::sync::mpsc;

use crate::{config::SourceSpec, resources::Change, resources::Kind, shutdown::Shutdown};

mod directory;
pub mod kubernetes;
pub mod relist;

pub use directory::{DirState, spawn_dir_source, spawn_dir_source_of, spawn_dir_source_with};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("config directory {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot watch {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot start the Kubernetes source")]
    Kubernetes(#[from] kubernetes::KubeSourceError),
}

/// Something wrong in one document of one file (directory source) or one object
/// (Kubernetes source). Shown to people: names the file (or `kubernetes`), the document
/// (1-based; 0 when not about one document), the resource when known, and the field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Path relative to the config directory, or `kubernetes`.
    pub file: String,
    pub document: usize,
    /// `Kind/namespace/name`, when the document got that far.
    pub resource: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.document, &self.resource) {
            (0, Some(resource)) => write!(f, "{} {resource}: {}", self.file, self.message),
            (0, None) => write!(f, "{}: {}", self.file, self.message),
            (document, _) => write!(f, "{} (document {document}): {}", self.file, self.message),
        }
    }
}

/// What a source sends: changes since the last batch, and every current problem.
#[derive(Clone, Debug)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub problems: Arc<Vec<Problem>>,
    /// The first batch, after the initial scan or list: the whole state.
    pub initial: bool,
    /// `source.batch`: where a config change's trace starts; the work on this batch is its
    /// child (it ends when the last clone of the batch is dropped).
    pub span: tracing::Span,
}

impl Batch {
    /// A batch from `source`, with its `source.batch` span naming the changed resources.
    pub fn new(source: &'static str, changes: Vec<Change>, problems: Arc<Vec<Problem>>, initial: bool) -> Self {
        let span = tracing::info_span!(
            parent: None,
            "source.batch",
            source,
            initial,
            changes = changes.len(),
            problems = problems.len(),
            resources = %resource_list(&changes),
        );
        Self {
            changes,
            problems,
            initial,
            span,
        }
    }

    /// Batches in arrival order as one: every change in order, the latest problems. `None`
    /// for no batch.
    pub fn merge(batches: impl IntoIterator<Item = Batch>) -> Option<Batch> {
        let mut batches = batches.into_iter();
        let mut merged = batches.next()?;
        for more in batches {
            merged.changes.extend(more.changes);
            merged.problems = more.problems;
            merged.initial |= more.initial;
            // The merged work continues every batch's trace.
            merged.span.follows_from(&more.span);
        }
        Some(merged)
    }
}

/// At most ten resource names, for a span field (an initial batch holds every resource).
fn resource_list(changes: &[Change]) -> String {
    let mut names: Vec<String> = changes.iter().take(10).map(|c| c.key().to_string()).collect();
    if changes.len() > 10 {
        names.push(format!("... ({} in all)", changes.len()));
    }
    names.join(",")
}

/// A started source.
#[derive(Clone)]
pub enum Started {
    Directory,
    /// The client the watchers use, for the process's other API calls (status).
    Kubernetes(kube::Client),
}

impl Started {
    pub fn kube_client(&self) -> Option<&kube::Client> {
        match self {
            Self::Directory => None,
            Self::Kubernetes(client) => Some(client),
        }
    }
}

/// Starts the source `spec` names. `kinds`: what this process reads (the Kubernetes source
/// watches only these; the directory source reads every kind its files declare).
pub async fn spawn(
    spec: SourceSpec,
    kinds: &[Kind],
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) -> Result<Started, SourceError> {
    spawn_kinds(spec, kinds, None, batches, shutdown).await
}

/// [`spawn`] for a process that reads `kinds` and nothing else: the directory source keeps
/// only those too (with [`spawn`] it keeps every kind, which a process may read from a
/// directory but not from the API server, as the gateway its TLS Secrets).
pub async fn spawn_only(
    spec: SourceSpec,
    kinds: &[Kind],
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) -> Result<Started, SourceError> {
    spawn_kinds(spec, kinds, Some(kinds), batches, shutdown).await
}

async fn spawn_kinds(
    spec: SourceSpec,
    kinds: &[Kind],
    only: Option<&[Kind]>,
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) -> Result<Started, SourceError> {
    match spec {
        SourceSpec::Directory(spec) => {
            directory::spawn_dir_source_of(spec, only, batches, shutdown)?;
            Ok(Started::Directory)
        }
        SourceSpec::Kubernetes(spec) => {
            let client = kubernetes::client(&spec).await?;
            kubernetes::spawn_kube_source(client.clone(), &spec, kinds, batches, shutdown);
            Ok(Started::Kubernetes(client))
        }
    }
}

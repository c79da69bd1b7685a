//! The directory config source: a folder of multi-document Kubernetes YAML, watched for
//! changes. Each file is decoded document by document; a document that fails keeps the last
//! good version of the resource it declares, and a file that is not YAML at all keeps every
//! resource it held, so one bad edit never takes anything else down.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::Watcher as _;
use serde::Deserialize as _;
use tokio::sync::mpsc;

use super::{Batch, Problem, SourceError};
use crate::config::DirSpec;
use crate::{
    resources::{Change, DecodeError, Kind, Resource, ResourceKey, decode},
    shutdown::Shutdown,
};

/// The resources one file declares, ordered by key. Kept for every file: a vector, as most
/// files declare one or two resources (a map would allocate a whole B-tree node each).
type FileResources = Vec<(ResourceKey, Resource)>;

/// The pure part of the source: files → resources, with fallbacks and duplicate handling.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<String, FileResources>,
    /// Files declaring each key, in path order (no duplicates); the first wins.
    owners: BTreeMap<ResourceKey, Vec<String>>,
    problems: BTreeMap<String, Vec<Problem>>,
    /// `metadata.generation` as the API server would keep it, for documents that do not set
    /// it: 1 when a resource appears, one more each time its spec changes (status reports
    /// carry it as `observedGeneration`).
    generations: BTreeMap<ResourceKey, (i64, u64)>,
    /// The kinds kept (`None`: all): a process that reads a few kinds (the controller its
    /// Secrets) does not hold every HTTPRoute of the directory.
    only: Option<Vec<Kind>>,
}

impl DirState {
    /// A state that keeps only resources of `kinds`.
    pub fn only(kinds: &[Kind]) -> Self {
        Self {
            only: Some(kinds.to_vec()),
            ..Self::default()
        }
    }

    /// Applies new contents of `file` (None: the file is gone) and returns the changes to
    /// the effective set of resources.
    pub fn update_file(&mut self, file: &str, contents: Option<&str>) -> Vec<Change> {
        let old: BTreeMap<ResourceKey, Resource> = self.files.get(file).into_iter().flatten().cloned().collect();
        let (mut new, mut problems) = match contents {
            Some(text) => parse_file(file, text, &old),
            None => (BTreeMap::new(), Vec::new()),
        };
        if let Some(only) = &self.only {
            new.retain(|key, _| only.contains(&key.kind));
        }
        let affected: BTreeSet<ResourceKey> = old.keys().chain(new.keys()).cloned().collect();
        let before: Vec<Option<Resource>> = affected.iter().map(|k| self.effective(k)).collect();
        self.files.remove(file);
        for key in old.keys() {
            if let Some(set) = self.owners.get_mut(key) {
                if let Ok(at) = set.binary_search_by(|f| f.as_str().cmp(file)) {
                    set.remove(at);
                }
                if set.is_empty() {
                    self.owners.remove(key);
                }
            }
        }
        for key in new.keys() {
            let set = self.owners.entry(key.clone()).or_default();
            if let Err(at) = set.binary_search_by(|f| f.as_str().cmp(file)) {
                set.insert(at, file.to_string());
            }
            if let Some(first) = set.first().filter(|first| *first != file) {
                problems.push(Problem {
                    file: file.to_string(),
                    document: 0,
                    resource: Some(key.to_string()),
                    message: format!("{key} is also declared in {first}, which wins; this copy is ignored"),
                });
            }
        }
        if contents.is_some() {
            self.files.insert(file.to_string(), new.into_iter().collect());
        }
        if problems.is_empty() {
            self.problems.remove(file);
        } else {
            for problem in &problems {
                tracing::error!(file = %problem.file, document = problem.document, resource = ?problem.resource, error = %problem.message, "bad config document; its last good state keeps serving");
            }
            self.problems.insert(file.to_string(), problems);
        }
        let mut changes = Vec::new();
        for (key, before) in affected.into_iter().zip(before) {
            match (before, self.effective(&key)) {
                (Some(_), None) => changes.push(Change::Delete(key)),
                (Some(before), Some(after)) if self.same(&key, &before, &after) => {
                    // Unchanged: the copy read again gives way to the one the index has.
                    if let Some(slot) = self.effective_mut(&key) {
                        *slot = before;
                    }
                }
                (_, Some(after)) => changes.push(Change::Upsert(key, after)),
                (None, None) => {}
            }
        }
        changes.into_iter().map(|change| self.generation(change)).collect()
    }

    /// Gives an upserted resource without a generation of its own the one it has here.
    fn generation(&mut self, change: Change) -> Change {
        match change {
            Change::Upsert(key, resource) if resource.generation().is_none() => {
                let digest = resource.spec_digest();
                let generation = match self.generations.get(&key) {
                    Some((generation, before)) if *before == digest => *generation,
                    Some((generation, _)) => generation + 1,
                    None => 1,
                };
                self.generations.insert(key.clone(), (generation, digest));
                let resource = resource.with_generation(generation);
                // Kept stamped: the index and this state share one copy of the object.
                if let Some(slot) = self.effective_mut(&key) {
                    *slot = resource.clone();
                }
                Change::Upsert(key, resource)
            }
            Change::Delete(key) => {
                self.generations.remove(&key);
                Change::Delete(key)
            }
            other => other,
        }
    }

    /// Whether `after`, as a file now declares it, is `before`, as it was effective: the
    /// same object, or `before` with the generation this state stamped it with (the
    /// effective copies are kept stamped, the declared ones are not).
    fn same(&self, key: &ResourceKey, before: &Resource, after: &Resource) -> bool {
        let stamped = self.generations.get(key).map(|(generation, _)| *generation);
        match (before.generation(), after.generation()) {
            (Some(generation), None) if stamped == Some(generation) => *before == after.with_generation(generation),
            _ => before == after,
        }
    }

    fn effective_mut(&mut self, key: &ResourceKey) -> Option<&mut Resource> {
        let file = self.owners.get(key)?.first()?;
        let resources = self.files.get_mut(file)?;
        let at = resources.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&mut resources[at].1)
    }

    fn effective(&self, key: &ResourceKey) -> Option<Resource> {
        let file = self.owners.get(key)?.first()?;
        let resources = self.files.get(file)?;
        let at = resources.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(resources[at].1.clone())
    }

    /// Whether `text` as the new content of `file` would drop a resource the file holds.
    pub fn would_remove(&self, file: &str, text: &str) -> bool {
        let Some(old) = self.files.get(file) else { return false };
        let old: BTreeMap<ResourceKey, Resource> = old.iter().cloned().collect();
        let (new, _) = parse_file(file, text, &old);
        old.keys().any(|key| !new.contains_key(key))
    }

    /// Keeps what `file` held and reports why its new content was not read.
    pub fn refuse_file(&mut self, file: &str, message: String) {
        tracing::error!(%file, error = %message, "config file not read; its last good state keeps serving");
        self.problems.insert(
            file.to_string(),
            vec![Problem {
                file: file.to_string(),
                document: 0,
                resource: None,
                message,
            }],
        );
    }

    /// Files currently tracked, relative paths.
    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.files.keys()
    }

    /// The tracked files a path that is gone stood for: the file itself, or a directory and
    /// everything below it. A range of the sorted map, not a scan: an editor's or an atomic
    /// writer's temporary file is gone after every save, and the directory may hold 20k.
    pub fn files_gone_with(&self, rel: &str) -> Vec<String> {
        let below = format!("{rel}/");
        let itself = self.files.get_key_value(rel).map(|(file, _)| file.clone());
        itself
            .into_iter()
            .chain(
                self.files
                    .range::<str, _>((std::ops::Bound::Included(below.as_str()), std::ops::Bound::Unbounded))
                    .map(|(file, _)| file)
                    .take_while(|file| file.starts_with(&below))
                    .cloned(),
            )
            .collect()
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.problems.values().flatten().cloned().collect()
    }
}

/// Decodes every document of a file. Failing documents keep `old`'s version of the resource
/// they declare; a file that is not valid YAML keeps all of `old`.
fn parse_file(
    file: &str,
    text: &str,
    old: &BTreeMap<ResourceKey, Resource>,
) -> (BTreeMap<ResourceKey, Resource>, Vec<Problem>) {
    let mut docs = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(document) {
            Ok(value) => docs.push(value),
            Err(error) => {
                let document = docs.len() + 1;
                let problem = Problem {
                    file: file.to_string(),
                    document,
                    resource: None,
                    message: format!("not valid YAML: {error}; the file's last good state keeps serving"),
                };
                return (old.clone(), vec![problem]);
            }
        }
    }
    let mut resources = BTreeMap::new();
    let mut problems = Vec::new();
    // A document that fails before naming its resource could be any of the file's: then
    // every resource the file held and no longer declares keeps its last good version.
    let mut unattributed = false;
    for (i, doc) in docs.into_iter().enumerate() {
        match decode(doc) {
            Ok(Some((key, resource))) => {
                if resources.insert(key.clone(), resource).is_some() {
                    problems.push(Problem {
                        file: file.to_string(),
                        document: i + 1,
                        resource: Some(key.to_string()),
                        message: format!("{key} is declared twice in this file; the later one wins"),
                    });
                }
            }
            Ok(None) => {}
            Err(error) => {
                unattributed |= error.key_hint().is_none();
                let kept = keep_last_good(&error, old, &mut resources);
                problems.push(Problem {
                    file: file.to_string(),
                    document: i + 1,
                    resource: error.key_hint().map(|(k, ns, n)| {
                        if ns.is_empty() {
                            format!("{k}/{n}")
                        } else {
                            format!("{k}/{ns}/{n}")
                        }
                    }),
                    message: if kept {
                        format!("{error}; its last good version keeps serving")
                    } else {
                        error.to_string()
                    },
                });
            }
        }
    }
    if unattributed {
        for (key, resource) in old {
            resources.entry(key.clone()).or_insert_with(|| resource.clone());
        }
    }
    (resources, problems)
}

fn keep_last_good(
    error: &DecodeError,
    old: &BTreeMap<ResourceKey, Resource>,
    resources: &mut BTreeMap<ResourceKey, Resource>,
) -> bool {
    let Some((kind, namespace, name)) = error.key_hint() else {
        return false;
    };
    let previous = old
        .iter()
        .find(|(k, _)| k.kind.as_str() == kind && k.namespace == namespace && k.name == name);
    match previous {
        Some((key, resource)) => {
            resources.insert(key.clone(), resource.clone());
            true
        }
        None => false,
    }
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.ends_with('~'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// Every manifest under `dir`. Symlinked folders are followed, but a folder (by its real
/// path) is read once: a symlink loop is reported and not followed again.
fn scan(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut visited = BTreeSet::new();
    scan_into(dir, out, &mut visited);
}

fn scan_into(dir: &Path, out: &mut Vec<PathBuf>, visited: &mut BTreeSet<PathBuf>) {
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if !visited.insert(real.clone()) {
        tracing::warn!(dir = %dir.display(), real = %real.display(), "folder already read (symlink loop or second link); not followed");
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            scan_into(&path, out, visited);
        } else if is_manifest(&path) {
            out.push(path);
        }
    }
}

/// Watches `dir` (files up to the default size) and sends a [`Batch`] after the initial
/// scan and after every change. Runs until shutdown or until the receiver is dropped.
pub fn spawn_dir_source(dir: PathBuf, batches: mpsc::Sender<Batch>, shutdown: Shutdown) -> Result<(), SourceError> {
    spawn_dir_source_with(DirSpec::from(dir), batches, shutdown)
}

/// [`spawn_dir_source`] with a size limit of the caller's.
pub fn spawn_dir_source_with(
    spec: DirSpec,
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    spawn_dir_source_of(spec, None, batches, shutdown)
}

/// [`spawn_dir_source_with`], keeping only resources of `only` (`None`: all).
pub fn spawn_dir_source_of(
    spec: DirSpec,
    only: Option<&[Kind]>,
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    let initial_state = only.map_or_else(DirState::default, DirState::only);
    let DirSpec { dir, max_file_bytes } = spec;
    if !dir.is_dir() {
        return Err(SourceError::NotADirectory(dir));
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let (events_tx, mut events) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Reading a file raises open/access/close-nowrite events: reacting to those would
        // re-read forever. Only changes count.
        Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
        Ok(event) => {
            for path in event.paths {
                let _ = events_tx.send(path);
            }
        }
        Err(error) => tracing::warn!(%error, "file watch error"),
    })
    .map_err(|source| SourceError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|source| SourceError::Watch {
            path: dir.clone(),
            source,
        })?;

    tokio::spawn(async move {
        let _watcher = watcher; // dropped (unwatched) when this task ends
        let mut state = initial_state;
        let mut initial = Vec::new();
        scan(&dir, &mut initial);
        initial.sort();
        let mut changes = Vec::new();
        for path in &initial {
            changes.extend(reload(&mut state, &dir, path, max_file_bytes).await);
        }
        tracing::info!(dir = %dir.display(), files = initial.len(), resources = changes.len(), "read config directory");
        let first = Batch::new("directory", changes, Arc::new(state.problems()), true);
        if batches.send(first).await.is_err() {
            return;
        }
        loop {
            let first = tokio::select! {
                _ = shutdown.wait() => return,
                path = events.recv() => match path { Some(path) => path, None => return },
            };
            // Editors and `mv` raise several events at once: those already queued are taken
            // together. No fixed wait: each file is read as it is now, so an event that comes
            // later makes one more batch, not a wrong one, and a wait would be paid by every
            // change (it was 2 ms, half of a change's time in this process).
            tokio::task::yield_now().await;
            let mut paths = BTreeSet::from([first]);
            while let Ok(path) = events.try_recv() {
                paths.insert(path);
            }
            let before = state.problems();
            let mut changes = Vec::new();
            for path in paths {
                if path.is_dir() {
                    let mut found = Vec::new();
                    scan(&path, &mut found);
                    for file in found {
                        changes.extend(reload(&mut state, &dir, &file, max_file_bytes).await);
                    }
                } else if path.exists() {
                    if is_manifest(&path) {
                        changes.extend(reload(&mut state, &dir, &path, max_file_bytes).await);
                    }
                } else {
                    // Gone: the file itself, or a directory and everything below it.
                    let rel = relative(&dir, &path);
                    for file in state.files_gone_with(&rel) {
                        changes.extend(state.update_file(&file, None));
                    }
                }
            }
            let problems = state.problems();
            if changes.is_empty() && problems == before {
                continue;
            }
            tracing::debug!(
                changes = changes.len(),
                problems = problems.len(),
                "config directory changed"
            );
            let batch = Batch::new("directory", changes, Arc::new(problems), false);
            if batches.send(batch).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned()
}

/// A file that seems to lose resources may be mid-write (truncated, then written): it is
/// read again after this long before anything is removed.
const SETTLE_BEFORE_REMOVING: Duration = Duration::from_millis(50);

async fn reload(state: &mut DirState, dir: &Path, path: &Path, max_bytes: u64) -> Vec<Change> {
    let rel = relative(dir, path);
    let mut read = read_capped(path, max_bytes);
    if let Ok(Some(text)) = &read
        && state.would_remove(&rel, text)
    {
        tokio::time::sleep(SETTLE_BEFORE_REMOVING).await;
        read = read_capped(path, max_bytes);
    }
    match read {
        Ok(Some(text)) => state.update_file(&rel, Some(&text)),
        Ok(None) => {
            state.refuse_file(
                &rel,
                format!("larger than {max_bytes} bytes (--max-file-bytes); its last good content keeps serving"),
            );
            Vec::new()
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => state.update_file(&rel, None),
        Err(error) => {
            tracing::warn!(file = %rel, %error, "cannot read config file; keeping its last good state");
            Vec::new()
        }
    }
}

/// The file's text, or None when it is larger than `max_bytes` (never reading past it, even
/// if it grows meanwhile).
fn read_capped(path: &Path, max_bytes: u64) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > max_bytes {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE_A: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\nspec: {hostnames: [a.example]}\n";
    const ROUTE_B: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: b}\nspec: {hostnames: [b.example]}\n";

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Upsert(k, _) => format!("+{k}"),
                Change::Delete(k) => format!("-{k}"),
            })
            .collect()
    }

    #[test]
    fn add_edit_delete() {
        let mut state = DirState::default();
        let both = format!("{ROUTE_A}---\n{ROUTE_B}");
        assert_eq!(
            names(&state.update_file("r.yaml", Some(&both))),
            ["+HTTPRoute/default/a", "+HTTPRoute/default/b"]
        );
        assert!(
            state.update_file("r.yaml", Some(&both)).is_empty(),
            "no change, no event"
        );
        assert_eq!(
            names(&state.update_file("r.yaml", Some(ROUTE_A))),
            ["-HTTPRoute/default/b"]
        );
        assert_eq!(names(&state.update_file("r.yaml", None)), ["-HTTPRoute/default/a"]);
    }

    #[test]
    fn a_state_for_some_kinds_keeps_only_those() {
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\ntype: Opaque\n";
        let mut state = DirState::only(&[Kind::Secret]);
        let both = format!("{ROUTE_A}---\n{secret}");
        assert_eq!(names(&state.update_file("r.yaml", Some(&both))), ["+Secret/default/s"]);
        assert_eq!(state.files["r.yaml"].len(), 1, "the route is not held");
        assert_eq!(
            names(&state.update_file("r.yaml", Some(ROUTE_A))),
            ["-Secret/default/s"]
        );
    }

    #[test]
    fn a_gone_path_stands_for_its_file_or_everything_below_it() {
        let mut state = DirState::default();
        for file in ["a.yaml", "a/x.yaml", "a/y/z.yaml", "a-b.yaml", "ab/c.yaml", "b.yaml"] {
            state.update_file(file, Some(ROUTE_A));
        }
        assert_eq!(state.files_gone_with("a.yaml"), ["a.yaml"]);
        assert_eq!(state.files_gone_with("a"), ["a/x.yaml", "a/y/z.yaml"]);
        assert_eq!(state.files_gone_with("a/y"), ["a/y/z.yaml"]);
        assert!(state.files_gone_with(".a.yaml.tmp").is_empty(), "a temporary file");
        assert!(state.files_gone_with("c").is_empty());
    }

    /// Generations as the API server keeps them: 1 at first, +1 per spec change, not for
    /// a label change, 1 again after a delete.
    #[test]
    fn generations_count_spec_changes() {
        let mut state = DirState::default();
        let generation = |changes: Vec<Change>| match changes.as_slice() {
            [Change::Upsert(_, resource)] => resource.generation(),
            other => panic!("one upsert expected: {}", other.len()),
        };
        assert_eq!(generation(state.update_file("r.yaml", Some(ROUTE_A))), Some(1));
        let edited = ROUTE_A.replace("a.example", "c.example");
        assert_eq!(generation(state.update_file("r.yaml", Some(&edited))), Some(2));
        let labelled = edited.replace("metadata: {", "metadata: {labels: {x: y}, ");
        assert_ne!(labelled, edited, "the fixture has a flow-style metadata");
        assert_eq!(generation(state.update_file("r.yaml", Some(&labelled))), Some(2));
        // The same content read again is no change (the state keeps its copy stamped, and
        // that copy is the one the index got).
        assert!(state.update_file("r.yaml", Some(&labelled)).is_empty());
        let key = state.owners.keys().next().expect("a key").clone();
        let kept = state.effective(&key).expect("effective");
        assert_eq!(kept.generation(), Some(2));
        state.update_file("r.yaml", None);
        assert_eq!(generation(state.update_file("r.yaml", Some(ROUTE_A))), Some(1));
    }

    #[test]
    fn bad_document_keeps_last_good_version_and_names_the_field() {
        let mut state = DirState::default();
        state.update_file("r.yaml", Some(&format!("{ROUTE_A}---\n{ROUTE_B}")));
        let bad_b = ROUTE_B.replace("hostnames: [b.example]", "hostnames: {x: 1}");
        let changes = state.update_file("r.yaml", Some(&format!("{ROUTE_A}---\n{bad_b}")));
        assert!(
            changes.is_empty(),
            "b keeps its last good version: {:?}",
            names(&changes)
        );
        let problems = state.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, "r.yaml");
        assert_eq!(problems[0].document, 2);
        assert_eq!(problems[0].resource.as_deref(), Some("HTTPRoute/default/b"));
        assert!(
            problems[0].message.contains("spec.hostnames"),
            "{}",
            problems[0].message
        );
        // Fixing it clears the problem.
        state.update_file("r.yaml", Some(&format!("{ROUTE_A}---\n{ROUTE_B}")));
        assert!(state.problems().is_empty());
    }

    #[test]
    fn a_document_without_a_name_keeps_the_files_resources() {
        let mut state = DirState::default();
        state.update_file("r.yaml", Some(ROUTE_A));
        let nameless = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {}\n";
        assert!(
            state.update_file("r.yaml", Some(nameless)).is_empty(),
            "route a is kept"
        );
        assert!(state.problems()[0].message.contains("metadata.name"));
    }

    #[test]
    fn invalid_yaml_keeps_the_whole_file() {
        let mut state = DirState::default();
        state.update_file("r.yaml", Some(ROUTE_A));
        let changes = state.update_file("r.yaml", Some("kind: [unclosed\n"));
        assert!(changes.is_empty());
        assert_eq!(state.problems()[0].file, "r.yaml");
        assert!(state.problems()[0].message.contains("not valid YAML"));
    }

    #[test]
    fn duplicates_across_files_first_path_wins() {
        let mut state = DirState::default();
        state.update_file("b.yaml", Some(ROUTE_A));
        let other = ROUTE_A.replace("a.example", "other.example");
        assert!(state.update_file("c.yaml", Some(&other)).is_empty(), "b.yaml wins");
        assert_eq!(state.problems().len(), 1);
        // Deleting the winner promotes the other copy.
        assert_eq!(names(&state.update_file("b.yaml", None)), ["+HTTPRoute/default/a"]);
    }
}

//! The directory source on a real folder: create, edit, rename, delete, and a file that is
//! written in pieces, as editors and `kubectl`-style tools do.
use std::{path::Path, time::Duration};

use kgw_common::{
    resources::{Change, Index},
    shutdown::Shutdown,
    source::{Batch, spawn_dir_source},
};
use tokio::sync::mpsc;

fn route(name: &str, host: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec: {{hostnames: [{host}]}}\n"
    )
}

/// Applies batches until `done` holds for the index (or 10 s pass).
async fn until(rx: &mut mpsc::Receiver<Batch>, index: &mut Index, done: impl Fn(&Index) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done(index) {
            let batch = rx.recv().await.expect("source running");
            for change in &batch.changes {
                index.apply(change);
            }
        }
    })
    .await
    .expect("the index reached the expected state");
}

fn hosts(index: &Index, name: &str) -> Vec<String> {
    index
        .http_routes
        .get(&("default".to_string(), name.to_string()))
        .and_then(|r| r.spec.hostnames.clone())
        .unwrap_or_default()
}

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(tmp, dir.join(file)).expect("rename");
}

#[tokio::test]
async fn create_edit_rename_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.yaml", &route("a", "a.example"));
    let (tx, mut rx) = mpsc::channel(16);
    let shutdown = Shutdown::new();
    spawn_dir_source(dir.path().to_path_buf(), tx, shutdown.clone()).expect("source");
    let mut index = Index::default();

    let first = rx.recv().await.expect("initial batch");
    assert!(first.initial);
    first.changes.iter().for_each(|c| index.apply(c));
    assert_eq!(hosts(&index, "a"), ["a.example"]);

    // Create in a subfolder, edit in place.
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    write(&dir.path().join("sub"), "b.yaml", &route("b", "b.example"));
    until(&mut rx, &mut index, |i| hosts(i, "b") == ["b.example"]).await;
    std::fs::write(dir.path().join("a.yaml"), route("a", "edited.example")).expect("edit");
    until(&mut rx, &mut index, |i| hosts(i, "a") == ["edited.example"]).await;

    // Rename keeps the resource; renaming to a non-manifest name removes it.
    std::fs::rename(dir.path().join("a.yaml"), dir.path().join("renamed.yml")).expect("rename");
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(batch) = rx.try_recv() {
        batch.changes.iter().for_each(|c| index.apply(c));
    }
    assert_eq!(hosts(&index, "a"), ["edited.example"], "a rename keeps the route");
    std::fs::rename(dir.path().join("renamed.yml"), dir.path().join("renamed.txt")).expect("rename");
    until(&mut rx, &mut index, |i| hosts(i, "a").is_empty()).await;

    // Deleting a folder removes what it held.
    std::fs::remove_dir_all(dir.path().join("sub")).expect("rm");
    until(&mut rx, &mut index, |i| hosts(i, "b").is_empty()).await;
    shutdown.trigger();
}

#[tokio::test]
async fn a_half_written_file_never_removes_what_it_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx) = mpsc::channel(16);
    let shutdown = Shutdown::new();
    spawn_dir_source(dir.path().to_path_buf(), tx, shutdown.clone()).expect("source");
    let mut index = Index::default();
    rx.recv().await.expect("initial");
    write(dir.path(), "r.yaml", &route("r", "r.example"));
    until(&mut rx, &mut index, |i| hosts(i, "r") == ["r.example"]).await;

    // A writer that truncates, then writes (as `>` in a shell does): the source may read
    // the empty file in between, and the route must not disappear meanwhile.
    let full = route("r", "r2.example");
    let file = dir.path().join("r.yaml");
    std::fs::File::create(&file).expect("truncate");
    tokio::time::sleep(Duration::from_millis(10)).await;
    std::fs::write(&file, &full).expect("complete");
    let mut deleted = false;
    tokio::time::timeout(Duration::from_secs(10), async {
        while hosts(&index, "r") != ["r2.example"] {
            let batch = rx.recv().await.expect("source running");
            deleted |= batch.changes.iter().any(|c| matches!(c, Change::Delete(_)));
            batch.changes.iter().for_each(|c| index.apply(c));
        }
    })
    .await
    .expect("the edit arrived");
    assert!(!deleted, "the half-done write removed the route for a moment");
    shutdown.trigger();
}

/// A folder symlinked into itself is read once: each file is read a single time, and the
/// route it declares is there once, with no duplicate-declaration problem.
#[tokio::test]
async fn a_symlink_loop_is_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    write(&sub, "a.yaml", &route("a", "a.example"));
    std::os::unix::fs::symlink(dir.path(), sub.join("loop")).expect("symlink");
    let (tx, mut rx) = mpsc::channel(16);
    spawn_dir_source(dir.path().to_path_buf(), tx, Shutdown::new()).expect("source");
    let first = rx.recv().await.expect("initial batch");
    assert_eq!(first.changes.len(), 1, "{:?}", first.changes);
    assert!(first.problems.is_empty(), "{:?}", first.problems);
}

/// A file over `--max-file-bytes` is not read: a problem names it and the limit, and what
/// it held before keeps serving.
#[tokio::test]
async fn a_file_over_the_size_limit_is_refused_and_keeps_its_last_good_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "a.yaml", &route("a", "a.example"));
    let (tx, mut rx) = mpsc::channel(16);
    let spec = kgw_common::config::DirSpec {
        dir: dir.path().to_path_buf(),
        max_file_bytes: 1024,
    };
    kgw_common::source::spawn_dir_source_with(spec, tx, Shutdown::new()).expect("source");
    let mut index = Index::default();
    until(&mut rx, &mut index, |i| hosts(i, "a") == ["a.example"]).await;

    let padding = format!("# {}\n", "x".repeat(2048));
    write(dir.path(), "a.yaml", &format!("{}{padding}", route("a", "b.example")));
    let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a batch")
        .expect("source running");
    assert!(batch.changes.is_empty(), "{:?}", batch.changes);
    let [problem] = batch.problems.as_slice() else {
        panic!("one problem: {:?}", batch.problems)
    };
    assert_eq!(problem.file, "a.yaml");
    assert!(
        problem.message.contains("larger than 1024 bytes"),
        "{}",
        problem.message
    );
    assert_eq!(hosts(&index, "a"), ["a.example"], "the last good content keeps serving");
}

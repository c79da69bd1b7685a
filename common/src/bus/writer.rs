//! [`spawn_kv_writer`]: keeps the keys one process owns equal to its desired state,
//! writing only what changed, each write carrying the trace context of the change.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::{Bus, read_all, resolve};
use crate::{chunk, shutdown::Shutdown, trace::TraceHeaders};

/// The desired content of the keys one writer owns, and the trace of the change that made
/// it (carried in the NATS headers of the writes it causes; not part of the content).
#[derive(Clone, Debug, Default)]
pub struct KvState {
    pub values: Arc<BTreeMap<String, Bytes>>,
    pub trace: Option<TraceHeaders>,
    /// The keys this state speaks for, when a writer owns a changing part of its keys
    /// (discovery replicas sharing the work): keys outside it are never written nor
    /// deleted. `None`: every key the writer's [`Owns`] accepts.
    pub scope: Option<Arc<Scope>>,
}

impl KvState {
    /// `values`, made by the work of the current span.
    pub fn traced(values: BTreeMap<String, Bytes>) -> Self {
        Self {
            values: Arc::new(values),
            trace: TraceHeaders::current(),
            scope: None,
        }
    }

    /// Whether `key` is within this state's scope.
    pub fn in_scope(&self, key: &str) -> bool {
        self.scope.as_ref().is_none_or(|scope| (scope.includes)(key))
    }

    fn scope_generation(&self) -> u64 {
        self.scope.as_ref().map_or(0, |scope| scope.generation)
    }
}

/// A part of a bucket's keys (see [`KvState::scope`]). A new part has a new `generation`:
/// the writer then reads the bucket again for the keys of that part before writing.
pub struct Scope {
    pub generation: u64,
    pub includes: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for KvState {
    type Target = BTreeMap<String, Bytes>;

    fn deref(&self) -> &Self::Target {
        &self.values
    }
}

/// Decides whether an existing key (with its value) belongs to this writer, so it may be
/// deleted when no longer desired. Keys of other writers are never touched.
pub type Owns = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

/// Counters a writer keeps, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub puts: u64,
    pub deletes: u64,
    pub errors: u64,
    /// Reconciliations that found nothing to write.
    pub unchanged: u64,
    /// Keys of this writer that another client deleted, overwrote or filled with garbage,
    /// seen on the bucket's watch and rewritten from the writer's state.
    pub repairs: u64,
    /// Parts of split values left behind by a value that shrank or vanished, removed.
    pub stale_parts_removed: u64,
    /// The [`Scope::generation`] of the last state written: once it is a scope's, no key
    /// outside that scope will be written (0: no scope).
    pub scope_generation: u64,
}

/// Keeps `bucket` equal to `desired` for the keys this writer owns: writes only keys whose
/// bytes differ from what the bucket holds, deletes owned keys no longer desired, and after
/// every reconnect re-reads the bucket and repairs what differs. It also watches the bucket:
/// a key of its own that another client deletes, overwrites or fills with garbage is
/// rewritten at once (logged and counted as a repair). Never gives up.
pub fn spawn_kv_writer(
    bus: Bus,
    bucket: &'static str,
    mut desired: watch::Receiver<KvState>,
    owns: Owns,
    shutdown: Shutdown,
) -> watch::Receiver<WriterStats> {
    let (stats_tx, stats_rx) = watch::channel(WriterStats::default());
    tokio::spawn(async move {
        let Ok(store) = bus.kv(bucket, &shutdown).await else {
            return;
        };
        let mut epoch = bus.epoch();
        // What we believe the bucket holds for our keys; None: unknown, read it first.
        let mut known: Option<BTreeMap<String, Bytes>> = None;
        // The scope `known` was read for.
        let mut known_scope = 0;
        // The bucket's changes since the last full read: how foreign writes are noticed.
        let mut changes: Option<kv::Watch> = None;
        // Revision of our last put per key: the watch echoes our own writes.
        let mut ours = Revisions::default();
        let mut delay = Duration::from_millis(50);
        loop {
            if known.is_none() {
                // Watch first, then read: a change between the two shows in both.
                changes = store.watch_all().await.ok();
                match read_all(&store).await {
                    Ok(all) => {
                        let want = desired.borrow().clone();
                        // Values read are slices of the client's read buffers: each is
                        // kept as the desired value when it is the same (shared), else
                        // copied, so that no read buffer stays alive for a few bytes of it.
                        let have: BTreeMap<_, _> = all
                            .into_iter()
                            .filter(|(k, v)| want.in_scope(k) && owns(k, v))
                            .map(|(k, v)| {
                                let v = match want.get(&k) {
                                    Some(same) if *same == v => same.clone(),
                                    _ => Bytes::copy_from_slice(&v),
                                };
                                (k, v)
                            })
                            .collect();
                        remove_stale_parts(&store, bucket, &want, &have, &owns, &stats_tx).await;
                        known = Some(have);
                        known_scope = want.scope_generation();
                    }
                    Err(error) => tracing::warn!(bucket, %error, "cannot read bucket; retrying"),
                }
            }
            if let Some(have) = known.as_mut() {
                // What to write, decided at once: the desired state is not held while the
                // writes wait (its owner may then update it in place).
                let plan = {
                    let want = desired.borrow_and_update();
                    if want.scope_generation() != known_scope {
                        // Another part of the bucket: read what it holds there first.
                        known = None;
                        continue;
                    }
                    Plan::new(&want, have)
                };
                let mut seen = Seen {
                    changes: &mut changes,
                    others: Vec::new(),
                    broke: false,
                };
                let written = reconcile(
                    &store,
                    &bus.jetstream,
                    bucket,
                    plan,
                    have,
                    &mut ours,
                    &mut seen,
                    &stats_tx,
                )
                .await;
                let (others, broke) = (seen.others, seen.broke);
                match written {
                    Ok(()) if !broke => {
                        delay = Duration::from_millis(50);
                        stats_tx.send_if_modified(|s| {
                            let changed = s.scope_generation != known_scope;
                            s.scope_generation = known_scope;
                            changed
                        });
                        // Changes of other clients seen while writing: as from the watch.
                        let mut repaired = false;
                        for entry in others {
                            let want = desired.borrow().clone();
                            if let Some(repair) = foreign_change(&store, entry, &want, have, &mut ours, &owns).await {
                                tracing::warn!(bucket, key = %repair.key, change = repair.what, "another client changed a key this writer owns; rewriting it");
                                stats_tx.send_modify(|s| s.repairs += 1);
                                repaired = true;
                            }
                        }
                        if repaired {
                            continue;
                        }
                    }
                    // A failed write, or the watch broke: read everything again.
                    _ => known = None,
                }
            }
            let retry = known.is_none() || changes.is_none();
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = desired.changed() => if changed.is_err() { return },
                _ = epoch.changed() => known = None,
                entry = next_change(&mut changes), if !retry => match (entry, known.as_mut()) {
                    (Some(entry), Some(have)) => {
                        let want = desired.borrow().clone();
                        if let Some(repair) = foreign_change(&store, entry, &want, have, &mut ours, &owns).await {
                            tracing::warn!(bucket, key = %repair.key, change = repair.what, "another client changed a key this writer owns; rewriting it");
                            stats_tx.send_modify(|s| s.repairs += 1);
                        }
                    }
                    // The watch broke: read everything again.
                    _ => known = None,
                },
                _ = tokio::time::sleep(delay), if retry => {
                    delay = (delay * 2).min(Duration::from_secs(2));
                    if changes.is_none() {
                        known = None;
                    }
                }
            }
        }
    });
    stats_rx
}

/// Revision of this writer's last put, per key, until the watch has shown it.
type Revisions = BTreeMap<String, u64>;

/// Whether `entry` is one of this writer's own puts coming back on the watch. The last one
/// of its key is then forgotten when `forget` (nothing later of that key can be ours).
fn own_write(ours: &mut Revisions, entry: &kv::Entry, forget: bool) -> bool {
    let Some(last) = ours.get(&entry.key).copied() else {
        return false;
    };
    if forget && entry.revision == last {
        ours.remove(&entry.key);
    }
    entry.revision <= last
}

async fn next_change(changes: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match changes {
        Some(watch) => watch.next().await.and_then(Result::ok),
        None => None,
    }
}

/// A key of ours that another client changed.
struct Repair {
    key: String,
    what: &'static str,
}

/// Applies a watched change to `have` when it is not our own write and touches a key we
/// own or want; the caller's next reconcile then rewrites the key from `want`.
async fn foreign_change(
    store: &kv::Store,
    entry: kv::Entry,
    want: &KvState,
    have: &mut BTreeMap<String, Bytes>,
    ours: &mut Revisions,
    owns: &Owns,
) -> Option<Repair> {
    if chunk::is_part_key(&entry.key) || own_write(ours, &entry, true) || !want.in_scope(&entry.key) {
        return None;
    }
    let key = entry.key.clone();
    match entry.operation {
        kv::Operation::Put => {
            // A head whose parts do not add up is garbage like any other wrong value.
            let value = resolve(store, &key, entry.value.clone()).await.unwrap_or(entry.value);
            if !want.contains_key(&key) && !owns(&key, &value) {
                return None;
            }
            if have.get(&key) == Some(&value) {
                return None;
            }
            have.insert(key.clone(), value);
            Some(Repair { key, what: "put" })
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            have.remove(&key)?;
            Some(Repair { key, what: "delete" })
        }
    }
}

/// Removes parts `<key>.part.<i>` that no head of ours needs any more (its value shrank or
/// was deleted while a write was under way, or an older version left them).
async fn remove_stale_parts(
    store: &kv::Store,
    bucket: &str,
    want: &KvState,
    have: &BTreeMap<String, Bytes>,
    owns: &Owns,
    stats: &watch::Sender<WriterStats>,
) {
    let Ok(mut keys) = store.keys().await else { return };
    let mut parts = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        if let Some((head, index)) = chunk::parse_part_key(&key) {
            parts.push((key.clone(), head.to_string(), index));
        }
    }
    for (part, head, index) in parts {
        let needed = match have.get(&head) {
            Some(value) => chunk::split(value).is_some_and(|(p, _)| (index as usize) < p.len()),
            // No head at all: an orphan, ours to clear when we would own its head.
            None => want.contains_key(&head) || !want.in_scope(&head) || !owns(&head, b""),
        };
        if needed {
            continue;
        }
        match store.delete(&part).await {
            Ok(()) => {
                tracing::info!(bucket, key = %part, "removed a stale part of a split value");
                stats.send_modify(|s| s.stale_parts_removed += 1);
            }
            Err(error) => tracing::warn!(bucket, key = %part, %error, "cannot remove a stale part"),
        }
    }
}

/// What differs between a desired state and what the bucket holds: the keys to put (with
/// their values) and to delete, in the order to write them, and the trace of the change.
struct Plan {
    puts: Vec<(String, Bytes)>,
    deletes: Vec<String>,
    trace: Option<TraceHeaders>,
}

/// The writes a writer makes to bring a bucket from `have` to `want`, in its order (the
/// puts deepest key first, then the deletes shallowest first), as a reader's watch sees them.
pub fn writes_between(have: &BTreeMap<String, Bytes>, want: &BTreeMap<String, Bytes>) -> Vec<super::KvEvent> {
    let plan = Plan::between(want, have, None);
    plan.puts
        .into_iter()
        .map(|(key, value)| super::KvEvent::Put(key, value, None))
        .chain(plan.deletes.into_iter().map(|key| super::KvEvent::Delete(key, None)))
        .collect()
}

impl Plan {
    fn new(want: &KvState, have: &BTreeMap<String, Bytes>) -> Self {
        Self::between(&want.values, have, want.trace.clone())
    }

    fn between(want: &BTreeMap<String, Bytes>, have: &BTreeMap<String, Bytes>, trace: Option<TraceHeaders>) -> Self {
        // Keys under another key (a Proxy's virtual hosts under its head) are put before it
        // and deleted after it: a reader never sees a head whose parts are not there yet.
        let depth = |key: &str| key.matches('.').count();
        // One walk over both maps in key order (thousands of keys, few changed: no lookups).
        let mut puts: Vec<(String, Bytes)> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        let (mut wants, mut haves) = (want.iter().peekable(), have.iter().peekable());
        loop {
            let order = match (wants.peek(), haves.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((w, _)), Some((h, _))) => w.cmp(h),
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((k, v)) = wants.next() {
                        puts.push((k.clone(), v.clone()));
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some((k, _)) = haves.next() {
                        deletes.push(k.clone());
                    }
                }
                std::cmp::Ordering::Equal => {
                    if let (Some((k, v)), Some((_, h))) = (wants.next(), haves.next()) {
                        // The same bytes (one value shared by owner and writer): not compared.
                        if !same_bytes(h, v) {
                            puts.push((k.clone(), v.clone()));
                        }
                    }
                }
            }
        }
        puts.sort_by_key(|(k, _)| std::cmp::Reverse(depth(k)));
        deletes.sort_by_key(|k| depth(k));
        Self { puts, deletes, trace }
    }
}

/// Equal bytes: the same allocation (one value shared by owner and writer), else compared.
pub fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// The bucket's watch while a reconcile writes: what it delivered meanwhile is taken at
/// once (the echoes of this writer's own writes, dropped; other clients' changes, kept for
/// after), so that thousands of writes do not queue thousands of messages.
struct Seen<'a> {
    changes: &'a mut Option<kv::Watch>,
    /// Changes that are not this writer's own.
    others: Vec<kv::Entry>,
    /// The watch ended or failed.
    broke: bool,
}

impl Seen<'_> {
    fn take_ready(&mut self, ours: &mut Revisions, have: &BTreeMap<String, Bytes>) {
        use futures::FutureExt as _;
        let Some(watch) = self.changes.as_mut() else { return };
        while let Some(next) = watch.next().now_or_never() {
            match next {
                Some(Ok(entry)) => {
                    // What `foreign_change` would ignore: parts, our own puts, deletes of
                    // keys we do not hold (our own deletes among them).
                    // A change of the same key kept for after is checked against our
                    // revision then: it is not forgotten before.
                    let forget = !self.others.iter().any(|other| other.key == entry.key);
                    let ignored = chunk::is_part_key(&entry.key)
                        || own_write(ours, &entry, forget)
                        || (entry.operation != kv::Operation::Put && !have.contains_key(&entry.key));
                    if !ignored {
                        self.others.push(entry);
                    }
                }
                _ => {
                    self.broke = true;
                    *self.changes = None;
                    return;
                }
            }
        }
    }
}

/// Writes `plan`: one `kv.write` span (a child of the change that made it) whose context
/// every put and delete carries.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    store: &kv::Store,
    js: &jetstream::Context,
    bucket: &str,
    plan: Plan,
    have: &mut BTreeMap<String, Bytes>,
    ours: &mut Revisions,
    seen: &mut Seen<'_>,
    stats: &watch::Sender<WriterStats>,
) -> Result<(), ()> {
    let Plan { puts, deletes, trace } = plan;
    if puts.is_empty() && deletes.is_empty() {
        stats.send_modify(|s| s.unchanged += 1);
        return Ok(());
    }
    let span = tracing::info_span!(
        "kv.write",
        bucket,
        puts = puts.len(),
        deletes = deletes.len(),
        keys = %key_list(puts.iter().map(|(k, _)| k).chain(&deletes)),
    );
    if let Some(trace) = &trace {
        trace.adopt(&span);
    }
    let trace = TraceHeaders::of(&span);
    let mut done = Done {
        bucket,
        have,
        ours,
        seen,
        stats,
    };
    async {
        // Values that fit one message go out back to back, their acknowledgements awaited
        // after: one connection and one stream keep them in this order for every reader,
        // and a change of a host in pages (its page, index and part) costs one round trip
        // instead of three. A value in parts goes alone, after what was sent before it.
        let mut sent = Vec::new();
        for (key, value) in puts {
            let old_parts = parts_of(done.have.get(&key));
            if old_parts == 0 && chunk::split(&value).is_none() && !store.use_jetstream_prefix {
                match publish(store, js, &key, value.clone(), false, trace.as_ref()).await {
                    Ok(ack) => done.sent(&mut sent, (key, Some(value), ack)).await?,
                    Err(error) => return done.failed(&key, "put", &error),
                }
                continue;
            }
            done.settle(std::mem::take(&mut sent)).await?;
            match put_value(store, js, &key, &value, done.have.get(&key), trace.as_ref()).await {
                Ok(revision) => done.put(key, value, revision),
                Err(error) => return done.failed(&key, "put", &error),
            }
        }
        // Deletes only once every put is acknowledged: a value is never removed while
        // what replaces it may be missing.
        done.settle(std::mem::take(&mut sent)).await?;
        for key in deletes {
            let old_parts = parts_of(done.have.get(&key));
            if old_parts == 0 && !store.use_jetstream_prefix {
                match publish(store, js, &key, Bytes::new(), true, trace.as_ref()).await {
                    Ok(ack) => done.sent(&mut sent, (key, None, ack)).await?,
                    Err(error) => return done.failed(&key, "delete", &error),
                }
                continue;
            }
            done.settle(std::mem::take(&mut sent)).await?;
            match delete_value(store, js, &key, old_parts, trace.as_ref()).await {
                Ok(()) => done.deleted(key),
                Err(error) => return done.failed(&key, "delete", &error),
            }
        }
        done.settle(sent).await
    }
    .instrument(span)
    .await
}

/// Writes sent and not yet acknowledged, at most, per reconcile. A change writes a handful;
/// a bulk write of thousands waits for acknowledgements every this many. The client lets a
/// process (every writer of it together) have 5,000 unacknowledged, and a publish over that
/// waits for an acknowledgement to be read: one writer holding them all would wait forever.
const IN_FLIGHT: usize = 128;

/// A put (with its value) or a delete (`None`) sent, its acknowledgement not yet read.
type Sent = (String, Option<Bytes>, jetstream::context::PublishAckFuture);

/// What a reconcile records of each write acknowledged.
struct Done<'a, 'b> {
    bucket: &'a str,
    have: &'a mut BTreeMap<String, Bytes>,
    ours: &'a mut Revisions,
    seen: &'a mut Seen<'b>,
    stats: &'a watch::Sender<WriterStats>,
}

impl Done<'_, '_> {
    /// Adds a write to those sent; at [`IN_FLIGHT`], reads their acknowledgements.
    async fn sent(&mut self, sent: &mut Vec<Sent>, write: Sent) -> Result<(), ()> {
        sent.push(write);
        if sent.len() < IN_FLIGHT {
            return Ok(());
        }
        self.settle(std::mem::take(sent)).await
    }

    /// Reads the acknowledgements of `sent` in the order sent, recording each write; the
    /// first failure ends the reconcile (it is retried whole, and writing the same value
    /// again is harmless).
    async fn settle(&mut self, sent: Vec<Sent>) -> Result<(), ()> {
        for (key, value, ack) in sent {
            match (ack.await, value) {
                (Ok(ack), Some(value)) => self.put(key, value, ack.sequence),
                (Ok(_), None) => self.deleted(key),
                (Err(error), value) => {
                    let what = if value.is_some() { "put" } else { "delete" };
                    return self.failed(&key, what, &error.to_string());
                }
            }
        }
        Ok(())
    }

    fn put(&mut self, key: String, value: Bytes, revision: u64) {
        tracing::debug!(bucket = self.bucket, key, revision, bytes = value.len(), "kv put");
        self.ours.insert(key.clone(), revision);
        self.have.insert(key, value);
        self.stats.send_modify(|s| s.puts += 1);
        self.seen.take_ready(self.ours, self.have);
    }

    fn deleted(&mut self, key: String) {
        tracing::debug!(bucket = self.bucket, key, "kv delete");
        self.have.remove(&key);
        self.stats.send_modify(|s| s.deletes += 1);
        self.seen.take_ready(self.ours, self.have);
    }

    fn failed(&mut self, key: &str, what: &str, error: &str) -> Result<(), ()> {
        tracing::warn!(bucket = self.bucket, key, %error, "kv {what} failed; will retry");
        self.stats.send_modify(|s| s.errors += 1);
        Err(())
    }
}

/// How many parts a value written in parts has (0: it fits one message, or there is none).
fn parts_of(value: Option<&Bytes>) -> usize {
    value.and_then(chunk::split).map_or(0, |(parts, _)| parts.len())
}

/// Sends a put of `value` under `key` (or a delete marker, `delete`) as `kv::Store` would,
/// with the trace context in its headers; its acknowledgement is read later.
async fn publish(
    store: &kv::Store,
    js: &jetstream::Context,
    key: &str,
    value: Bytes,
    delete: bool,
    trace: Option<&TraceHeaders>,
) -> Result<jetstream::context::PublishAckFuture, String> {
    let subject = format!("{}{key}", store.put_prefix.as_ref().unwrap_or(&store.prefix));
    let mut headers = async_nats::HeaderMap::new();
    if delete {
        headers.insert(KV_OPERATION, "DEL");
    }
    if let Some(trace) = trace {
        trace.write_nats(&mut headers);
    }
    let sent = if headers.is_empty() {
        js.publish(subject, value).await
    } else {
        js.publish_with_headers(subject, headers, value).await
    };
    sent.map_err(|e| e.to_string())
}

/// At most ten key names, for a span field (a full resync may touch thousands).
fn key_list<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let keys: Vec<&String> = keys.collect();
    let mut list = keys.iter().take(10).map(|k| k.as_str()).collect::<Vec<_>>().join(",");
    if keys.len() > 10 {
        list.push_str(&format!(",... ({} in all)", keys.len()));
    }
    list
}

/// Writes `value` under `key`, split into parts when it is too large for one message
/// (parts first, head last; parts the previous value had beyond the new count are removed).
/// The head carries `trace`: it is what readers see change.
async fn put_value(
    store: &kv::Store,
    js: &jetstream::Context,
    key: &str,
    value: &Bytes,
    previous: Option<&Bytes>,
    trace: Option<&TraceHeaders>,
) -> Result<u64, String> {
    let old_parts = parts_of(previous);
    let (revision, new_parts) = match chunk::split(value) {
        None => (put_traced(store, js, key, value.clone(), trace).await?, 0),
        Some((parts, head)) => {
            for (i, part) in parts.iter().enumerate() {
                store
                    .put(chunk::part_key(key, i as u32), part.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            (put_traced(store, js, key, head, trace).await?, parts.len())
        }
    };
    for i in new_parts..old_parts {
        store
            .delete(chunk::part_key(key, i as u32))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(revision)
}

/// A key-value put (what `kv::Store::put` publishes) with the trace context in its headers.
async fn put_traced(
    store: &kv::Store,
    js: &jetstream::Context,
    key: &str,
    value: Bytes,
    trace: Option<&TraceHeaders>,
) -> Result<u64, String> {
    if store.use_jetstream_prefix {
        return store.put(key, value).await.map_err(|e| e.to_string());
    }
    let sent = publish(store, js, key, value, false, trace).await?;
    Ok(sent.await.map_err(|e| e.to_string())?.sequence)
}

/// Deletes `key` (a delete marker carrying the trace context) and its parts.
async fn delete_value(
    store: &kv::Store,
    js: &jetstream::Context,
    key: &str,
    parts: usize,
    trace: Option<&TraceHeaders>,
) -> Result<(), String> {
    if store.use_jetstream_prefix {
        store.delete(key).await.map_err(|e| e.to_string())?;
    } else {
        let sent = publish(store, js, key, Bytes::new(), true, trace).await?;
        sent.await.map_err(|e| e.to_string())?;
    }
    for i in 0..parts {
        store
            .delete(chunk::part_key(key, i as u32))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The header a key-value delete marker carries (`DEL`; `PURGE` for a purge).
pub(super) const KV_OPERATION: &str = "KV-Operation";

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, Bytes> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
            .collect()
    }

    #[test]
    fn a_plan_puts_what_differs_deepest_first_and_deletes_shallowest_first() {
        let have = map(&[
            ("d.gw", "head"),
            ("d.gw._vh.a", "a"),
            ("d.gw._vh.b", "b"),
            ("d.gw._vh.b._p.1", "p1"),
            ("d.old", "gone"),
            ("d.old._vh.x", "gone too"),
        ]);
        let mut want = map(&[
            ("d.gw", "head2"),
            ("d.gw._vh.a", "a"),
            ("d.gw._vh.b", "b2"),
            ("d.new", "n"),
        ]);
        want.insert("d.gw._vh.b._p.2".into(), Bytes::from_static(b"p2"));
        let plan = Plan::new(&KvState::traced(want), &have);
        let puts: Vec<&str> = plan.puts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(puts, ["d.gw._vh.b._p.2", "d.gw._vh.b", "d.gw", "d.new"]);
        assert_eq!(plan.deletes, ["d.old", "d.old._vh.x", "d.gw._vh.b._p.1"]);
        // The same bytes shared: nothing to do.
        let shared = KvState::traced(have.clone());
        let plan = Plan::new(&shared, &have);
        assert!(plan.puts.is_empty() && plan.deletes.is_empty());
    }
}

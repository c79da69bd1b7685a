//! NATS: connecting with retries, opening key-value buckets, and the two ways processes use
//! them: [`spawn_kv_writer`] (write only what changed, reconcile after every reconnect) and
//! [`spawn_kv_mirror`] (a full read on start and on every reconnect, then a watch).
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::{chunk, shutdown::Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid NATS URL {url:?}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot open key-value bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("shutting down")]
    Shutdown,
    #[error("cannot read the NATS password file {path}")]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who a process is to the broker: a user and its password (from a file, as a mounted
/// Secret gives it), or nobody (a broker without authorization); and, with mTLS, TLS with
/// this process's certificate.
#[derive(Clone, Debug, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    pub tls: Option<crate::tls::Mtls>,
}

/// A NATS connection plus its JetStream context. `epoch` counts connections: it changes
/// every time the client (re)connects, so state owners know to resynchronise.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    epoch: watch::Receiver<u64>,
}

/// Connects in the background: returns at once, and the client keeps retrying (with
/// backoff) until nats-server answers, forever.
pub async fn connect(url: &str, name: &str, auth: &NatsAuth) -> Result<Bus, BusError> {
    let (epoch_tx, epoch) = watch::channel(0u64);
    let epoch_tx = Arc::new(epoch_tx);
    let process = name.to_string();
    let mut options = async_nats::ConnectOptions::new();
    let (url, from_url) = split_credentials(url);
    if auth.user.is_none()
        && let Some((user, password)) = from_url
    {
        options = options.user_and_password(user, password);
    }
    if let Some(user) = &auth.user {
        let password = match &auth.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| BusError::PasswordFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
            None => String::new(),
        };
        options = options
            .user_and_password(user.clone(), password)
            .custom_inbox_prefix(kgw_proto::nats::users::inbox_prefix(user));
    }
    if let Some(mtls) = &auth.tls {
        options = options
            .require_tls(true)
            .tls_client_config(rustls::ClientConfig::clone(&mtls.client_config()));
    }
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            // 50 ms, 100 ms, ... capped at 2 s: fast return after a broker restart.
            Duration::from_millis((50u64 << attempts.min(6)).min(2000))
        })
        .event_callback(move |event| {
            let epoch_tx = epoch_tx.clone();
            let process = process.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(process, "connected to NATS");
                        epoch_tx.send_modify(|e| *e += 1);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(process, "disconnected from NATS; retrying")
                    }
                    other => tracing::debug!(process, event = %other, "NATS event"),
                }
            }
        })
        .connect(url.as_str())
        .await
        .map_err(|source| BusError::Connect {
            url: url.clone(),
            source,
        })?;
    let jetstream = jetstream::new(client.clone());
    Ok(Bus {
        client,
        jetstream,
        epoch,
    })
}

/// `nats://user:password@host:port` → (`nats://host:port`, the credentials): the client
/// does not take them from the URL itself.
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (
        format!("{scheme}://{host}"),
        Some((user.to_string(), password.to_string())),
    )
}

impl Bus {
    /// A receiver whose value changes on every (re)connection.
    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until connected (or shutdown).
    pub async fn wait_connected(&self, shutdown: &Shutdown) -> Result<(), BusError> {
        let mut epoch = self.epoch.clone();
        loop {
            if self.is_connected() {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.wait() => return Err(BusError::Shutdown),
                _ = epoch.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Opens the bucket, creating it (history 1, file storage) when missing. Retries with
    /// backoff until it works or shutdown.
    pub async fn kv(&self, bucket: &str, shutdown: &Shutdown) -> Result<kv::Store, BusError> {
        let mut delay = Duration::from_millis(50);
        loop {
            self.wait_connected(shutdown).await?;
            match self.try_kv(bucket).await {
                Ok(store) => return Ok(store),
                Err(error) => {
                    tracing::warn!(bucket, %error, "cannot open bucket yet; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return Err(BusError::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn try_kv(&self, bucket: &str) -> Result<kv::Store, BusError> {
        if let Ok(store) = self.jetstream.get_key_value(bucket).await {
            return Ok(store);
        }
        let created = self
            .jetstream
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await;
        match created {
            Ok(store) => Ok(store),
            // Another process may have created it meanwhile.
            Err(create) => self
                .jetstream
                .get_key_value(bucket)
                .await
                .map_err(|_| BusError::Bucket {
                    bucket: bucket.to_string(),
                    message: create.to_string(),
                }),
        }
    }
}

/// The desired content of the keys one writer owns.
pub type KvState = Arc<BTreeMap<String, Bytes>>;

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
                        let have: BTreeMap<_, _> = all.into_iter().filter(|(k, v)| owns(k, v)).collect();
                        let want = desired.borrow().clone();
                        remove_stale_parts(&store, bucket, &want, &have, &owns, &stats_tx).await;
                        known = Some(have);
                    }
                    Err(error) => tracing::warn!(bucket, %error, "cannot read bucket; retrying"),
                }
            }
            if let Some(have) = known.as_mut() {
                let want = desired.borrow_and_update().clone();
                match reconcile(&store, bucket, &want, have, &mut ours, &stats_tx).await {
                    Ok(()) => delay = Duration::from_millis(50),
                    Err(()) => known = None,
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
                        if let Some(repair) = foreign_change(&store, entry, &want, have, &ours, &owns).await {
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

/// Revision of this writer's last put, per key.
type Revisions = BTreeMap<String, u64>;

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
    want: &BTreeMap<String, Bytes>,
    have: &mut BTreeMap<String, Bytes>,
    ours: &Revisions,
    owns: &Owns,
) -> Option<Repair> {
    if chunk::is_part_key(&entry.key) || ours.get(&entry.key).is_some_and(|r| entry.revision <= *r) {
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
    want: &BTreeMap<String, Bytes>,
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
            None => want.contains_key(&head) || !owns(&head, b""),
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

async fn reconcile(
    store: &kv::Store,
    bucket: &str,
    want: &BTreeMap<String, Bytes>,
    have: &mut BTreeMap<String, Bytes>,
    ours: &mut Revisions,
    stats: &watch::Sender<WriterStats>,
) -> Result<(), ()> {
    let mut wrote = false;
    for (key, value) in want {
        if have.get(key) == Some(value) {
            continue;
        }
        match put_value(store, key, value, have.get(key)).await {
            Ok(revision) => {
                tracing::debug!(bucket, key, revision, bytes = value.len(), "kv put");
                have.insert(key.clone(), value.clone());
                ours.insert(key.clone(), revision);
                stats.send_modify(|s| s.puts += 1);
                wrote = true;
            }
            Err(error) => {
                tracing::warn!(bucket, key, %error, "kv put failed; will retry");
                stats.send_modify(|s| s.errors += 1);
                return Err(());
            }
        }
    }
    let stale: Vec<String> = have.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    for key in stale {
        let old_parts = have
            .get(&key)
            .and_then(chunk::split)
            .map_or(0, |(parts, _)| parts.len());
        match delete_value(store, &key, old_parts).await {
            Ok(()) => {
                tracing::debug!(bucket, key, "kv delete");
                have.remove(&key);
                stats.send_modify(|s| s.deletes += 1);
                wrote = true;
            }
            Err(error) => {
                tracing::warn!(bucket, key, %error, "kv delete failed; will retry");
                stats.send_modify(|s| s.errors += 1);
                return Err(());
            }
        }
    }
    if !wrote {
        stats.send_modify(|s| s.unchanged += 1);
    }
    Ok(())
}

/// Writes `value` under `key`, split into parts when it is too large for one message
/// (parts first, head last; parts the previous value had beyond the new count are removed).
async fn put_value(store: &kv::Store, key: &str, value: &Bytes, previous: Option<&Bytes>) -> Result<u64, String> {
    let old_parts = previous.and_then(chunk::split).map_or(0, |(parts, _)| parts.len());
    let (revision, new_parts) = match chunk::split(value) {
        None => (store.put(key, value.clone()).await.map_err(|e| e.to_string())?, 0),
        Some((parts, head)) => {
            for (i, part) in parts.iter().enumerate() {
                store
                    .put(chunk::part_key(key, i as u32), part.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            (store.put(key, head).await.map_err(|e| e.to_string())?, parts.len())
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

async fn delete_value(store: &kv::Store, key: &str, parts: usize) -> Result<(), String> {
    store.delete(key).await.map_err(|e| e.to_string())?;
    for i in 0..parts {
        store
            .delete(chunk::part_key(key, i as u32))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The value of a head key: itself, or its parts reassembled and checked.
async fn resolve(store: &kv::Store, key: &str, value: Bytes) -> Result<Bytes, String> {
    chunk::resolve(key, value, |part_key| async move {
        store.get(&part_key).await.map_err(|e| e.to_string())
    })
    .await
}

/// Every live key and value of the bucket (split values reassembled).
pub async fn read_all(store: &kv::Store) -> Result<BTreeMap<String, Bytes>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        names.push(key.map_err(|e| e.to_string())?);
    }
    let mut all = BTreeMap::new();
    for key in names {
        if chunk::is_part_key(&key) {
            continue;
        }
        if let Some(value) = store.get(&key).await.map_err(|e| e.to_string())? {
            let value = resolve(store, &key, value).await?;
            all.insert(key, value);
        }
    }
    Ok(all)
}

/// What a mirror reports.
#[derive(Clone, Debug, PartialEq)]
pub enum KvEvent {
    /// The whole bucket, replacing anything known before (start and every reconnect).
    Full(BTreeMap<String, Bytes>),
    Put(String, Bytes),
    Delete(String),
}

/// A batch of events in arrival order, merged: a `Full` absorbs what follows it, and only
/// the last `Put`/`Delete` of each key is kept. Order of keys is not kept (it does not
/// matter: each key is independent state).
pub fn coalesce(events: impl IntoIterator<Item = KvEvent>) -> Vec<KvEvent> {
    let mut full: Option<BTreeMap<String, Bytes>> = None;
    let mut keyed: BTreeMap<String, KvEvent> = BTreeMap::new();
    for event in events {
        match event {
            KvEvent::Full(all) => {
                full = Some(all);
                keyed.clear();
            }
            KvEvent::Put(key, value) => match full.as_mut() {
                Some(all) => {
                    all.insert(key, value);
                }
                None => {
                    keyed.insert(key.clone(), KvEvent::Put(key, value));
                }
            },
            KvEvent::Delete(key) => match full.as_mut() {
                Some(all) => {
                    all.remove(&key);
                }
                None => {
                    keyed.insert(key.clone(), KvEvent::Delete(key));
                }
            },
        }
    }
    full.map(KvEvent::Full).into_iter().chain(keyed.into_values()).collect()
}

/// Follows a bucket: sends `Full` first, then `Put`/`Delete` as they happen; after a
/// reconnect (or a broken watch) sends a fresh `Full`. Ends when `events` is dropped.
pub fn spawn_kv_mirror(bus: Bus, bucket: &'static str, events: mpsc::Sender<KvEvent>, shutdown: Shutdown) {
    tokio::spawn(async move {
        let Ok(store) = bus.kv(bucket, &shutdown).await else {
            return;
        };
        let mut epoch = bus.epoch();
        let mut delay = Duration::from_millis(50);
        loop {
            epoch.borrow_and_update();
            match mirror_once(&store, bucket, &events, &mut epoch, &shutdown).await {
                MirrorEnd::Stop => return,
                MirrorEnd::Resync => delay = Duration::from_millis(50),
                MirrorEnd::Failed => {
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    });
}

enum MirrorEnd {
    Stop,
    Resync,
    Failed,
}

async fn mirror_once(
    store: &kv::Store,
    bucket: &str,
    events: &mpsc::Sender<KvEvent>,
    epoch: &mut watch::Receiver<u64>,
    shutdown: &Shutdown,
) -> MirrorEnd {
    // Watch first, then read: an update between the two shows in both, never in neither.
    let mut watch = match store.watch_all().await {
        Ok(watch) => watch,
        Err(error) => {
            tracing::warn!(bucket, %error, "cannot watch bucket; retrying");
            return MirrorEnd::Failed;
        }
    };
    let full = match read_all(store).await {
        Ok(full) => full,
        Err(error) => {
            tracing::warn!(bucket, %error, "cannot read bucket; retrying");
            return MirrorEnd::Failed;
        }
    };
    tracing::info!(bucket, keys = full.len(), "read bucket");
    if events.send(KvEvent::Full(full)).await.is_err() {
        return MirrorEnd::Stop;
    }
    loop {
        tokio::select! {
            _ = shutdown.wait() => return MirrorEnd::Stop,
            _ = epoch.changed() => return MirrorEnd::Resync,
            entry = watch.next() => {
                let event = match entry {
                    Some(Ok(entry)) if chunk::is_part_key(&entry.key) => continue,
                    Some(Ok(entry)) => match entry.operation {
                        kv::Operation::Put => match resolve(store, &entry.key, entry.value).await {
                            Ok(value) => KvEvent::Put(entry.key, value),
                            Err(error) => {
                                tracing::warn!(bucket, %error, "cannot reassemble a split value; resyncing");
                                return MirrorEnd::Failed;
                            }
                        },
                        kv::Operation::Delete | kv::Operation::Purge => KvEvent::Delete(entry.key),
                    },
                    Some(Err(error)) => {
                        tracing::warn!(bucket, %error, "watch failed; resyncing");
                        return MirrorEnd::Failed;
                    }
                    None => return MirrorEnd::Failed,
                };
                if events.send(event).await.is_err() {
                    return MirrorEnd::Stop;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://admin:s3cret@127.0.0.1:4222"),
            (
                "nats://127.0.0.1:4222".to_string(),
                Some(("admin".to_string(), "s3cret".to_string()))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_string(), None)
        );
    }

    fn put(key: &str, value: &'static str) -> KvEvent {
        KvEvent::Put(key.into(), Bytes::from_static(value.as_bytes()))
    }

    #[test]
    fn coalesce_keeps_the_last_event_per_key_and_folds_into_a_full_read() {
        let merged = coalesce([
            put("a", "1"),
            put("a", "2"),
            put("b", "1"),
            KvEvent::Delete("b".into()),
            put("a", "3"),
        ]);
        assert_eq!(merged, vec![put("a", "3"), KvEvent::Delete("b".into())]);

        let full = KvEvent::Full(BTreeMap::from([("x".to_string(), Bytes::from_static(b"0"))]));
        let merged = coalesce([put("z", "1"), full, put("y", "1"), KvEvent::Delete("x".into())]);
        assert_eq!(
            merged,
            vec![KvEvent::Full(BTreeMap::from([(
                "y".to_string(),
                Bytes::from_static(b"1")
            )]))]
        );
    }
}

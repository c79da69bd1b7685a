//! [`spawn_kv_mirror`]: a full read of a bucket on start and on every reconnect, then its
//! changes as they happen, each with the trace context its writer sent.
use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::{self, consumer::push::OrderedConfig, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{Bus, read_all, resolve};
use crate::{chunk, shutdown::Shutdown, trace::TraceHeaders};

/// What a mirror reports.
#[derive(Clone, Debug, PartialEq)]
pub enum KvEvent {
    /// The whole bucket, replacing anything known before (start and every reconnect).
    Full(BTreeMap<String, Bytes>),
    /// A key's new value, and the trace of the change that wrote it.
    Put(String, Bytes, Option<TraceHeaders>),
    /// A key deleted, and the trace of the change that deleted it.
    Delete(String, Option<TraceHeaders>),
}

impl KvEvent {
    /// The trace of the change this event carries (none for a full read).
    pub fn trace(&self) -> Option<&TraceHeaders> {
        match self {
            Self::Full(_) => None,
            Self::Put(_, _, trace) | Self::Delete(_, trace) => trace.as_ref(),
        }
    }
}

/// A batch of events in arrival order, merged: a `Full` absorbs what follows it, and only
/// the last `Put`/`Delete` of each key is kept, at its place in arrival order. That order is
/// the writer's (a watch delivers in write order), which readers of keys that name one
/// another rely on: a writer puts the keys a value names before it (a host's pages before
/// its part) and deletes them after it.
pub fn coalesce(events: impl IntoIterator<Item = KvEvent>) -> Vec<KvEvent> {
    let mut full: Option<BTreeMap<String, Bytes>> = None;
    // Key → when its last event arrived, and that event.
    let mut keyed: BTreeMap<String, (usize, KvEvent)> = BTreeMap::new();
    for (at, event) in events.into_iter().enumerate() {
        match event {
            KvEvent::Full(all) => {
                full = Some(all);
                keyed.clear();
            }
            KvEvent::Put(key, value, trace) => match full.as_mut() {
                Some(all) => {
                    all.insert(key, value);
                }
                None => {
                    keyed.insert(key.clone(), (at, KvEvent::Put(key, value, trace)));
                }
            },
            KvEvent::Delete(key, trace) => match full.as_mut() {
                Some(all) => {
                    all.remove(&key);
                }
                None => {
                    keyed.insert(key.clone(), (at, KvEvent::Delete(key, trace)));
                }
            },
        }
    }
    let mut last: Vec<(usize, KvEvent)> = keyed.into_values().collect();
    last.sort_unstable_by_key(|(at, _)| *at);
    full.map(KvEvent::Full)
        .into_iter()
        .chain(last.into_iter().map(|(_, event)| event))
        .collect()
}

/// Follows a bucket: sends `Full` first, then `Put`/`Delete` as they happen; after a
/// reconnect (or a broken watch) sends a fresh `Full`. Ends when `events` is dropped.
pub fn spawn_kv_mirror(bus: Bus, bucket: &'static str, events: mpsc::Sender<KvEvent>, shutdown: Shutdown) {
    tokio::spawn(async move {
        let Ok(store) = bus.existing_kv(bucket, &shutdown).await else {
            return;
        };
        let mut epoch = bus.epoch();
        let mut delay = Duration::from_millis(50);
        loop {
            epoch.borrow_and_update();
            match mirror_once(&bus.client, &store, bucket, &events, &mut epoch, &shutdown).await {
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
    client: &async_nats::Client,
    store: &kv::Store,
    bucket: &str,
    events: &mpsc::Sender<KvEvent>,
    epoch: &mut watch::Receiver<u64>,
    shutdown: &Shutdown,
) -> MirrorEnd {
    // Watch first, then read: an update between the two shows in both, never in neither.
    let mut watch = match watch_traced(client, store).await {
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
            message = watch.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::warn!(bucket, %error, "watch failed; resyncing");
                        return MirrorEnd::Failed;
                    }
                    None => return MirrorEnd::Failed,
                };
                let Some(key) = message.subject.strip_prefix(store.prefix.as_str()).map(str::to_string) else {
                    continue;
                };
                if chunk::is_part_key(&key) {
                    continue;
                }
                let trace = TraceHeaders::from_nats(message.headers.as_ref());
                let event = if is_delete(message.headers.as_ref()) {
                    KvEvent::Delete(key, trace)
                } else {
                    match resolve(store, &key, message.payload.clone()).await {
                        Ok(value) => KvEvent::Put(key, value, trace),
                        Err(error) => {
                            tracing::warn!(bucket, %error, "cannot reassemble a split value; resyncing");
                            return MirrorEnd::Failed;
                        }
                    }
                };
                if events.send(event).await.is_err() {
                    return MirrorEnd::Stop;
                }
            }
        }
    }
}

/// New changes to every key of the bucket, as messages (a key-value watch's `Entry` drops
/// the headers, which carry the trace).
async fn watch_traced(
    client: &async_nats::Client,
    store: &kv::Store,
) -> Result<jetstream::consumer::push::Ordered, String> {
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("kgw kv mirror".to_string()),
            filter_subject: format!("{}>", store.prefix),
            replay_policy: jetstream::consumer::ReplayPolicy::Instant,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// A delete or purge marker (`KV-Operation: DEL|PURGE`).
fn is_delete(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get(super::writer::KV_OPERATION))
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &'static str) -> KvEvent {
        KvEvent::Put(key.into(), Bytes::from_static(value.as_bytes()), None)
    }

    #[test]
    fn coalesce_keeps_the_last_event_per_key_and_folds_into_a_full_read() {
        let merged = coalesce([
            put("a", "1"),
            put("a", "2"),
            put("b", "1"),
            KvEvent::Delete("b".into(), None),
            put("a", "3"),
        ]);
        assert_eq!(merged, vec![KvEvent::Delete("b".into(), None), put("a", "3")]);

        // The writer's order, not the keys': a host's page before the part naming it (whose
        // key comes first), the old page deleted after.
        let merged = coalesce([
            put("h._p.2", "page"),
            put("h", "part"),
            KvEvent::Delete("h._p.1".into(), None),
        ]);
        assert_eq!(
            merged,
            vec![
                put("h._p.2", "page"),
                put("h", "part"),
                KvEvent::Delete("h._p.1".into(), None)
            ]
        );

        let full = KvEvent::Full(BTreeMap::from([("x".to_string(), Bytes::from_static(b"0"))]));
        let merged = coalesce([put("z", "1"), full, put("y", "1"), KvEvent::Delete("x".into(), None)]);
        assert_eq!(
            merged,
            vec![KvEvent::Full(BTreeMap::from([(
                "y".to_string(),
                Bytes::from_static(b"1")
            )]))]
        );
    }
}

//! Values larger than one NATS message travel split across keys: the writer writes parts
//! then the head, the mirror reassembles them, and shrinking or deleting leaves no parts.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use kgw_common::bus::{self, KvEvent, KvState};
use tokio::sync::{mpsc, watch};

/// Waits until the mirror reports `want` under `key`, and returns what it reported. Values
/// before it are passed over: a write that lands while the mirror starts shows both in its
/// first full read and on its watch.
async fn wait_value(events: &mut mpsc::Receiver<KvEvent>, key: &str, want: &Bytes) -> Bytes {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no value {} bytes long under {key} in 10 s", want.len()))
            .expect("open");
        let value = match event {
            KvEvent::Put(k, value, _) if k == key => value,
            KvEvent::Full(all) if all.contains_key(key) => all[key].clone(),
            _ => continue,
        };
        if value == *want {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_values_are_split_and_reassembled() -> anyhow::Result<()> {
    let (_system, bus, shutdown) = super::support::nats_alone().await?;
    let big = Bytes::from((0..2_500_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>());
    let (desired_tx, desired) = watch::channel(KvState::default());
    desired_tx.send_replace(KvState::traced(BTreeMap::from([("ns.big".to_string(), big.clone())])));
    let owns: bus::Owns = Arc::new(|_, _| true);
    let _stats = bus::spawn_kv_writer(bus.clone(), "test_chunks", desired, owns, shutdown.clone());

    let (events_tx, mut events) = mpsc::channel(16);
    bus::spawn_kv_mirror(bus.clone(), "test_chunks", events_tx, shutdown.clone());
    assert_eq!(wait_value(&mut events, "ns.big", &big).await, big, "reassembled intact");

    let store = bus.kv("test_chunks", &shutdown).await?;
    let keys = || async {
        let all = store.keys().await.expect("keys");
        let mut keys: Vec<String> = futures::StreamExt::collect::<Vec<_>>(all)
            .await
            .into_iter()
            .flatten()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys().await,
        ["ns.big", "ns.big.part.0", "ns.big.part.1", "ns.big.part.2"]
    );

    // Shrinks to one message: the parts go away.
    let small = Bytes::from_static(b"small now");
    desired_tx.send_replace(KvState::traced(BTreeMap::from([("ns.big".to_string(), small.clone())])));
    assert_eq!(wait_value(&mut events, "ns.big", &small).await, small);
    kgw_harness::wait_for(Duration::from_secs(10), || async {
        let now = keys().await;
        anyhow::ensure!(now == ["ns.big"], "keys: {now:?}");
        Ok(())
    })
    .await?;
    shutdown.trigger();
    Ok(())
}

/// A writer heals its keys: another client's delete, overwrite or garbage is rewritten from
/// the writer's state within a second (counted as repairs), and parts of split values that
/// no head needs are removed when the writer reads the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn writers_heal_deleted_and_overwritten_keys_and_remove_stale_parts() -> anyhow::Result<()> {
    let (_system, bus, shutdown) = super::support::nats_alone().await?;
    let store = bus.kv("test_heal", &shutdown).await?;
    // Left behind by an earlier writer: an orphan part and one beyond a head's count.
    store.put("ns.gone.part.0", Bytes::from_static(b"orphan")).await?;
    store.put("ns.a.part.3", Bytes::from_static(b"stale")).await?;

    let value = Bytes::from_static(b"the writer's value");
    let (_desired_tx, desired) = watch::channel(KvState::traced(BTreeMap::from([("ns.a".to_string(), value.clone())])));
    let owns: bus::Owns = Arc::new(|_, _| true);
    let mut stats = bus::spawn_kv_writer(bus.clone(), "test_heal", desired, owns, shutdown.clone());
    let within = Duration::from_secs(1);
    let holds = |expected: Bytes| {
        let store = store.clone();
        async move {
            kgw_harness::wait_for(within, || async {
                let now = store.get("ns.a").await?;
                anyhow::ensure!(now.as_ref() == Some(&expected), "ns.a holds {now:?}");
                Ok(())
            })
            .await
        }
    };
    holds(value.clone()).await?;
    tokio::time::timeout(Duration::from_secs(10), stats.wait_for(|s| s.stale_parts_removed == 2)).await??;

    store.delete("ns.a").await?;
    holds(value.clone()).await?;
    store.put("ns.a", Bytes::from_static(b"\xff garbage")).await?;
    holds(value.clone()).await?;
    let repaired = tokio::time::timeout(Duration::from_secs(10), stats.wait_for(|s| s.repairs >= 2)).await??;
    assert_eq!(repaired.repairs, 2, "one repair per foreign change");
    assert_eq!(repaired.errors, 0);
    shutdown.trigger();
    Ok(())
}

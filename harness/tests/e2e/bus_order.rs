//! A writer's writes reach readers in the order of its plan: values under a key before the
//! key (a host's pages before the part naming them), and deletes only after every put, even
//! though values that fit one message are sent without waiting for each acknowledgement.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use futures::StreamExt as _;
use kgw_common::bus::{self, KvState};
use tokio::sync::watch;

fn state(values: &[(&str, Bytes)]) -> KvState {
    KvState::traced(
        values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_sees_the_writes_in_the_order_planned() -> anyhow::Result<()> {
    let (_system, bus, shutdown) = super::support::nats_alone().await?;
    let bucket = "test_order";
    let small = |s: &'static str| Bytes::from_static(s.as_bytes());
    let before = state(&[
        ("h", small("head 1")),
        ("h.v", small("part 1")),
        ("h.v.p.1", small("page 1")),
        ("h.w.p.1", small("page w")),
    ]);
    let (desired_tx, desired) = watch::channel(before);
    let owns: bus::Owns = Arc::new(|_, _| true);
    let mut stats = bus::spawn_kv_writer(bus.clone(), bucket, desired, owns, shutdown.clone());
    tokio::time::timeout(Duration::from_secs(10), stats.wait_for(|s| s.puts == 4)).await??;

    let store = bus.kv(bucket, &shutdown).await?;
    let mut changes = store.watch_all().await?;
    // A value too large for one message (written in parts, alone) among small ones.
    let big = Bytes::from((0..2_500_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    desired_tx.send_replace(state(&[
        ("h", small("head 2")),
        ("h.v", small("part 2")),
        ("h.v.p.2", small("page 2")),
        ("h.v.p.3", big),
        ("h.v.p.4", small("page 4")),
    ]));
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let entry = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {seen:?} in 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("the watch ended after {seen:?}"))??;
        let op = if entry.operation == Operation::Put {
            "put"
        } else {
            "delete"
        };
        seen.push(format!("{op} {}", entry.key));
    }
    assert_eq!(
        seen,
        [
            "put h.v.p.2",
            "put h.v.p.3.part.0",
            "put h.v.p.3.part.1",
            "put h.v.p.3.part.2",
            "put h.v.p.3",
            "put h.v.p.4",
            "put h.v",
            "put h",
            "delete h.v.p.1",
            "delete h.w.p.1",
        ]
    );
    tokio::time::timeout(Duration::from_secs(10), stats.wait_for(|s| s.deletes == 2)).await??;
    // What the writer does with the changes its watch showed meanwhile comes right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = stats.borrow().clone();
    // Its own writes seen on its watch before their acknowledgements are not taken for
    // another client's: nothing is repaired.
    assert_eq!((done.puts, done.errors, done.repairs), (4 + 5, 0, 0), "{done:?}");
    shutdown.trigger();
    Ok(())
}

/// A bulk write of more values than the NATS client lets one process leave unacknowledged
/// (5,000) completes: the writer reads acknowledgements as it goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_write_beyond_the_clients_unacknowledged_limit_completes() -> anyhow::Result<()> {
    let (_system, bus, shutdown) = super::support::nats_alone().await?;
    let values: BTreeMap<String, Bytes> = (0..6_000)
        .map(|i| (format!("bulk.k{i:05}"), Bytes::from(format!("value {i}"))))
        .collect();
    let (desired_tx, desired) = watch::channel(KvState::traced(values));
    let owns: bus::Owns = Arc::new(|_, _| true);
    let mut stats = bus::spawn_kv_writer(bus.clone(), "test_bulk", desired, owns, shutdown.clone());
    let seen = stats.clone();
    let written = tokio::time::timeout(Duration::from_secs(60), stats.wait_for(|s| s.puts == 6_000))
        .await
        .map_err(|_| anyhow::anyhow!("not written in 60 s: {:?}", *seen.borrow()))??
        .clone();
    assert_eq!(written.errors, 0, "{written:?}");
    // And all deleted again, the same way.
    desired_tx.send_replace(KvState::traced(BTreeMap::new()));
    tokio::time::timeout(Duration::from_secs(60), stats.wait_for(|s| s.deletes == 6_000))
        .await
        .map_err(|_| anyhow::anyhow!("not deleted in 60 s: {:?}", *seen.borrow()))??;
    shutdown.trigger();
    Ok(())
}

//! Discovery replicas share the work by shards of the Upstream keys, each shard leased to
//! one replica at a time in the KV bucket `kgw_discovery_shards` (the contract, its keys and
//! why no key ever has two writers are in `kgw_proto::nats::DISCOVERY_SHARDS_BUCKET`).
//!
//! Every tick (a third of the lease TTL) a replica: puts its `member.<replica>` entry;
//! renews its shard leases; reads who is alive and who owns what; then, by [`plan`], takes
//! free shards up to its share (`shards / replicas`, one more for the first few by name)
//! or gives back what it holds
//! beyond it, so that a replica that joins gets work without a restart of the others, and
//! the shards of one that dies (its entries expire) are taken within a TTL and a tick.
//!
//! What it owns is published as an [`Ownership`]; the KV writer then writes only keys of
//! those shards. A shard is given back only once the writer has written under an ownership
//! without it (its `scope_generation`), and is dropped from the ownership before its lease
//! could expire unrenewed.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt as _;
use kgw_common::{
    bus::{Bus, KvState, Scope, WriterStats},
    shutdown::Shutdown,
};
use kgw_proto::nats::{DISCOVERY_LEASE_TTL_MS, DISCOVERY_SHARDS, DISCOVERY_SHARDS_BUCKET, discovery_shard};
use tokio::sync::watch;

/// The shards a replica owns now. A new set has a new `generation`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub generation: u64,
    pub shards: Arc<BTreeSet<u16>>,
}

impl Ownership {
    /// `state` cut down to the keys of these shards, scoped to them for the KV writer.
    pub fn scope(&self, state: &KvState) -> KvState {
        let shards = Arc::clone(&self.shards);
        // Every shard (one replica): the same map, shared rather than copied.
        let values = match shards.len() == usize::from(DISCOVERY_SHARDS) {
            true => Arc::clone(&state.values),
            false => Arc::new(
                state
                    .values
                    .iter()
                    .filter(|(key, _)| shards.contains(&discovery_shard(key)))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ),
        };
        KvState {
            values,
            trace: state.trace.clone(),
            scope: Some(Arc::new(Scope {
                generation: self.generation,
                includes: Box::new(move |key| shards.contains(&discovery_shard(key))),
            })),
        }
    }
}

/// What to take and what to give back this tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub claim: Vec<u16>,
    pub release: Vec<u16>,
}

/// The share of `me` among `members` (which includes `me`), given who owns each shard:
/// free shards to claim (the ones `me` ranks highest first, so replicas tend to reach for
/// different shards) or owned ones to give back (those it ranks lowest).
pub fn plan(shards: u16, me: &str, members: &BTreeSet<String>, owners: &BTreeMap<u16, String>) -> Plan {
    // Shares as even as can be: the first `shards % replicas` members (by name) take one
    // more. Every replica computes the same shares from the same members.
    let replicas = members.len().max(1);
    let position = members.iter().position(|m| m == me).unwrap_or(replicas - 1);
    let target = usize::from(shards) / replicas + usize::from(position < usize::from(shards) % replicas);
    let mine: Vec<u16> = (0..shards).filter(|s| owners.get(s).is_some_and(|o| o == me)).collect();
    let mut out = Plan::default();
    if mine.len() > target {
        let mut ranked = mine;
        ranked.sort_by_key(|s| (rank(me, *s), *s));
        out.release = ranked[..ranked.len() - target].to_vec();
    } else {
        let mut free: Vec<u16> = (0..shards).filter(|s| !owners.contains_key(s)).collect();
        free.sort_by_key(|s| std::cmp::Reverse((rank(me, *s), *s)));
        free.truncate(target - mine.len());
        out.claim = free;
    }
    out
}

/// Rendezvous rank of shard `shard` for replica `me` (FNV-1a of both).
fn rank(me: &str, shard: u16) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in me.bytes().chain(shard.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn shard_key(shard: u16) -> String {
    format!("shard.{shard}")
}

fn member_key(replica: &str) -> String {
    format!("member.{}", replica.replace(['.', '*', '>', ' '], "_"))
}

/// A lease this replica holds.
struct Lease {
    revision: u64,
    renewed: Instant,
    /// Given back under this ownership generation: deleted once the writer reached it.
    releasing: Option<u64>,
}

/// Runs the leases of `replica` until `shutdown`, publishing what it owns; then stops
/// writing every shard, gives the leases back, and triggers `writer_stop` (the KV writer
/// runs until then, so that it can confirm it stopped writing them). `writer` are the KV
/// writer's counters (for `scope_generation`).
pub fn spawn_leases(
    bus: Bus,
    replica: String,
    writer: watch::Receiver<WriterStats>,
    shutdown: Shutdown,
    writer_stop: Shutdown,
) -> (watch::Receiver<Ownership>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Ownership::default());
    let task = tokio::spawn(async move {
        let _stop_writer = TriggerOnDrop(writer_stop);
        let ttl = Duration::from_millis(DISCOVERY_LEASE_TTL_MS);
        let config = kv::Config {
            bucket: DISCOVERY_SHARDS_BUCKET.into(),
            history: 1,
            max_age: ttl,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        };
        let Ok(store) = bus.kv_with(config, &shutdown).await else {
            return;
        };
        let mut leases = Leases {
            store,
            replica,
            held: BTreeMap::new(),
            tx,
            writer,
            ttl,
        };
        loop {
            leases.tick().await;
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
        }
        leases.give_back_all().await;
    });
    (rx, task)
}

/// Triggers its shutdown when dropped: however the lease task ends, the writer stops too.
struct TriggerOnDrop(Shutdown);

impl Drop for TriggerOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

struct Leases {
    store: kv::Store,
    replica: String,
    held: BTreeMap<u16, Lease>,
    tx: watch::Sender<Ownership>,
    writer: watch::Receiver<WriterStats>,
    ttl: Duration,
}

impl Leases {
    async fn tick(&mut self) {
        let member = member_key(&self.replica);
        if let Err(error) = self.store.put(&member, Bytes::from(self.replica.clone())).await {
            tracing::warn!(%error, "cannot announce this discovery replica");
        }
        self.renew().await;
        let Some((members, owners)) = self.read().await else {
            return;
        };
        let plan = plan(DISCOVERY_SHARDS, &self.replica, &members, &owners);
        for shard in plan.claim {
            match self
                .store
                .create(shard_key(shard), Bytes::from(self.replica.clone()))
                .await
            {
                Ok(revision) => {
                    tracing::info!(shard, replicas = members.len(), "took a shard of the upstreams");
                    self.held.insert(
                        shard,
                        Lease {
                            revision,
                            renewed: Instant::now(),
                            releasing: None,
                        },
                    );
                }
                // Another replica was quicker.
                Err(error) => tracing::debug!(shard, %error, "shard taken meanwhile"),
            }
        }
        if !plan.release.is_empty() {
            let generation = self.tx.borrow().generation + 1;
            for shard in &plan.release {
                if let Some(lease) = self.held.get_mut(shard) {
                    lease.releasing = Some(generation);
                }
            }
            tracing::info!(shards = ?plan.release, replicas = members.len(), "giving shards back to share the work");
        }
        self.publish();
        self.finish_releases().await;
    }

    /// Renews every lease held; drops those that are gone or not renewed for 2/3 of the TTL
    /// (another replica may take them once they expire).
    async fn renew(&mut self) {
        let mut lost = Vec::new();
        for (shard, lease) in &mut self.held {
            match self
                .store
                .update(shard_key(*shard), Bytes::from(self.replica.clone()), lease.revision)
                .await
            {
                Ok(revision) => {
                    lease.revision = revision;
                    lease.renewed = Instant::now();
                }
                Err(error) if lease.renewed.elapsed() > self.ttl * 2 / 3 => {
                    tracing::warn!(shard = *shard, %error, "shard lease not renewed in time; no longer writing it");
                    lost.push(*shard);
                }
                Err(error) => tracing::warn!(shard = *shard, %error, "cannot renew a shard lease; will retry"),
            }
        }
        for shard in lost {
            self.held.remove(&shard);
        }
    }

    /// Live members and the owner of each leased shard; `None` when the bucket cannot be read.
    async fn read(&self) -> Option<(BTreeSet<String>, BTreeMap<u16, String>)> {
        let mut keys = match self.store.keys().await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "cannot list shard leases");
                return None;
            }
        };
        let mut members = BTreeSet::from([self.replica.clone()]);
        let mut owners = BTreeMap::new();
        while let Some(key) = keys.next().await {
            let key = key.ok()?;
            let value = match self.store.get(&key).await {
                Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
                _ => continue,
            };
            if key.starts_with("member.") {
                members.insert(value);
            } else if let Some(shard) = key.strip_prefix("shard.").and_then(|s| s.parse::<u16>().ok()) {
                owners.insert(shard, value);
            }
        }
        // What this replica is giving back is no one's to claim (not even its own) until
        // its lease is deleted.
        for (shard, lease) in &self.held {
            if lease.releasing.is_some() {
                owners.insert(*shard, String::new());
            }
        }
        Some((members, owners))
    }

    /// Publishes the shards held and not being given back (a new generation when it changed).
    fn publish(&self) {
        let shards: BTreeSet<u16> = self
            .held
            .iter()
            .filter(|(_, lease)| lease.releasing.is_none())
            .map(|(shard, _)| *shard)
            .collect();
        self.tx.send_if_modified(|current| {
            if *current.shards == shards {
                return false;
            }
            current.generation += 1;
            current.shards = Arc::new(shards);
            tracing::info!(generation = current.generation, shards = ?current.shards, "upstream shards owned");
            true
        });
    }

    /// Deletes the leases given back whose ownership generation the writer has reached.
    async fn finish_releases(&mut self) {
        let reached = self.writer.borrow().scope_generation;
        let done: Vec<(u16, u64)> = self
            .held
            .iter()
            .filter(|(_, lease)| lease.releasing.is_some_and(|g| g <= reached))
            .map(|(shard, lease)| (*shard, lease.revision))
            .collect();
        for (shard, revision) in done {
            if let Err(error) = self
                .store
                .delete_expect_revision(shard_key(shard), Some(revision))
                .await
            {
                tracing::warn!(shard, %error, "cannot give a shard lease back; it will expire");
            }
            self.held.remove(&shard);
        }
    }

    /// At shutdown: stop writing every shard, then give the leases back so that the other
    /// replicas take them at their next tick rather than after the TTL.
    async fn give_back_all(&mut self) {
        let generation = self.tx.borrow().generation + 1;
        for lease in self.held.values_mut() {
            lease.releasing = Some(generation);
        }
        self.publish();
        let deadline = Instant::now() + self.ttl / 3;
        while self.writer.borrow().scope_generation < generation && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.finish_releases().await;
        let _ = self.store.delete(member_key(&self.replica)).await;
    }
}

/// The writer's desired state: `desired` cut down to the shards owned, kept current as
/// either changes.
pub fn spawn_scoped(
    mut desired: watch::Receiver<KvState>,
    mut ownership: watch::Receiver<Ownership>,
    shutdown: Shutdown,
) -> watch::Receiver<KvState> {
    let first = ownership.borrow_and_update().scope(&desired.borrow_and_update());
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = desired.changed() => if changed.is_err() { return },
                changed = ownership.changed() => if changed.is_err() { return },
            }
            let scoped = ownership.borrow_and_update().scope(&desired.borrow_and_update());
            tx.send_replace(scoped);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Runs plan rounds for `replicas` until nothing changes; returns the owners.
    fn settle(replicas: &[&str], mut owners: BTreeMap<u16, String>) -> BTreeMap<u16, String> {
        let all = members(replicas);
        for _ in 0..20 {
            let before = owners.clone();
            for me in replicas {
                let plan = plan(DISCOVERY_SHARDS, me, &all, &owners);
                for shard in plan.release {
                    owners.remove(&shard);
                }
                for shard in plan.claim {
                    owners.entry(shard).or_insert_with(|| me.to_string());
                }
            }
            if owners == before {
                return owners;
            }
        }
        panic!("no steady state: {owners:?}")
    }

    fn counts(owners: &BTreeMap<u16, String>) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for owner in owners.values() {
            *out.entry(owner.clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn one_replica_takes_every_shard() {
        let owners = settle(&["a"], BTreeMap::new());
        assert_eq!(owners.len(), usize::from(DISCOVERY_SHARDS));
    }

    #[test]
    fn three_replicas_share_evenly_and_all_shards_are_owned() {
        let owners = settle(&["a", "b", "c"], BTreeMap::new());
        assert_eq!(owners.len(), usize::from(DISCOVERY_SHARDS));
        let counts = counts(&owners);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [6, 5, 5], "{counts:?}");
    }

    #[test]
    fn a_joining_replica_gets_work_and_a_leaving_one_is_covered() {
        let owners = settle(&["a", "b"], BTreeMap::new());
        let owners = settle(&["a", "b", "c"], owners);
        assert!(counts(&owners)["c"] >= 4, "{:?}", counts(&owners));
        // b dies: its leases expire.
        let survivors: BTreeMap<u16, String> = owners.into_iter().filter(|(_, o)| o != "b").collect();
        let owners = settle(&["a", "c"], survivors);
        assert_eq!(owners.len(), usize::from(DISCOVERY_SHARDS));
        assert!(counts(&owners).values().all(|c| *c == 8), "{:?}", counts(&owners));
    }

    #[test]
    fn a_replica_never_claims_a_shard_someone_holds() {
        let owners: BTreeMap<u16, String> = (0..DISCOVERY_SHARDS).map(|s| (s, "a".to_string())).collect();
        let plan = plan(DISCOVERY_SHARDS, "b", &members(&["a", "b"]), &owners);
        assert!(plan.claim.is_empty());
        let plan = plan_for_a(&owners);
        assert_eq!(plan.release.len(), 8);
    }

    fn plan_for_a(owners: &BTreeMap<u16, String>) -> Plan {
        plan(DISCOVERY_SHARDS, "a", &members(&["a", "b"]), owners)
    }

    #[test]
    fn scope_keeps_only_the_keys_of_owned_shards() {
        let values: BTreeMap<String, Bytes> = (0..200)
            .map(|i| (format!("default.svc-{i}-80"), Bytes::from(vec![1])))
            .collect();
        let state = KvState::traced(values);
        let ownership = Ownership {
            generation: 3,
            shards: Arc::new(BTreeSet::from([0, 5])),
        };
        let scoped = ownership.scope(&state);
        assert!(!scoped.values.is_empty() && scoped.values.len() < 200);
        for key in state.values.keys() {
            let owned = [0, 5].contains(&discovery_shard(key));
            assert_eq!(scoped.values.contains_key(key), owned, "{key}");
            assert_eq!(scoped.in_scope(key), owned, "{key}");
        }
    }
}

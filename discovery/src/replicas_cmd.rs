//! `discovery replicas`: the replicas alive, the shards each owns, and per Upstream its
//! shard, its owner and what function discovery last found, read from NATS.
use std::collections::BTreeMap;

use kgw_common::{
    bus::{self, Bus, BusError},
    shutdown::Shutdown,
};
use kgw_proto::{
    nats::{DISCOVERY_PROBES_BUCKET, DISCOVERY_SHARDS_BUCKET, UPSTREAMS_BUCKET, discovery_shard},
    v1::ProbeStatus,
};
use prost::Message as _;
use serde::Serialize;

/// The report, as printed.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    pub replicas: Vec<Replica>,
    /// Shards no live replica holds (being handed over, or no replica running).
    pub unowned_shards: Vec<u16>,
    pub upstreams: BTreeMap<String, UpstreamOwner>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    pub name: String,
    pub shards: Vec<u16>,
    pub upstreams: usize,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamOwner {
    pub shard: u16,
    /// "" when the shard has no owner.
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeStatus>,
}

/// Reads the three buckets (each must exist: discovery creates them).
pub async fn read(bus: &Bus) -> Result<Replicas, BusError> {
    let shutdown = Shutdown::new();
    let open = |bucket: &'static str| {
        let bus = bus.clone();
        let shutdown = shutdown.clone();
        async move {
            match tokio::time::timeout(std::time::Duration::from_secs(10), bus.existing_kv(bucket, &shutdown)).await {
                Ok(store) => store,
                Err(_) => Err(BusError::Bucket {
                    bucket: bucket.into(),
                    message: "not found within 10 s: is discovery running?".into(),
                }),
            }
        }
    };
    let read_all = |bucket: &'static str, store: async_nats::jetstream::kv::Store| async move {
        bus::read_all(&store).await.map_err(|message| BusError::Bucket {
            bucket: bucket.into(),
            message,
        })
    };
    let leases = read_all(DISCOVERY_SHARDS_BUCKET, open(DISCOVERY_SHARDS_BUCKET).await?).await?;
    let upstreams = read_all(UPSTREAMS_BUCKET, open(UPSTREAMS_BUCKET).await?).await?;
    let probes = read_all(DISCOVERY_PROBES_BUCKET, open(DISCOVERY_PROBES_BUCKET).await?).await?;
    let mut replicas: BTreeMap<String, Replica> = BTreeMap::new();
    let mut owners: BTreeMap<u16, String> = BTreeMap::new();
    for (key, value) in &leases {
        let name = String::from_utf8_lossy(value).into_owned();
        if key.starts_with("member.") {
            replicas.entry(name.clone()).or_insert_with(|| Replica {
                name,
                ..Default::default()
            });
        } else if let Some(shard) = key.strip_prefix("shard.").and_then(|s| s.parse().ok()) {
            owners.insert(shard, name);
        }
    }
    for (shard, owner) in &owners {
        if let Some(replica) = replicas.get_mut(owner) {
            replica.shards.push(*shard);
        }
    }
    let mut report = Replicas::default();
    for key in upstreams.keys() {
        let shard = discovery_shard(key);
        let owner = owners.get(&shard).cloned().unwrap_or_default();
        if let Some(replica) = replicas.get_mut(&owner) {
            replica.upstreams += 1;
        }
        let probe = probes.get(key).and_then(|v| ProbeStatus::decode(v.as_ref()).ok());
        report
            .upstreams
            .insert(key.clone(), UpstreamOwner { shard, owner, probe });
    }
    report.unowned_shards = (0..kgw_proto::nats::DISCOVERY_SHARDS)
        .filter(|s| owners.get(s).is_none_or(|o| !replicas.contains_key(o)))
        .collect();
    report.replicas = replicas.into_values().collect();
    Ok(report)
}

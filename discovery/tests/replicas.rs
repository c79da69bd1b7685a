//! Three `discovery` binaries on one config and one nats-server share the work: every shard
//! of the Upstream keys has one owner (6 / 5 / 5), one edit is one KV write, a replica
//! killed with SIGKILL has its shards taken by the others within 10 s and its Upstreams
//! stay current, and a replica that joins gets a share without any rewrite.
#![forbid(unsafe_code)]

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use kgw_proto::{
    nats::{DISCOVERY_SHARDS, DISCOVERY_SHARDS_BUCKET, UPSTREAMS_BUCKET, discovery_shard},
    v1::{Upstream, upstream::UpstreamType},
};
use prost::Message as _;
use support::{NatsServer, eventually, run_system, write_atomically};

const SERVICES: usize = 40;
const WAIT: Duration = Duration::from_secs(30);

/// A discovery replica, killed when dropped.
struct Replica {
    child: Child,
}

impl Replica {
    fn start(config: &Path, nats: &str, dir: &Path, n: usize) -> Self {
        let log = std::fs::File::create(dir.join(format!("discovery-{n}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_discovery"))
            .arg("--config-dir")
            .arg(config)
            .args(["--nats-url", nats, "--insecure-no-mtls"])
            .arg("--health-file")
            .arg(dir.join(format!("healthy-{n}")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start discovery");
        Self { child }
    }

    /// The replica name it announces (`<host>-<pid>`) ends with this.
    fn suffix(&self) -> String {
        format!("-{}", self.child.id())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
         spec:\n  ports: [{{name: http, port: 80}}]\n"
    )
}

fn slice(i: usize, address: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: svc-{i}-1, namespace: default, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
         endpoints: [{{addresses: [\"{address}\"]}}]\n"
    )
}

fn key(i: usize) -> String {
    format!("default.default-svc-{i}-80")
}

/// Shard → owner (the replica name), and the number of live members.
async fn owners(store: &kv::Store) -> (BTreeMap<u16, String>, usize) {
    let mut owners = BTreeMap::new();
    let mut members = 0;
    let Ok(mut keys) = store.keys().await else {
        return (owners, 0);
    };
    while let Some(Ok(key)) = keys.next().await {
        let Ok(Some(value)) = store.get(&key).await else {
            continue;
        };
        if key.starts_with("member.") {
            members += 1;
        } else if let Some(shard) = key.strip_prefix("shard.").and_then(|s| s.parse().ok()) {
            owners.insert(shard, String::from_utf8_lossy(&value).into_owned());
        }
    }
    (owners, members)
}

fn shares(owners: &BTreeMap<u16, String>) -> Vec<usize> {
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for owner in owners.values() {
        *counts.entry(owner).or_default() += 1;
    }
    let mut out: Vec<usize> = counts.into_values().collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

/// The endpoint address of the Upstream under `key`.
async fn address(store: &kv::Store, key: &str) -> Option<String> {
    let value = store.get(key).await.ok()??;
    match Upstream::decode(value).ok()?.upstream_type? {
        UpstreamType::Kube(kube) => kube.endpoints.first().map(|e| e.address.clone()),
        _ => None,
    }
}

/// Messages the upstreams' stream holds in all (each put is one).
async fn writes(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(format!("KV_{UPSTREAMS_BUCKET}")).await.expect("stream");
    stream.info().await.expect("stream info").state.last_sequence
}

#[test]
fn three_replicas_share_the_work_and_survive_a_kill() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("mkdir");
    for i in 0..SERVICES {
        std::fs::write(config.join(format!("svc-{i}.yaml")), service(i)).expect("write");
        std::fs::write(config.join(format!("slice-{i}.yaml")), slice(i, "10.0.0.1")).expect("write");
    }
    run_system(
        Duration::from_secs(240),
        scenario(nats.url.clone(), config, dir.path().to_path_buf()),
    );
}

async fn scenario(url: String, config: PathBuf, dir: PathBuf) {
    let mut replicas: Vec<Option<Replica>> = (0..3).map(|n| Some(Replica::start(&config, &url, &dir, n))).collect();
    let client = async_nats::connect(&url).await.expect("connect");
    let js = jetstream::new(client);
    let upstreams = eventually(WAIT, "the upstreams bucket", || async {
        js.get_key_value(UPSTREAMS_BUCKET).await.ok()
    })
    .await;
    let leases = eventually(WAIT, "the shards bucket", || async {
        js.get_key_value(DISCOVERY_SHARDS_BUCKET).await.ok()
    })
    .await;

    // Every shard owned, 6 / 5 / 5, every Upstream written once.
    eventually(WAIT, "shards shared 6/5/5", || async {
        let (owners, members) = owners(&leases).await;
        (members == 3 && owners.len() == usize::from(DISCOVERY_SHARDS) && shares(&owners) == [6, 5, 5]).then_some(())
    })
    .await;
    eventually(WAIT, "every upstream written", || async {
        let mut all = true;
        for i in 0..SERVICES {
            all &= address(&upstreams, &key(i)).await.as_deref() == Some("10.0.0.1");
        }
        all.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        writes(&js).await,
        SERVICES as u64,
        "each upstream written once, by one replica"
    );

    // One edit: one write.
    write_atomically(&config.join("slice-3.yaml"), &slice(3, "10.0.0.3"));
    eventually(WAIT, "the edited upstream", || async {
        (address(&upstreams, &key(3)).await.as_deref() == Some("10.0.0.3")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(writes(&js).await, SERVICES as u64 + 1, "one edit, one write");

    // Kill -9 the owner of service 7's shard.
    let shard = discovery_shard(&key(7));
    let (before, _) = owners(&leases).await;
    let victim = replicas
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| before[&shard].ends_with(&r.suffix())))
        .expect("the owner is one of ours");
    let killed_at = Instant::now();
    drop(replicas[victim].take());
    let dead = before[&shard].clone();
    eventually(Duration::from_secs(15), "the dead replica's shards taken", || async {
        let (owners, members) = owners(&leases).await;
        (members == 2 && owners.len() == usize::from(DISCOVERY_SHARDS) && owners.values().all(|o| *o != dead))
            .then_some(())
    })
    .await;
    let failover = killed_at.elapsed();
    eprintln!("discovery_failover_seconds: {:.2}", failover.as_secs_f64());
    assert!(failover <= Duration::from_secs(10), "failover took {failover:?}");
    let (after, _) = owners(&leases).await;
    assert_eq!(shares(&after), [8, 8]);
    assert_eq!(writes(&js).await, SERVICES as u64 + 1, "a handover rewrites nothing");

    // The new owner keeps service 7 current.
    let before_edit = writes(&js).await;
    write_atomically(&config.join("slice-7.yaml"), &slice(7, "10.0.0.7"));
    eventually(WAIT, "the upstream of the dead replica's shard", || async {
        (address(&upstreams, &key(7)).await.as_deref() == Some("10.0.0.7")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(writes(&js).await, before_edit + 1, "one edit, one write");

    // A replica joins: it gets a share, the others give shards back, nothing is rewritten.
    replicas.push(Some(Replica::start(&config, &url, &dir, 3)));
    eventually(WAIT, "shares after a join", || async {
        let (owners, members) = owners(&leases).await;
        (members == 3 && owners.len() == usize::from(DISCOVERY_SHARDS) && shares(&owners) == [6, 5, 5]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(writes(&js).await, before_edit + 1, "a join rewrites nothing");
}

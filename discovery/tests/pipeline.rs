//! The discovery pipeline (library, not the binary) against a real nats-server: upstreams
//! appear, an endpoint change rewrites only its upstream, a deleted Service deletes its
//! upstream, gateway's upstreams are never touched, and a restart writes nothing.
#![forbid(unsafe_code)]

mod support;

use std::{path::Path, time::Duration};

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use kgw_common::shutdown::Shutdown;
use kgw_proto::{
    nats::{DISCOVERY_HEARTBEAT_SUBJECT, UPSTREAMS_BUCKET},
    v1::{Heartbeat, Metadata, Upstream, upstream::UpstreamType},
};
use prost::Message as _;
use support::{NatsServer, SERVICE_API, SERVICE_WEB, eventually, run_system, web_slice};

const WAIT: Duration = Duration::from_secs(20);
const WEB: &str = "default.default-web-80";
const API: &str = "default.default-api-8080";
const USER: &str = "default.user-declared";
const STALE: &str = "default.default-gone-80";

#[test]
fn pipeline_writes_only_what_changed() {
    let nats = NatsServer::start();
    run_system(Duration::from_secs(120), scenario(nats.url.clone()));
}

async fn scenario(url: String) {
    let client = async_nats::connect(&url).await.expect("connect");
    let store = jetstream::new(client.clone())
        .create_key_value(kv::Config {
            bucket: UPSTREAMS_BUCKET.into(),
            history: 1,
            ..Default::default()
        })
        .await
        .expect("create bucket");
    // Written before discovery starts: one by gateway (must survive), one stale of discovery's.
    store
        .put(USER, upstream(USER, "gateway").encode_to_vec().into())
        .await
        .expect("put");
    store
        .put(STALE, upstream(STALE, "discovery").encode_to_vec().into())
        .await
        .expect("put");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(config.join("web.yaml"), SERVICE_WEB).expect("write");
    std::fs::write(config.join("web-slice.yaml"), web_slice(&["10.0.0.1", "10.0.0.2"])).expect("write");
    std::fs::write(config.join("api.yaml"), SERVICE_API).expect("write");
    let health = dir.path().join("healthy");
    let mut beats = client.subscribe(DISCOVERY_HEARTBEAT_SUBJECT).await.expect("subscribe");

    let shutdown = Shutdown::new();
    let running = discovery::start(cfg(&config, &url, &health), shutdown.clone())
        .await
        .expect("start");

    // Upstreams appear; the stale one goes; gateway's stays.
    eventually(WAIT, "both upstreams written, stale deleted", || async {
        let (web, api, stale) = (rev(&store, WEB).await, rev(&store, API).await, rev(&store, STALE).await);
        (web.is_some() && api.is_some() && stale.is_none()).then_some(())
    })
    .await;
    assert_eq!(endpoints(&store, WEB).await, ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert_eq!(endpoints(&store, API).await, ["10.0.1.1:9000"]);
    assert!(rev(&store, USER).await.is_some(), "gateway's upstream kept");

    // Health: a heartbeat with the count, and the file.
    let beat = tokio::time::timeout(WAIT, async {
        while let Some(message) = beats.next().await {
            let beat = Heartbeat::decode(message.payload).expect("heartbeat");
            if beat.upstreams == 2 {
                return beat;
            }
        }
        panic!("heartbeat subscription ended");
    })
    .await
    .expect("heartbeat");
    assert_eq!(beat.process, "discovery");
    assert!(
        beat.instance.ends_with(&format!("-{}", std::process::id())),
        "{}",
        beat.instance
    );
    eventually(WAIT, "health file", || async { health.exists().then_some(()) }).await;

    // One endpoint fewer: only web's upstream is rewritten.
    let mut stats = running.writer.clone();
    let before = tokio::time::timeout(WAIT, stats.wait_for(|s| s.puts == 2 && s.deletes == 1))
        .await
        .expect("first writes counted")
        .expect("writer")
        .clone();
    let (web_rev, api_rev) = (rev(&store, WEB).await, rev(&store, API).await);
    support::write_atomically(&config.join("web-slice.yaml"), &web_slice(&["10.0.0.2"]));
    eventually(WAIT, "web endpoints updated", || async {
        (endpoints(&store, WEB).await == ["10.0.0.2:8080"]).then_some(())
    })
    .await;
    assert!(rev(&store, WEB).await > web_rev);
    assert_eq!(rev(&store, API).await, api_rev, "api's upstream not rewritten");
    let after = tokio::time::timeout(WAIT, stats.wait_for(|s| s.puts > before.puts))
        .await
        .expect("put counted")
        .expect("writer")
        .clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(after.puts, before.puts + 1, "exactly one put");
    assert_eq!(stats.borrow().puts, after.puts, "no further puts");

    // The Service goes: its upstream goes; the others stay as they were.
    std::fs::remove_file(config.join("web.yaml")).expect("rm");
    eventually(WAIT, "web upstream deleted", || async {
        rev(&store, WEB).await.is_none().then_some(())
    })
    .await;
    assert_eq!(rev(&store, API).await, api_rev);
    assert!(rev(&store, USER).await.is_some(), "gateway's upstream kept");

    shutdown.trigger();
    running.stopped(Duration::from_secs(5)).await;
    assert!(!health.exists(), "health file removed on shutdown");

    // A restart over the same state writes nothing.
    let shutdown = Shutdown::new();
    let running = discovery::start(cfg(&config, &url, &health), shutdown.clone())
        .await
        .expect("restart");
    let mut stats = running.writer.clone();
    let settled = tokio::time::timeout(WAIT, stats.wait_for(|s| s.unchanged > 0 || s.puts > 0 || s.deletes > 0))
        .await
        .expect("writer reconciled")
        .expect("writer")
        .clone();
    assert_eq!(
        (settled.puts, settled.deletes, settled.errors),
        (0, 0, 0),
        "{settled:?}"
    );
    assert_eq!(rev(&store, API).await, api_rev);
    shutdown.trigger();
    running.stopped(Duration::from_secs(5)).await;
}

fn cfg(config: &Path, url: &str, health: &Path) -> discovery::Config {
    discovery::Config {
        source: kgw_common::config::SourceSpec::Directory(config.to_path_buf().into()),
        nats_url: url.to_string(),
        nats_auth: Default::default(),
        health_file: health.to_path_buf(),
        heartbeat_every: Duration::from_millis(200),
        // About UDS; function discovery has its own tests.
        fds_mode: discovery::fds::schedule::FdsMode::Disabled,
        aws_lambda_endpoint: None,
        fds_tls_insecure_skip_verify: false,
    }
}

fn upstream(key: &str, written_by: &str) -> Upstream {
    let (namespace, name) = kgw_proto::nats::split_key(key).expect("key");
    Upstream {
        metadata: Some(Metadata {
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }),
        written_by: written_by.into(),
        ..Default::default()
    }
}

/// The revision of a live key.
async fn rev(store: &kv::Store, key: &str) -> Option<u64> {
    let entry = store.entry(key).await.expect("kv entry")?;
    (entry.operation == kv::Operation::Put).then_some(entry.revision)
}

/// `address:port` of a live upstream's endpoints (all ready in these tests).
async fn endpoints(store: &kv::Store, key: &str) -> Vec<String> {
    let Some(value) = store.get(key).await.expect("kv get") else {
        return Vec::new();
    };
    let upstream = Upstream::decode(value).expect("upstream");
    assert_eq!(upstream.written_by, "discovery");
    let Some(UpstreamType::Kube(kube)) = upstream.upstream_type else {
        panic!("kube upstream")
    };
    kube.endpoints
        .iter()
        .inspect(|e| assert!(e.ready))
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect()
}

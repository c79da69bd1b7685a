//! The actor publishes the Proxies and Upstreams it holds (what the proxy debug and
//! validation services read) through its watch channel, at most every 20 ms.
use std::time::Duration;

use actix::Actor as _;
use controller::{
    actor::{ControllerActor, ProxiesChanged, Published, UpstreamsChanged},
    translate::{Settings, wasm::WasmModules},
    xds::SnapshotCache,
};
use kgw_common::bus::KvEvent;
use kgw_proto::v1 as pb;
use prost::Message as _;
use tokio::sync::watch;

fn proxy(name: &str) -> pb::Proxy {
    pb::Proxy {
        metadata: Some(pb::Metadata {
            namespace: "default".into(),
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The published state once `done` holds (fails after 5 s).
async fn wait_until(published: &mut watch::Receiver<Published>, done: impl Fn(&Published) -> bool) -> Published {
    let state = tokio::time::timeout(Duration::from_secs(5), published.wait_for(|s| done(s)))
        .await
        .expect("published within 5 s")
        .expect("the actor is alive");
    state.clone()
}

#[test]
fn publishes_proxies_and_upstreams() {
    actix::System::new().block_on(async {
        let settings = Settings {
            access_log_addresses: Vec::new(),
            wasm: WasmModules::default(),
            proxy_tls: None,
            secrets: Default::default(),
        };
        let actor = ControllerActor::new(settings, SnapshotCache::default(), watch::channel((false, false)).0);
        let mut published = actor.published();
        let actor = actor.start();

        let put = |name: &str| KvEvent::Put(format!("default.{name}"), proxy(name).encode_to_vec().into(), None);
        actor.send(ProxiesChanged(put("a"))).await.unwrap();
        actor.send(ProxiesChanged(put("b"))).await.unwrap();
        let upstream = pb::Upstream {
            metadata: Some(pb::Metadata {
                namespace: "default".into(),
                name: "svc".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let event = KvEvent::Put("default.svc".into(), upstream.encode_to_vec().into(), None);
        actor.send(UpstreamsChanged(event)).await.unwrap();

        // Published once the burst settles (at most every 20 ms).
        let state = wait_until(&mut published, |s| s.proxies.len() == 2 && s.upstreams.len() == 1).await;
        assert_eq!(state.proxies.keys(), ["default.a", "default.b"]);
        assert_eq!(state.proxies.get("default.b"), Some(proxy("b")));
        assert_eq!(state.upstreams.keys().collect::<Vec<_>>(), ["default.svc"]);

        actor
            .send(ProxiesChanged(KvEvent::Delete("default.a".into(), None)))
            .await
            .unwrap();
        let state = wait_until(&mut published, |s| s.proxies.len() == 1).await;
        assert_eq!(state.proxies.keys(), ["default.b"]);
        assert_eq!(state.upstreams.len(), 1, "unchanged parts stay");
    });
}

//! A REST xDS request body (`POST /v3/discovery:*`, proto3 JSON), answered from a
//! snapshot cache holding one gateway's resources, on every path the server serves: the
//! JSON parsing into a DiscoveryRequest, the role and type checks (for a client without
//! mTLS and for one whose certificate names the cached role), the JSON answer or the JSON
//! error.
#![no_main]

use std::sync::{Arc, OnceLock};

use controller::{
    rest_xds::{self, PATHS},
    translate::EnvoyResources,
    xds::{Snapshot, SnapshotCache},
};
use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster,
    endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints},
    listener::v3::Listener,
};
use kgw_common::tls::Peer;
use kgw_proto::identity::Identity;
use libfuzzer_sys::fuzz_target;

fn cache() -> &'static SnapshotCache {
    static CACHE: OnceLock<SnapshotCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let resources = EnvoyResources {
            listeners: vec![Listener {
                name: "listener~8080".into(),
                ..Default::default()
            }],
            clusters: vec![Cluster {
                name: "echo_default".into(),
                ..Default::default()
            }],
            endpoints: vec![ClusterLoadAssignment {
                cluster_name: "echo_default".into(),
                endpoints: vec![LocalityLbEndpoints::default()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let cache = SnapshotCache::default();
        cache.set("default~gw", Some(Arc::new(Snapshot::new(&resources))));
        cache
    })
}

fuzz_target!(|data: &[u8]| {
    let plaintext = Peer::Plaintext;
    // Parse once on its own, then through each path as the server does.
    if rest_xds::parse_request(data).is_err() {
        let _ = rest_xds::discover(&plaintext, cache(), PATHS[0].0, data).map_err(|error| error.body());
        return;
    }
    let proxy = Peer::Verified(Identity::Proxy {
        role: "default~gw".into(),
    });
    for (path, _) in PATHS {
        for peer in [&plaintext, &proxy] {
            if let Err(error) = rest_xds::discover(peer, cache(), path, data) {
                let _ = (error.status(), error.body());
            }
        }
    }
});

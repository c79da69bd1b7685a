use std::time::Duration;

use kgw_harness::envoy::direct_response_bootstrap;
use kgw_harness::{Component, Placement, System, SystemConfig, addr, wait_status};

/// Envoy alone through System's launch path, on a static bootstrap; two at once.
#[tokio::test]
async fn envoy_starts_serves_and_stops() {
    let mut systems = Vec::new();
    for i in 0..2 {
        let lease = addr::allocate().unwrap();
        let l = lease.layout.clone();
        let yaml = direct_response_bootstrap(l.envoy_admin(), l.envoy_http(), 200, &format!("hello {i}")).unwrap();
        let sys = System::start(SystemConfig {
            placement: Placement::Lease(lease),
            components: vec![Component::Envoy],
            envoy_bootstrap: Some(yaml),
            ..SystemConfig::default()
        })
        .await
        .unwrap();
        systems.push(sys);
    }
    for (i, sys) in systems.iter().enumerate() {
        let resp = wait_status(&sys.url("/anything"), Some("a.example"), 200, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(resp.text(), format!("hello {i}"));
        let ready = kgw_harness::get(&sys.admin_url("/ready"), None).await.unwrap();
        assert_eq!(ready.status, 200, "{}", ready.text());
    }
    let mut sys = systems.pop().unwrap();
    let pid = sys.pid(Component::Envoy).unwrap();
    sys.stop(Component::Envoy).await.unwrap();
    assert!(kgw_harness::get(&sys.url("/"), None).await.is_err());
    sys.restart(Component::Envoy).await.unwrap();
    assert_ne!(sys.pid(Component::Envoy).unwrap(), pid);
    wait_status(&sys.url("/"), None, 200, Duration::from_secs(20))
        .await
        .unwrap();
    sys.kill9(Component::Envoy).unwrap();
    assert!(sys.check_alive().is_err());
    assert!(kgw_harness::get(&sys.url("/"), None).await.is_err());
}

/// nats-server alone: JetStream up, monitoring on the block's NATS host.
#[tokio::test]
async fn nats_starts_with_jetstream() {
    let sys = System::start(SystemConfig {
        components: vec![Component::Nats],
        ..SystemConfig::default()
    })
    .await
    .unwrap();
    let mon = format!("http://{}/jsz", sys.layout().nats_monitor_addr());
    let resp = wait_status(&mon, None, 200, Duration::from_secs(10)).await.unwrap();
    assert!(resp.text().contains("\"config\""), "{}", resp.text());
    let client = sys.nats_client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "probe".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    kv.put("k", "v".into()).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap().unwrap(), "v");
}

/// The harness's fallback bootstrap is one Envoy accepts: it comes up with the node's role.
#[tokio::test]
async fn fallback_bootstrap_loads() {
    let lease = addr::allocate().unwrap();
    let l = lease.layout.clone();
    let yaml = kgw_harness::envoy::fallback_bootstrap(&kgw_harness::envoy::BootstrapParams {
        node_id: "test-node".into(),
        role: "ns1~gw1".into(),
        xds: l.xds_addr(),
        admin: l.envoy_admin(),
        tls_dir: None,
        xds_protocol: Default::default(),
    });
    let sys = System::start(SystemConfig {
        placement: Placement::Lease(lease),
        components: vec![Component::Envoy],
        envoy_bootstrap: Some(yaml),
        ..SystemConfig::default()
    })
    .await
    .unwrap();
    let info = wait_status(&sys.admin_url("/server_info"), None, 200, Duration::from_secs(10))
        .await
        .unwrap();
    let info = info.json().unwrap();
    let node = &info["command_line_options"];
    assert!(node.is_object(), "{info}");
    let bootstrap = kgw_harness::get(&sys.admin_url("/config_dump"), None).await.unwrap();
    assert!(bootstrap.text().contains("ns1~gw1"), "{}", bootstrap.text());
}

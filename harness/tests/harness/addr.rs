use std::collections::HashSet;

use kgw_harness::addr::{Layout, allocate, take};

#[test]
fn concurrent_callers_get_distinct_blocks() {
    let leases: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16).map(|_| s.spawn(|| allocate().unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let blocks: HashSet<_> = leases.iter().map(|l| l.layout.block.unwrap()).collect();
    assert_eq!(blocks.len(), leases.len());
    for (b, _) in &blocks {
        assert!((20..=250).contains(b));
    }
}

#[test]
fn a_held_block_is_not_handed_out_again() {
    let first = allocate().unwrap();
    for _ in 0..64 {
        let other = allocate().unwrap();
        assert_ne!(other.layout, first.layout);
    }
}

#[test]
fn a_bound_block_is_skipped() {
    // Someone (not holding the lock) listens on a block's NATS port: it is not handed out.
    let lease = allocate().unwrap();
    let layout = lease.layout.clone();
    assert!(take(layout.clone()).unwrap().is_none(), "locked: not free");
    let squatter = std::net::TcpListener::bind(layout.nats_addr()).unwrap();
    drop(lease);
    assert!(take(layout.clone()).unwrap().is_none(), "bound: not free");
    drop(squatter);
    assert!(take(layout).unwrap().is_some());
}

#[test]
fn layouts_follow_the_table() {
    let l = Layout::block(42, 7);
    assert_eq!(l.nats_url(), "nats://127.42.7.1:4222");
    assert_eq!(l.xds_addr().to_string(), "127.42.7.2:9977");
    assert_eq!(l.webhook_addr().to_string(), "127.42.7.3:8443");
    assert_eq!(l.access_log_addr().to_string(), "127.42.7.4:8083");
    assert_eq!(l.envoy_http().to_string(), "127.42.7.5:8080");
    assert_eq!(l.envoy_https().to_string(), "127.42.7.5:8443");
    assert_eq!(l.envoy_admin().to_string(), "127.42.7.5:19000");
    assert_eq!(l.backend(1).to_string(), "127.42.7.10:9001");
    let local = Layout::local();
    assert_eq!(local.nats_url(), "nats://127.0.0.1:4222");
    assert_eq!(local.webhook_addr().to_string(), "127.0.0.2:8443");
    assert_eq!(local.envoy_http().to_string(), "127.0.0.1:8080");
    assert_eq!(local.backend(1).to_string(), "127.0.0.1:9001");
}

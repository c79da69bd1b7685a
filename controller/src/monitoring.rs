//! What the controller's monitoring port serves: its metrics, the NATS connection's, and
//! readiness (connected to NATS, both buckets read).
use kgw_common::monitoring::{Monitoring, register_nats};
use kgw_proto::nats::{PROXIES_BUCKET, UPSTREAMS_BUCKET};
use prometheus_client::registry::Registry;

use crate::{metrics::register_xds, run::Running};

/// What the monitoring port serves for a running controller.
pub fn monitoring(running: &Running) -> Monitoring {
    let mut registry = Registry::with_prefix("kgw");
    register_nats(&mut registry, &running.bus);
    let controller = registry.sub_registry_with_prefix("controller");
    running.metrics.register(controller);
    register_xds(controller, running.stats.clone());
    let (proxies, upstreams) = (running.synced.clone(), running.synced.clone());
    Monitoring::new(registry)
        .ready_when_nats_connected(running.bus.clone())
        .ready_when(format!("bucket {PROXIES_BUCKET} not read yet"), move || {
            proxies.borrow().0
        })
        .ready_when(format!("bucket {UPSTREAMS_BUCKET} not read yet"), move || {
            upstreams.borrow().1
        })
}

//! What the gateway's monitoring port serves: its metrics, the NATS connection's, the
//! writers' counts, and readiness (connected to NATS, first full state translated).
use kgw_common::monitoring::{FnCollector, Monitoring, register_nats};
use kgw_proto::nats::PROXIES_BUCKET;
use prometheus_client::registry::Registry;

use crate::run::Running;

/// What the monitoring port serves for a running gateway.
pub fn monitoring(running: &Running) -> Monitoring {
    let mut registry = Registry::with_prefix("kgw");
    register_nats(&mut registry, &running.bus);
    let gateway = registry.sub_registry_with_prefix("gateway");
    running.metrics.register(gateway);
    let (writes, errors) = (running.proxy_writes.clone(), running.proxy_writes.clone());
    let (status_writes, status_errors) = (running.status_writes.clone(), running.status_writes.clone());
    gateway.register_collector(Box::new(
        FnCollector::new()
            .counter_family(
                "kv_writes",
                "Key-value writes of Proxies (only keys whose bytes changed), per operation",
                move || {
                    let stats = writes.borrow();
                    let sample = |op: &'static str, value: u64| {
                        let labels = vec![("bucket", PROXIES_BUCKET.to_string()), ("op", op.to_string())];
                        (labels, i64::try_from(value).unwrap_or(i64::MAX))
                    };
                    vec![sample("put", stats.puts), sample("delete", stats.deletes)]
                },
            )
            .counter_family(
                "kv_write_errors",
                "Key-value writes of Proxies that failed (retried)",
                move || {
                    let value = i64::try_from(errors.borrow().errors).unwrap_or(i64::MAX);
                    vec![(vec![("bucket", PROXIES_BUCKET.to_string())], value)]
                },
            )
            .counter_family(
                "status_writes",
                "Status subresource writes to the Kubernetes API server (only changed statuses), per kind",
                move || {
                    let stats = status_writes.borrow();
                    let sample = |kind: &'static str, value: u64| {
                        (
                            vec![("kind", kind.to_string())],
                            i64::try_from(value).unwrap_or(i64::MAX),
                        )
                    };
                    vec![
                        sample("GatewayClass", stats.gateway_classes),
                        sample("Gateway", stats.gateways),
                        sample("HTTPRoute", stats.http_routes),
                        sample("RouteOption", stats.route_options),
                    ]
                },
            )
            .counter_family(
                "status_write_errors",
                "Status writes to the Kubernetes API server that failed (retried)",
                move || {
                    let value = i64::try_from(status_errors.borrow().errors).unwrap_or(i64::MAX);
                    vec![(Vec::new(), value)]
                },
            ),
    ));
    Monitoring::new(registry)
        .ready_when_nats_connected(running.bus.clone())
        .ready_when_set("the config has not been translated yet", running.synced.clone())
}

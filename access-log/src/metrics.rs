//! Prometheus metrics of the sink: the [`Stats`] atomics, read at scrape time (the gRPC edge,
//! the writer and the publisher keep counting exactly as before), plus the NATS connection.
//!
//! Names: `kgw_access_log_{streams,entries_received,lines_written,write_errors,publishes_sent,publishes_duplicate,publish_retries}_total`,
//! `kgw_access_log_publishes_dropped_total{reason}` and `kgw_nats_connected`.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use kgw_common::{
    bus::Bus,
    monitoring::{FnCollector, register_nats},
};
use prometheus_client::registry::Registry;

use crate::stats::{DropReason, RejectReason, Stats};

/// A registry with every metric of the sink; `bus` when lines are also published on NATS.
pub fn registry(stats: Arc<Stats>, bus: Option<&Bus>) -> Registry {
    let mut registry = Registry::with_prefix("kgw");
    if let Some(bus) = bus {
        register_nats(&mut registry, bus);
    }
    let read = |counter: fn(&Stats) -> &AtomicU64| {
        let stats = stats.clone();
        move || counter(&stats).load(Relaxed)
    };
    let dropped = stats.clone();
    let rejected = stats.clone();
    let collector = FnCollector::new()
        .counter("streams", "Access-log streams opened by Envoys", read(|s| &s.streams))
        .counter(
            "entries_received",
            "Log entries (HTTP or TCP) received over gRPC",
            read(|s| &s.entries_received),
        )
        .counter(
            "lines_written",
            "JSON lines written to the output",
            read(|s| &s.lines_written),
        )
        .counter(
            "write_errors",
            "Lines that could not be serialised or written",
            read(|s| &s.write_errors),
        )
        .counter(
            "publishes_sent",
            "Lines acknowledged by JetStream (stored, or a duplicate of an entry it holds)",
            read(|s| &s.publishes_sent),
        )
        .counter(
            "publishes_duplicate",
            "JetStream acks saying the entry was already stored (by another replica or an earlier attempt)",
            read(|s| &s.publishes_duplicate),
        )
        .counter(
            "publish_retries",
            "Publishes sent again after a failure or a missing JetStream ack",
            read(|s| &s.publish_retries),
        )
        .counter_family(
            "publishes_dropped",
            "Lines not published on NATS, per reason",
            move || {
                DropReason::ALL
                    .iter()
                    .map(|reason| {
                        let value = i64::try_from(dropped.dropped_for(*reason)).unwrap_or(i64::MAX);
                        (vec![("reason", reason.label().to_string())], value)
                    })
                    .collect()
            },
        )
        .counter_family(
            "messages_rejected",
            "Messages from Envoy refused with an error status, per reason",
            move || {
                RejectReason::ALL
                    .iter()
                    .map(|reason| {
                        let value = i64::try_from(rejected.rejected_for(*reason)).unwrap_or(i64::MAX);
                        (vec![("reason", reason.label().to_string())], value)
                    })
                    .collect()
            },
        );
    registry
        .sub_registry_with_prefix("access_log")
        .register_collector(Box::new(collector));
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_stats() {
        let stats = Arc::new(Stats::default());
        stats.entries_received.store(3, Relaxed);
        stats.lines_written.store(2, Relaxed);
        stats.dropped_n(DropReason::NotConnected, 1);
        let registry = registry(stats, None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "kgw_access_log_entries_received_total 3",
            "kgw_access_log_lines_written_total 2",
            "kgw_access_log_write_errors_total 0",
            "kgw_access_log_publishes_dropped_total{reason=\"nats_not_connected\"} 1",
            "kgw_access_log_publishes_dropped_total{reason=\"queue_full\"} 0",
            "kgw_access_log_publishes_dropped_total{reason=\"stopped\"} 0",
            "kgw_access_log_publish_retries_total 0",
            "kgw_access_log_publishes_duplicate_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}

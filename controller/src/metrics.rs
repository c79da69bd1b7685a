//! The controller's Prometheus metrics and readiness, served on its monitoring port (9092).
//!
//! Names: `kgw_controller_translations_total`, `kgw_controller_translation_duration_seconds`,
//! `kgw_controller_translation_problems_total{severity}`, `kgw_controller_snapshot_bytes{role}`,
//! `kgw_controller_validations_total{request,answer}`, `kgw_controller_kv_values_rejected_total{reason}`, `kgw_controller_xds_connected_envoys`, `kgw_controller_xds_{responses,acks,nacks}_total{type_url}`,
//! `kgw_nats_connected`, `kgw_nats_connections_total`.
//! Ready = connected to NATS and both buckets (`kgw_proxies`, `kgw_upstreams`) read in full.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use kgw_common::monitoring::{FnCollector, Sample};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{
    translate::{Problem, Severity},
    xds::ads::{TypeStats, XdsStats},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// The Envoy role, `<namespace>~<gateway>`.
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    /// `dry_run` (a whole Proxy sent to `Validate`) or `served` (`ServedProblems`).
    pub request: &'static str,
    /// `ok`, `not_yet` (not serving the state asked about) or `invalid`.
    pub answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabels {
    /// Why a value of `kgw_proxies` was left out: `undecodable`, `misplaced`, `missing_page`.
    pub reason: &'static str,
}

/// Counted by the actor on every translation of a Proxy, and by the validation service.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    pub translations: Counter,
    pub translation_duration: Histogram,
    pub translation_problems: Family<SeverityLabels, Counter>,
    pub snapshot_bytes: Family<RoleLabels, Gauge>,
    pub validations: Family<ValidationLabels, Counter>,
    pub kv_values_rejected: Family<RejectedLabels, Counter>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            translations: Counter::default(),
            // 50 µs … ~1.6 s.
            translation_duration: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            translation_problems: Family::default(),
            snapshot_bytes: Family::default(),
            validations: Family::default(),
            kv_values_rejected: Family::default(),
        }
    }
}

impl ControllerMetrics {
    /// One Proxy translated into the snapshot of `role`.
    pub fn translated(&self, role: &str, took: Duration, snapshot_bytes: usize, problems: &[Problem]) {
        self.translations.inc();
        self.translation_duration.observe(took.as_secs_f64());
        for problem in problems {
            let severity = match problem.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            self.translation_problems
                .get_or_create(&SeverityLabels { severity })
                .inc();
        }
        self.snapshot_bytes
            .get_or_create(&RoleLabels { role: role.to_string() })
            .set(i64::try_from(snapshot_bytes).unwrap_or(i64::MAX));
    }

    /// One validation request answered.
    pub fn validated(&self, request: &'static str, answer: &'static str) {
        self.validations
            .get_or_create(&ValidationLabels { request, answer })
            .inc();
    }

    /// Values of `kgw_proxies` left out, per reason.
    pub fn rejected(&self, rejected: &std::collections::BTreeMap<crate::proxies::Rejected, u64>) {
        for (reason, count) in rejected {
            self.kv_values_rejected
                .get_or_create(&RejectedLabels { reason: reason.label() })
                .inc_by(*count);
        }
    }

    /// The Proxy of `role` is gone: so is its snapshot.
    pub fn removed(&self, role: &str) {
        self.snapshot_bytes.remove(&RoleLabels { role: role.to_string() });
    }

    /// Registers the metrics (on a registry prefixed `kgw_controller`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "translations",
            "Translations of a Proxy into Envoy resources",
            self.translations.clone(),
        );
        registry.register(
            "translation_duration_seconds",
            "Time one translation of a Proxy into Envoy resources took",
            self.translation_duration.clone(),
        );
        registry.register(
            "translation_problems",
            "Problems (errors and warnings) translations found, per severity",
            self.translation_problems.clone(),
        );
        registry.register(
            "validations",
            "Validation requests answered, per request (dry_run, served) and answer",
            self.validations.clone(),
        );
        registry.register(
            "kv_values_rejected",
            "Values of kgw_proxies left out, per reason (undecodable, misplaced, missing_page)",
            self.kv_values_rejected.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Encoded size of the Envoy resources served to a role",
            self.snapshot_bytes.clone(),
        );
    }
}

/// The xDS counters, read at scrape time (registered on a registry prefixed `kgw_controller`).
pub(crate) fn register_xds(registry: &mut Registry, stats: Arc<XdsStats>) {
    let per_type = |counter: fn(&TypeStats) -> &AtomicU64| {
        let stats = stats.clone();
        move || -> Vec<Sample> {
            stats
                .types()
                .map(|(type_url, counters)| {
                    let value = i64::try_from(counter(counters).load(Relaxed)).unwrap_or(i64::MAX);
                    (vec![("type_url", type_url.to_string())], value)
                })
                .collect()
        }
    };
    let streams = stats.clone();
    registry.register_collector(Box::new(
        FnCollector::new()
            .gauge(
                "xds_connected_envoys",
                "Envoys connected over ADS (open streams)",
                move || i64::try_from(streams.streams_open.load(Relaxed)).unwrap_or(i64::MAX),
            )
            .counter_family(
                "xds_responses",
                "xDS responses (pushes) sent, per resource type",
                per_type(|t| &t.responses),
            )
            .counter_family(
                "xds_response_bytes",
                "Encoded bytes of the xDS responses sent, per resource type",
                per_type(|t| &t.response_bytes),
            )
            .counter_family(
                "xds_acks",
                "xDS responses Envoy accepted (ACK), per resource type",
                per_type(|t| &t.acks),
            )
            .counter_family(
                "xds_nacks",
                "xDS responses Envoy rejected (NACK), per resource type",
                per_type(|t| &t.nacks),
            ),
    ));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::xds::snapshot::{CLUSTER, ROUTE};

    #[test]
    fn xds_counters_per_type() {
        let stats = Arc::new(XdsStats::default());
        stats.of(CLUSTER).responses.fetch_add(2, Ordering::Relaxed);
        stats.of(ROUTE).nacks.fetch_add(1, Ordering::Relaxed);
        stats
            .of("type.googleapis.com/whatever")
            .acks
            .fetch_add(1, Ordering::Relaxed);
        stats.streams_open.fetch_add(1, Ordering::Relaxed);
        let metrics = ControllerMetrics::default();
        metrics.translated("default~gw", Duration::from_millis(1), 1234, &[]);
        let mut registry = Registry::with_prefix("kgw");
        let controller = registry.sub_registry_with_prefix("controller");
        metrics.register(controller);
        register_xds(controller, stats);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            format!("kgw_controller_xds_responses_total{{type_url=\"{CLUSTER}\"}} 2"),
            format!("kgw_controller_xds_nacks_total{{type_url=\"{ROUTE}\"}} 1"),
            "kgw_controller_xds_acks_total{type_url=\"other\"} 1".into(),
            "kgw_controller_xds_connected_envoys 1".into(),
            "kgw_controller_translations_total 1".into(),
            "kgw_controller_snapshot_bytes{role=\"default~gw\"} 1234".into(),
            "kgw_controller_translation_duration_seconds_count 1".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}

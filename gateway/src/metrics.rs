//! The gateway's Prometheus metrics and readiness, served on its monitoring port (9091).
//!
//! Names: `kgw_gateway_translations_total`, `kgw_gateway_translation_duration_seconds`,
//! `kgw_gateway_proxies`, `kgw_gateway_config_problems`,
//! `kgw_gateway_kv_writes_total{bucket,op}`, `kgw_gateway_kv_write_errors_total{bucket}`,
//! `kgw_gateway_status_writes_total{kind}`, `kgw_gateway_status_write_errors_total` (status
//! written to the API server, Kubernetes source), `kgw_nats_connected`,
//! `kgw_nats_connections_total`.
//! Ready = connected to NATS and the first full state translated.
use std::time::Duration;

use prometheus_client::{
    metrics::{
        counter::Counter,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Counted by the actor on every translation.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    pub translations: Counter,
    pub translation_duration: Histogram,
    pub proxies: Gauge,
    pub config_problems: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            translations: Counter::default(),
            // 100 µs … ~3.3 s.
            translation_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            proxies: Gauge::default(),
            config_problems: Gauge::default(),
        }
    }
}

impl GatewayMetrics {
    /// One translation of the whole index: how long it took, the Proxies it produced and the
    /// config problems (files or documents that could not be read) current at the time.
    pub fn translated(&self, took: Duration, proxies: usize, config_problems: usize) {
        self.translations.inc();
        self.translation_duration.observe(took.as_secs_f64());
        self.proxies.set(i64::try_from(proxies).unwrap_or(i64::MAX));
        self.config_problems
            .set(i64::try_from(config_problems).unwrap_or(i64::MAX));
    }

    /// Registers the metrics (on a registry prefixed `kgw_gateway`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "translations",
            "Translations of the config into Proxies",
            self.translations.clone(),
        );
        registry.register(
            "translation_duration_seconds",
            "Time one translation of the config into Proxies took",
            self.translation_duration.clone(),
        );
        registry.register("proxies", "Proxies the last translation produced", self.proxies.clone());
        registry.register(
            "config_problems",
            "Config files or documents that could not be read (see `gateway status`)",
            self.config_problems.clone(),
        );
    }
}

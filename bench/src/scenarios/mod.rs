//! The scenarios of the benchmark. Each writes its figures under the JSON keys of the
//! contract (issue 4) into a [`Report`], and what explains them under `details`.

pub mod ads_floor;
pub mod bulk;
mod diagnose;
pub mod discovery;
pub mod edits;
pub mod envoy_static;
pub mod fleet;
pub mod floor;
pub mod growth;
pub mod kill_matrix;
pub mod kube;
pub mod machine;
pub mod propagation;
pub mod shapes;
pub mod sotw;
pub mod throughput;
pub mod translate;

use std::time::Duration;

use serde_json::{Map, Value, json};

/// How big and how long: the full run, or `--quick` (every scenario, small).
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Route counts: small, mid (the goals' 5k), large.
    pub sizes: [usize; 3],
    pub translate_runs: usize,
    pub one_route_runs: usize,
    /// New-route samples per size, and under churn.
    pub samples: usize,
    pub churn_samples: usize,
    /// Pause between samples (lets the previous change settle).
    pub sample_gap: Duration,
    /// Route edits under load, and their spacing.
    pub edits: usize,
    pub edit_interval: Duration,
    /// Routes Envoy serves in the throughput runs; seconds per run; runs of each kind.
    pub throughput_routes: usize,
    pub load_secs: u64,
    pub als_secs: u64,
    pub reps: usize,
    pub floor_samples: usize,
    /// Route counts of the two-shape propagation runs ([`shapes`]), and samples at each
    /// (ours and Envoy's floor over ADS alike); at the largest size only `shape_samples_largest`.
    /// A series stops short once `shape_budget` is spent (a slow system still ends the run
    /// in time; the JSON says how many samples were taken).
    pub shape_sizes: Vec<usize>,
    /// The shapes `propagation` runs (all but when asked for fewer).
    pub shapes: Vec<crate::routeset::Shape>,
    pub shape_samples: usize,
    pub shape_samples_largest: usize,
    pub shape_budget: Duration,
    /// Longest wait for a route set to be served.
    pub load_timeout: Duration,
    /// Services (3 Upstreams each) of the [`discovery`] scenario; its idle-probe window:
    /// from this long after discovery's start (at the earliest 1 s after the first probe
    /// round), this long.
    pub discovery_services: usize,
    pub probe_window_from: Duration,
    pub probe_window: Duration,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            sizes: [1000, 5000, 10000],
            translate_runs: 5,
            one_route_runs: 15,
            samples: 50,
            churn_samples: 50,
            sample_gap: Duration::from_millis(150),
            edits: 20,
            edit_interval: Duration::from_millis(250),
            throughput_routes: 1000,
            load_secs: 10,
            als_secs: 20,
            reps: 3,
            floor_samples: 50,
            shape_sizes: vec![1000, 5000, 10000, 20000],
            shapes: crate::routeset::Shape::ALL.to_vec(),
            shape_samples: 50,
            shape_samples_largest: 20,
            shape_budget: Duration::from_secs(20),
            load_timeout: Duration::from_secs(180),
            discovery_services: 3000,
            // Minute 2 → 3 (fits the budget). At 16 probes at once, 9,000 Upstreams' first round
            // outlasts it: the figure is then the probing rate, a bound of its own.
            probe_window_from: Duration::from_secs(120),
            probe_window: Duration::from_secs(60),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            sizes: [100, 200, 300],
            translate_runs: 3,
            one_route_runs: 3,
            samples: 5,
            churn_samples: 5,
            sample_gap: Duration::from_millis(100),
            edits: 20,
            edit_interval: Duration::from_millis(100),
            throughput_routes: 100,
            load_secs: 2,
            als_secs: 3,
            reps: 1,
            floor_samples: 5,
            shape_sizes: vec![50, 100],
            shapes: crate::routeset::Shape::ALL.to_vec(),
            shape_samples: 5,
            shape_samples_largest: 5,
            shape_budget: Duration::from_secs(20),
            load_timeout: Duration::from_secs(120),
            discovery_services: 100,
            probe_window_from: Duration::ZERO,
            probe_window: Duration::from_secs(10),
        }
    }

    /// The JSON key of a size: its route count.
    pub fn key(n: usize) -> String {
        n.to_string()
    }
}

/// Figures by contract key, and details beside them.
#[derive(Debug, Default)]
pub struct Report {
    pub values: Map<String, Value>,
    pub details: Map<String, Value>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn set(&mut self, key: &str, value: Value) {
        self.values.insert(key.into(), value);
    }

    /// Sets `key.sub` (an object of figures by size).
    pub fn set_in(&mut self, key: &str, sub: &str, value: Value) {
        let entry = self.values.entry(key).or_insert_with(|| json!({}));
        if let Value::Object(m) = entry {
            m.insert(sub.into(), value);
        }
    }

    /// Sets the value at `path` (objects made as needed), e.g. `key.shape.size`.
    pub fn set_at(&mut self, path: &[&str], value: Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut map = &mut self.values;
        for p in parents {
            let entry = map.entry(*p).or_insert_with(|| json!({}));
            let Value::Object(m) = entry else {
                return;
            };
            map = m;
        }
        map.insert((*last).into(), value);
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.into(), value);
    }

    pub fn error(&mut self, scenario: &str, e: &anyhow::Error) {
        eprintln!("kgw-bench: {scenario} failed: {e:#}");
        self.errors.push(format!("{scenario}: {e:#}"));
    }
}

/// Milliseconds, rounded to microseconds.
pub fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of unsorted samples (0 when empty).
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// `{p50, p99, max}` of samples in ms.
pub fn summary(samples: &[f64]) -> Value {
    json!({
        "p50": round3(percentile(samples, 50.0)),
        "p99": round3(percentile(samples, 99.0)),
        "max": round3(percentile(samples, 100.0)),
        "samples": samples.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}

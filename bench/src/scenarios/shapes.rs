//! Propagation at 1k–20k routes in two shapes (issue 9): routes spread over hostnames (one
//! each), and every route under one hostname (one virtual host of N routes). Per shape one
//! system (Envoy on delta ADS, the chart's default) is grown through the sizes; at each size:
//! - `propagation_ms.<shape>.<n>`: new route file → first 200 ([`propagation::sample_in`]);
//! - `envoy_floor_ads_ms.<shape>.<n>`: the same change pushed over ADS to a fresh Envoy
//!   ([`ads_floor`]), and `ratio_to_floor.<shape>.<n>` = ours / floor (p50 and p99);
//! - `kv_bytes_per_route_change_by_shape.<shape>.<n>` and `xds_bytes_per_route_change_by_shape`:
//!   the bytes one more new route writes to `kgw_proxies` and the controller sends Envoy;
//! - the RSS of our four processes, whose slope over the sizes is `rss_mib_per_1k_routes`
//!   (spread; the one-host slope is under `details`).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use kgw_harness::envoy::XdsProtocol;
use kgw_harness::{Component, write_manifest_atomically};
use serde_json::{Map, Value, json};

use super::fleet::Fleet;
use super::{Plan, Report, ads_floor, growth, percentile, propagation, round3, summary};
use crate::procstat;
use crate::routeset::{self, Shape};

/// Our four processes, by JSON key.
const OURS: [(Component, &str); 4] = [
    (Component::Gateway, "gateway"),
    (Component::Controller, "controller"),
    (Component::Discovery, "discovery"),
    (Component::AccessLog, "access-log"),
];

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    for shape in plan.shapes.iter().copied() {
        let Err(first) = run_shape(plan, shape, report).await else {
            continue;
        };
        if !plan.quick {
            report.error(&format!("propagation {}", shape.key()), &first);
            continue;
        }
        // CI's short run once failed here (no one_host figure after a 120 s wait), and not
        // in 17 runs here, 12 of them beside three busy loops. The failure is kept (with
        // Envoy's view, see `diagnose`) and the shape run once more, so one rare stall does
        // not hide every other figure; a second failure is an error.
        eprintln!("kgw-bench: propagation {} failed, once more: {first:#}", shape.key());
        report.detail(
            &format!("retried_propagation_{}", shape.key()),
            json!(format!("{first:#}")),
        );
        if let Err(e) = run_shape(plan, shape, report).await {
            report.error(&format!("propagation {}", shape.key()), &e);
        }
    }
    Ok(())
}

async fn run_shape(plan: &Plan, shape: Shape, report: &mut Report) -> Result<()> {
    // Envoy on delta ADS, as the chart runs it: a new route sends its one virtual host (VHDS).
    let fleet = Fleet::start_with(
        |dir, _| {
            write_manifest_atomically(dir, "gateway.yaml", &routeset::gateway_yaml())?;
            Ok(())
        },
        |config| config.xds_protocol = XdsProtocol::Delta,
    )
    .await?;
    let key = shape.key();
    let mut loaded = 0;
    // Per size, the current RSS of each of our processes (MiB).
    let mut rss: Vec<(usize, BTreeMap<&str, f64>)> = Vec::new();
    for (i, &n) in plan.shape_sizes.iter().enumerate() {
        let load = growth::grow(&fleet, plan, shape, loaded, n).await?;
        loaded = n;
        report.detail(&format!("load_{key}_{n}"), load);
        // Measured once the load has settled, before the samples add anything.
        match our_rss(&fleet) {
            Ok(m) => rss.push((n, m)),
            Err(e) => report.error(&format!("rss at {n} routes ({key})"), &e),
        }
        let count = if i + 1 == plan.shape_sizes.len() {
            plan.shape_samples_largest
        } else {
            plan.shape_samples
        };
        let budget = Some(plan.shape_budget);
        let size = Plan::key(n);
        let services = routeset::services_for(n);
        let cpu_before = cpu_times(&fleet);
        let ours = propagation::sample_in(&fleet, plan, shape, &format!("new{n}"), count, services, budget).await;
        let ours = match ours {
            Ok(s) => {
                // Where one change's CPU goes: each process's CPU time over the samples
                // (a route added, its first 200, the route removed), per sample.
                if let (Ok(before), Ok(after)) = (&cpu_before, cpu_times(&fleet)) {
                    let per_sample: BTreeMap<&str, f64> = after
                        .iter()
                        .map(|(key, t)| {
                            let spent = t.saturating_sub(before.get(key).copied().unwrap_or_default());
                            (*key, round3(spent.as_secs_f64() * 1000.0 / s.ms.len().max(1) as f64))
                        })
                        .collect();
                    eprintln!("kgw-bench: CPU ms per change at {n} ({key}): {per_sample:?}");
                    report.detail(&format!("cpu_ms_per_change_{key}_{n}"), json!(per_sample));
                }
                eprintln!(
                    "kgw-bench: propagation at {n} ({key}): p50 {} ms, p99 {} ms",
                    percentile(&s.ms, 50.0),
                    percentile(&s.ms, 99.0)
                );
                report.set_at(&["propagation_ms", key, &size], summary(&s.ms));
                report.detail(
                    &format!("propagation_{key}_{n}"),
                    json!({"ms": s.ms, "failures": s.failures, "over_budget": s.over_budget}),
                );
                Some(s.ms)
            }
            Err(e) => {
                report.error(&format!("propagation_ms.{key}.{n}"), &e);
                None
            }
        };
        let floor = match ads_floor::floor(&fleet, plan, shape, n, count, budget).await {
            Ok(s) => {
                eprintln!(
                    "kgw-bench: Envoy floor over ADS at {n} ({key}): p50 {} ms, p99 {} ms",
                    percentile(&s.ms, 50.0),
                    percentile(&s.ms, 99.0)
                );
                report.set_at(&["envoy_floor_ads_ms", key, &size], summary(&s.ms));
                report.detail(
                    &format!("envoy_floor_ads_{key}_{n}"),
                    json!({"ms": s.ms, "failures": s.failures, "over_budget": s.over_budget}),
                );
                Some(s.ms)
            }
            Err(e) => {
                report.error(&format!("envoy_floor_ads_ms.{key}.{n}"), &e);
                None
            }
        };
        // What one new route of this shape writes to NATS and sends to Envoy.
        match growth::bytes_per_route_change_in(&fleet, shape, n).await {
            Ok((kv, xds)) => {
                report.set_at(&["kv_bytes_per_route_change_by_shape", key, &size], json!(kv));
                let xds = json!(xds.values().sum::<u64>());
                report.set_at(&["xds_bytes_per_route_change_by_shape", key, &size], xds);
            }
            Err(e) => report.error(&format!("kv_bytes_per_route_change_by_shape.{key}.{n}"), &e),
        }
        if let (Some(ours), Some(floor)) = (ours, floor) {
            let ratio = |p| round3(percentile(&ours, p) / percentile(&floor, p).max(0.001));
            report.set_at(
                &["ratio_to_floor", key, &size],
                json!({"p50": ratio(50.0), "p99": ratio(99.0)}),
            );
        }
    }
    let slopes = Value::Object(
        OURS.iter()
            .filter_map(|(_, p)| {
                let points: Vec<(f64, f64)> = rss
                    .iter()
                    .filter_map(|(n, m)| Some((*n as f64 / 1000.0, *m.get(p)?)))
                    .collect();
                Some(((*p).to_string(), json!(round3(slope(&points)?))))
            })
            .collect::<Map<String, Value>>(),
    );
    let by_size: Map<String, Value> = rss.iter().map(|(n, m)| (Plan::key(*n), json!(m))).collect();
    report.detail(&format!("rss_mib_{key}"), Value::Object(by_size));
    match shape {
        Shape::Spread => report.set("rss_mib_per_1k_routes", slopes),
        Shape::OneHost => report.detail("rss_mib_per_1k_routes_one_host", slopes),
    }
    Ok(())
}

/// Current resident memory (VmRSS) of each of our four processes, in MiB.
/// The CPU time each process of one change's path has used so far.
fn cpu_times(fleet: &Fleet) -> Result<BTreeMap<&'static str, std::time::Duration>> {
    [
        (Component::Gateway, "gateway"),
        (Component::Controller, "controller"),
        (Component::Nats, "nats-server"),
        (Component::Envoy, "envoy"),
    ]
    .iter()
    .map(|(c, key)| {
        let pid = fleet.system.pid(*c).ok_or_else(|| anyhow!("{c} has no pid"))?;
        Ok((*key, procstat::cpu_time(pid)?))
    })
    .collect()
}

fn our_rss(fleet: &Fleet) -> Result<BTreeMap<&'static str, f64>> {
    OURS.iter()
        .map(|(c, key)| {
            let pid = fleet.system.pid(*c).ok_or_else(|| anyhow!("{c} has no pid"))?;
            Ok((*key, round3(procstat::rss_mib(pid)?)))
        })
        .collect()
}

/// Least-squares slope of `points` (x, y); `None` with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The table's rows of these figures: (figure, measured, goal).
pub fn rows(plan: &Plan, v: &Map<String, Value>, show: impl Fn(Option<f64>) -> String) -> Vec<[String; 3]> {
    let num = |path: &[&str]| -> Option<f64> {
        let (first, rest) = path.split_first()?;
        rest.iter().try_fold(v.get(*first)?, |x, k| x.get(k))?.as_f64()
    };
    let pair = |key: &str, shape: &str, size: &str| {
        format!(
            "{} / {}",
            show(num(&[key, shape, size, "p50"])),
            show(num(&[key, shape, size, "p99"]))
        )
    };
    let mut rows = Vec::new();
    for shape in Shape::ALL {
        let key = shape.key();
        for size in plan.shape_sizes.iter().map(|n| Plan::key(*n)) {
            let floor_p99 = num(&["envoy_floor_ads_ms", key, &size, "p99"]);
            let goal = match shape {
                Shape::Spread => "p50 ≤ 10, p99 ≤ 30".to_string(),
                Shape::OneHost => format!("p99 ≤ 1.5 × floor p99 = {}", show(floor_p99.map(|f| 1.5 * f))),
            };
            rows.push([
                format!("propagation_ms {key} {size} p50/p99"),
                pair("propagation_ms", key, &size),
                goal,
            ]);
            rows.push([
                format!("envoy_floor_ads_ms {key} {size} p50/p99"),
                pair("envoy_floor_ads_ms", key, &size),
                "Envoy's own floor over ADS".into(),
            ]);
            let goal = if shape == Shape::OneHost { "p99 ≤ 1.5" } else { "" };
            rows.push([
                format!("ratio_to_floor {key} {size} p50/p99"),
                pair("ratio_to_floor", key, &size),
                goal.into(),
            ]);
        }
    }
    for (_, p) in OURS {
        rows.push([
            format!("rss_mib_per_1k_routes {p}"),
            show(num(&["rss_mib_per_1k_routes", p])),
            String::new(),
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn slope_is_least_squares() {
        let s = slope(&[(1.0, 12.0), (5.0, 20.0), (10.0, 30.0)]).unwrap();
        assert!((s - 2.0).abs() < 0.01, "{s}");
        assert_eq!(slope(&[(1.0, 3.0)]), None);
        assert_eq!(slope(&[]), None);
    }
}

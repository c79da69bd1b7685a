//! One system grown through the three sizes, Envoy on delta ADS (the chart's default). At
//! each size: `propagation_ms`, `kv_bytes_per_route_change`, `xds_bytes_per_route_change`
//! (also under its earlier name `xds_bytes_per_route_change_delta`). At the mid size (5k)
//! also `propagation_under_churn_ms`, `non_2xx_during_edits` and then `rss_mib`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kgw_harness::{Component, envoy::XdsProtocol, write_manifest_atomically};
use serde_json::{Value, json};

use super::fleet::Fleet;
use super::propagation::{self, Churn};
use super::{Plan, Report, diagnose, edits, percentile, round3, summary};
use crate::procstat;
use crate::routeset::{self, Shape};

/// Rate of the churn: a rewrite every 20 ms, the 50 route edits per second of issue 9's goal.
const CHURN_EVERY: Duration = Duration::from_millis(20);

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let [_, mid, _] = plan.sizes;
    let fleet = Fleet::start_with(
        |dir, _| {
            write_manifest_atomically(dir, "gateway.yaml", &routeset::gateway_yaml())?;
            Ok(())
        },
        |config| config.xds_protocol = XdsProtocol::Delta,
    )
    .await?;
    let mut loaded = 0;
    for n in plan.sizes {
        let load = grow(&fleet, plan, Shape::Spread, loaded, n).await?;
        report.detail(&format!("load_{n}"), load);
        loaded = n;
        let services = routeset::services_for(n);
        match propagation::sample(&fleet, plan, &format!("new{n}"), plan.samples, services).await {
            Ok(s) => {
                eprintln!(
                    "kgw-bench: propagation at {n}: p50 {} ms, max {} ms",
                    percentile(&s.ms, 50.0),
                    percentile(&s.ms, 100.0)
                );
                report.set_in("propagation_ms", &Plan::key(n), summary(&s.ms));
                report.detail(&format!("propagation_{n}"), json!({"ms": s.ms, "failures": s.failures}));
            }
            Err(e) => report.error(&format!("propagation_ms at {n}"), &e),
        }
        match bytes_per_route_change(&fleet, n).await {
            Ok((kv, xds)) => {
                report.set_in("kv_bytes_per_route_change", &Plan::key(n), json!(kv));
                let total = json!(xds.values().sum::<u64>());
                report.set_in("xds_bytes_per_route_change", &Plan::key(n), total.clone());
                report.set_in("xds_bytes_per_route_change_delta", &Plan::key(n), total);
            }
            Err(e) => report.error(&format!("kv_bytes_per_route_change at {n}"), &e),
        }
        if n != mid {
            continue;
        }
        if let Err(e) = churn(&fleet, plan, n, report).await {
            report.error("propagation_under_churn_ms", &e);
        }
        if let Err(e) = edits::run(&fleet, plan, report).await {
            report.error("non_2xx_during_edits", &e);
        }
        match peak_rss(&fleet) {
            Ok((peak, now, file)) => {
                report.set("rss_mib", peak);
                report.detail("rss_now_mib", now);
                report.detail("rss_file_now_mib", file);
            }
            Err(e) => report.error("rss_mib", &e),
        }
    }
    Ok(())
}

/// Adds routes `from..to` of `shape` (and their Services) and waits until a sample of them
/// serves; how long writing and serving took.
pub(super) async fn grow(fleet: &Fleet, plan: &Plan, shape: Shape, from: usize, to: usize) -> Result<Value> {
    let dir = fleet.config_dir();
    let started = Instant::now();
    let services = routeset::services_for(to);
    routeset::write_services(dir, &fleet.backends, routeset::services_for(from), services)?;
    routeset::write_shaped_routes(dir, shape, services, from, to)?;
    let written = started.elapsed();
    let mut names: Vec<String> = (0..20)
        .map(|k| routeset::route_name(from + k * (to - from) / 20))
        .collect();
    names.push(routeset::route_name(to - 1));
    if let Err(e) = fleet
        .poller
        .until_all_200_in(shape, &names, started, plan.load_timeout)
        .await
    {
        let why = diagnose::why_not_served(fleet, 3).await;
        return Err(e.context(format!("{to} routes not served; {why}")));
    }
    let served = started.elapsed();
    eprintln!(
        "kgw-bench: {to} routes ({}) loaded ({} files written in {:.1} s, served after {:.1} s)",
        shape.key(),
        to - from,
        written.as_secs_f64(),
        served.as_secs_f64()
    );
    // Let the last of it (status writes, endpoint pushes) settle before measuring.
    tokio::time::sleep(if plan.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    })
    .await;
    Ok(json!({"files_written_s": round3(written.as_secs_f64()), "served_s": round3(served.as_secs_f64())}))
}

async fn churn(fleet: &Fleet, plan: &Plan, n: usize, report: &mut Report) -> Result<()> {
    let services = routeset::services_for(n);
    let name = routeset::route_name(1);
    let churn = Churn::start(
        fleet.config_dir().to_path_buf(),
        name.clone(),
        routeset::service_of(1, services),
        CHURN_EVERY,
    );
    let started = Instant::now();
    let samples = propagation::sample(fleet, plan, "churn", plan.churn_samples, services).await;
    let rewrites = churn.stop().await?;
    let rate = rewrites as f64 / started.elapsed().as_secs_f64();
    let s = samples?;
    eprintln!(
        "kgw-bench: propagation under churn ({rate:.1} rewrites/s): p50 {} ms, p99 {} ms",
        percentile(&s.ms, 50.0),
        percentile(&s.ms, 99.0)
    );
    report.set(
        "propagation_under_churn_ms",
        json!({"p50": round3(percentile(&s.ms, 50.0)), "p99": round3(percentile(&s.ms, 99.0))}),
    );
    report.detail(
        "propagation_under_churn",
        json!({"ms": s.ms, "failures": s.failures, "routes": n, "rewrites_per_s": round3(rate)}),
    );
    // The churned route back to its plain form.
    write_manifest_atomically(
        fleet.config_dir(),
        &routeset::route_file(&name),
        &routeset::route_yaml(&name, &routeset::service_of(1, services), 0),
    )?;
    Ok(())
}

/// What one new route costs, measured once it serves: the bytes of the values it wrote to
/// bucket `kgw_proxies` (read back from the bucket's stream, by sequence), and the bytes of the xDS responses the controller sent Envoy for it, per type URL.
pub(super) async fn bytes_per_route_change(fleet: &Fleet, n: usize) -> Result<(u64, BTreeMap<String, u64>)> {
    bytes_per_route_change_in(fleet, Shape::Spread, n).await
}

/// [`bytes_per_route_change`] with a new route of `shape`.
pub(super) async fn bytes_per_route_change_in(
    fleet: &Fleet,
    shape: Shape,
    n: usize,
) -> Result<(u64, BTreeMap<String, u64>)> {
    let bucket = kgw_proto::nats::PROXIES_BUCKET;
    let dir = fleet.config_dir().to_path_buf();
    let name = format!("kvbytes{n}");
    // Earlier samples' routes are being removed: wait until the bucket is quiet.
    let mut before = fleet.system.kv_stream_bytes(bucket).await?;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fleet.system.kv_stream_bytes(bucket).await?;
        if now == before {
            break;
        }
        before = now;
    }
    let sequence = fleet.system.kv_last_sequence(bucket).await?;
    let xds_before = xds_response_bytes(fleet).await?;
    let started = std::time::Instant::now();
    write_manifest_atomically(
        &dir,
        &routeset::route_file(&name),
        &routeset::shaped_route_yaml(shape, &name, &routeset::service_of(0, 1), 0),
    )?;
    fleet
        .poller
        .until_200(
            &shape.host(&name),
            &routeset::request_path(&name),
            started,
            Duration::from_secs(30),
        )
        .await?;
    // The KV write comes before the 200 (the controller reads it from there).
    let written = fleet.system.kv_bytes_written_after(bucket, sequence).await?;
    let xds_after = xds_response_bytes(fleet).await?;
    kgw_harness::remove_manifest(&dir, &routeset::route_file(&name))?;
    let xds = xds_after
        .into_iter()
        .map(|(t, after)| {
            let before = xds_before.get(&t).copied().unwrap_or(0);
            (t, after.saturating_sub(before))
        })
        .filter(|(_, bytes)| *bytes > 0)
        .collect();
    Ok((written, xds))
}

/// The controller's `kgw_controller_xds_response_bytes_total`, per type URL (its last
/// path segment, e.g. `envoy.config.route.v3.VirtualHost`).
async fn xds_response_bytes(fleet: &Fleet) -> Result<BTreeMap<String, u64>> {
    let url = fleet
        .system
        .monitoring_url(Component::Controller, "/metrics")
        .ok_or_else(|| anyhow::anyhow!("the controller has no monitoring address"))?;
    let text = kgw_harness::get(&url, None).await?.text();
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("kgw_controller_xds_response_bytes_total{"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let type_url = labels.split('"').nth(1).unwrap_or(labels);
            let short = type_url.rsplit('/').next().unwrap_or(type_url);
            Some((short.to_string(), value.trim().parse::<u64>().ok()?))
        })
        .collect())
}

/// Peak resident memory (VmHWM) of every process of the system, the current, and the
/// current file-backed part (`RssFile`: mostly the binary's own pages), in MiB.
fn peak_rss(fleet: &Fleet) -> Result<(Value, Value, Value)> {
    let (mut peak, mut now, mut file) = (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
    for (c, key) in [
        (Component::Gateway, "gateway"),
        (Component::Controller, "controller"),
        (Component::Discovery, "discovery"),
        (Component::AccessLog, "access-log"),
        (Component::Nats, "nats-server"),
        (Component::Envoy, "envoy"),
    ] {
        let pid = fleet.system.pid(c).ok_or_else(|| anyhow::anyhow!("{c} has no pid"))?;
        peak.insert(key.into(), json!(round3(procstat::peak_rss_mib(pid)?)));
        now.insert(key.into(), json!(round3(procstat::rss_mib(pid)?)));
        file.insert(key.into(), json!(round3(procstat::rss_file_mib(pid)?)));
    }
    Ok((Value::Object(peak), Value::Object(now), Value::Object(file)))
}

//! `bulk_5k_seconds`: a system serving only its Gateway and Services gets the mid-size
//! set of route files at once (each renamed into the config dir from a staging dir on the
//! same filesystem). Measured until every route answers 200 and every HTTPRoute's status
//! (NATS KV `kgw_status`, as `gateway status` reads it) says Accepted.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kgw_common::bus::{self, KvEvent};
use kgw_common::shutdown::Shutdown;
use kgw_harness::write_manifest_atomically;
use kgw_proto::nats::STATUS_BUCKET;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::fleet::Fleet;
use super::{Plan, Report, round3};
use crate::routeset;

const STATUS_PREFIX: &str = "httproute.default.";

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let n = plan.sizes[1];
    let services = routeset::services_for(n);
    let fleet = Fleet::start(|dir, backends| {
        write_manifest_atomically(dir, "gateway.yaml", &routeset::gateway_yaml())?;
        routeset::write_services(dir, backends, 0, services)?;
        write_manifest_atomically(
            dir,
            &routeset::route_file("canary"),
            &routeset::route_yaml("canary", &routeset::service_name(0), 0),
        )
        .map(|_| ())
    })
    .await?;
    fleet
        .poller
        .until_200(
            &routeset::host("canary"),
            &routeset::request_path("canary"),
            Instant::now(),
            plan.load_timeout,
        )
        .await
        .context("the canary route never served")?;
    let names: Vec<String> = (0..n).map(routeset::route_name).collect();
    let (accepted, shutdown) = watch_accepted(&fleet.system, names.clone()).await?;
    tokio::time::sleep(if plan.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    })
    .await;

    // Stage every file, then move them all in.
    let stage = fleet.scratch("stage")?;
    routeset::write_routes(&stage, services, 0, n)?;
    let target = fleet.config_dir().join("routes");
    std::fs::create_dir_all(&target)?;
    let started = Instant::now();
    for name in &names {
        let file = routeset::route_file(name);
        std::fs::rename(stage.join(&file), fleet.config_dir().join(&file))
            .with_context(|| format!("moving {file} into the config dir"))?;
    }
    let moved = started.elapsed();

    // A sample first (the last files moved among them), then every route.
    let mut sample: Vec<String> = (0..50).map(|k| routeset::route_name(k * n / 50)).collect();
    sample.push(routeset::route_name(n - 1));
    let sample_at = fleet.poller.until_all_200(&sample, started, plan.load_timeout).await?;
    let sample_served = sample_at.into_iter().max().unwrap_or_default();
    // One sweep over every route: those serving were served by the time the sample was
    // (the last file moved is in the sample); the others count with the time they first do.
    let sweep = fleet.poller.check_all(&names, started).await?;
    let late: Vec<String> = names
        .iter()
        .zip(&sweep)
        .filter(|(_, at)| at.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let late_at = fleet.poller.until_all_200(&late, started, plan.load_timeout).await?;
    let all_served = late_at.into_iter().max().unwrap_or_default().max(sample_served);
    let accepted_at = wait_accepted(accepted, started, plan.load_timeout).await;
    shutdown.trigger();
    let accepted_at = accepted_at?;
    let total = all_served.max(accepted_at);
    eprintln!(
        "kgw-bench: bulk {n}: served {:.2} s, Accepted {:.2} s",
        all_served.as_secs_f64(),
        accepted_at.as_secs_f64()
    );
    report.set("bulk_5k_seconds", json!(round3(total.as_secs_f64())));
    report.detail(
        "bulk",
        json!({"routes": n, "files_moved_s": round3(moved.as_secs_f64()),
               "sample_served_s": round3(sample_served.as_secs_f64()),
               "late_routes": late.len(),
               "all_accepted_s": round3(accepted_at.as_secs_f64())}),
    );
    Ok(())
}

/// Follows `kgw_status`. The watch holds how many of `names` have an Accepted parent, and
/// when all of them first did.
async fn watch_accepted(
    system: &kgw_harness::System,
    names: Vec<String>,
) -> Result<(watch::Receiver<Accepted>, Shutdown)> {
    let shutdown = Shutdown::new();
    // As the admin (over TLS with the admin's certificate under mTLS).
    let bus = bus::connect(&system.nats_url(), "kgw-bench", &system.admin_nats_auth()?).await?;
    let (tx, mut events) = mpsc::channel(64);
    bus::spawn_kv_mirror(bus, STATUS_BUCKET, tx, shutdown.clone());
    let (state_tx, state) = watch::channel(Accepted::default());
    tokio::spawn(async move {
        let wanted: HashSet<String> = names.into_iter().collect();
        let mut accepted: BTreeMap<String, bool> = BTreeMap::new();
        let update = |accepted: &mut BTreeMap<String, bool>, key: String, value: Option<&[u8]>| {
            let Some(name) = key.strip_prefix(STATUS_PREFIX) else {
                return;
            };
            if wanted.contains(name) {
                accepted.insert(name.to_string(), value.is_some_and(is_accepted));
            }
        };
        while let Some(event) = events.recv().await {
            match event {
                KvEvent::Full(all) => {
                    accepted.clear();
                    for (k, v) in all {
                        update(&mut accepted, k, Some(&v));
                    }
                }
                KvEvent::Put(k, v, _) => update(&mut accepted, k, Some(&v)),
                KvEvent::Delete(k, _) => update(&mut accepted, k, None),
            }
            let count = accepted.values().filter(|a| **a).count();
            state_tx.send_modify(|s| {
                s.count = count;
                if count == wanted.len() && s.all_at.is_none() {
                    s.all_at = Some(Instant::now());
                }
            });
            if state_tx.is_closed() {
                return;
            }
        }
    });
    Ok((state, shutdown))
}

#[derive(Clone, Debug, Default)]
struct Accepted {
    count: usize,
    all_at: Option<Instant>,
}

/// A route's status document (the HTTPRoute as the API server would show it) has a parent
/// whose Accepted is True.
fn is_accepted(yaml: &[u8]) -> bool {
    let Ok(doc) = serde_yaml::from_slice::<serde_yaml::Value>(yaml) else {
        return false;
    };
    let parents = doc.get("status").and_then(|s| s.get("parents"));
    parents
        .and_then(|p| p.as_sequence())
        .into_iter()
        .flatten()
        .any(|parent| {
            parent
                .get("conditions")
                .and_then(|c| c.as_sequence())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("type").and_then(|t| t.as_str()) == Some("Accepted")
                        && c.get("status").and_then(|s| s.as_str()) == Some("True")
                })
        })
}

/// Waits until every wanted route is Accepted; the time from `since` when they all were.
async fn wait_accepted(mut state: watch::Receiver<Accepted>, since: Instant, timeout: Duration) -> Result<Duration> {
    let deadline = since + timeout;
    loop {
        if let Some(at) = state.borrow_and_update().all_at {
            return Ok(at.saturating_duration_since(since));
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { bail!("status watch ended") },
            _ = tokio::time::sleep_until(deadline.into()) => {
                bail!("routes not all Accepted after {timeout:?} ({} are)", state.borrow().count)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_accepted;

    #[test]
    fn reads_accepted_from_route_status() {
        let doc = |status: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: default, generation: 1}}\n\
                 status:\n  parents:\n  - parentRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}\n    \
                 controllerName: kgateway.dev/kgateway\n    conditions:\n    - type: Accepted\n      status: '{status}'\n      \
                 reason: Accepted\n"
            )
        };
        let (yes, no) = (doc("True"), doc("False"));
        let (yes, no) = (yes.as_bytes(), no.as_bytes());
        assert!(is_accepted(yes));
        assert!(!is_accepted(no));
        assert!(!is_accepted(b"not: [yaml"));
    }
}

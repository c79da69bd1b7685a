//! `non_2xx_during_edits`: wrk at full rate on one route while that route's file is edited
//! `plan.edits` times and its Service's endpoints go 3 → 1 → 3 (the removed endpoints keep
//! answering: their echo backends stay up). Every response that is not 2xx counts, and so
//! does every socket error (a request that got no response at all).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kgw_harness::write_manifest_atomically;
use serde_json::json;

use super::fleet::Fleet;
use super::{Plan, Report, round3};
use crate::load::{self, LoadSpec, Target};
use crate::routeset;

const ROUTE: &str = "edited";
const SERVICE: &str = "svc-edited";

pub async fn run(fleet: &Fleet, plan: &Plan, report: &mut Report) -> Result<()> {
    let dir = fleet.config_dir().to_path_buf();
    let b = &fleet.backends;
    let service = |k: usize| routeset::service_yaml(SERVICE, &b.endpoints(0, k), b.port);
    write_manifest_atomically(&dir, &routeset::service_file(SERVICE), &service(3))?;
    write_manifest_atomically(
        &dir,
        &routeset::route_file(ROUTE),
        &routeset::route_yaml(ROUTE, SERVICE, 0),
    )?;
    let host = routeset::host(ROUTE);
    let path = routeset::request_path(ROUTE);
    fleet
        .poller
        .until_200(&host, &path, Instant::now(), plan.load_timeout)
        .await
        .context("the edited route never served")?;
    // Every endpoint in use before the load starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let lead = Duration::from_secs(1);
    let editing = plan.edit_interval * plan.edits as u32;
    let spec = LoadSpec {
        addr: fleet.poller.addr,
        targets: vec![Target { host, path }],
        threads: 1,
        connections: 4,
        duration: lead + editing + Duration::from_secs(2),
        count_non_2xx: true,
    };
    let work = fleet.scratch("edits")?;
    let wrk = tokio::spawn(async move { load::run(&spec, &work).await });
    tokio::time::sleep(lead).await;
    let to_one = plan.edits / 3;
    let back_to_three = 2 * plan.edits / 3;
    for k in 1..=plan.edits {
        write_manifest_atomically(
            &dir,
            &routeset::route_file(ROUTE),
            &routeset::route_yaml(ROUTE, SERVICE, k),
        )?;
        if k == to_one {
            write_manifest_atomically(&dir, &routeset::service_file(SERVICE), &service(1))?;
        }
        if k == back_to_three {
            write_manifest_atomically(&dir, &routeset::service_file(SERVICE), &service(3))?;
        }
        tokio::time::sleep(plan.edit_interval).await;
    }
    let result = wrk.await.context("wrk task")??;
    let bad = result.non_2xx + result.socket_errors();
    eprintln!(
        "kgw-bench: edits under load: {} requests at {:.0} rps, {bad} not 2xx",
        result.requests, result.rps
    );
    report.set("non_2xx_during_edits", json!(bad));
    report.detail(
        "non_2xx_during_edits",
        json!({"requests": result.requests, "rps": round3(result.rps), "non_2xx_responses": result.non_2xx,
               "socket_errors": result.socket_errors(), "route_edits": plan.edits,
               "endpoints": format!("3 → 1 at edit {to_one}, → 3 at edit {back_to_three}"),
               "load_p99_ms": result.p99_ms}),
    );
    Ok(())
}

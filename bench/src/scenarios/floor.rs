//! `envoy_floor_ms`: Envoy's own time to apply a route table, whoever sends it. An Envoy
//! of our own takes its route table from a file (RDS `path_config_source`, watched
//! directory); each sample moves in a new whole table with one more virtual host, and times
//! until the new host first answers 200: the same change our system makes per new route.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::envoy_static::{self, AccessLog, Routes, StaticEnvoy};
use super::fleet::Fleet;
use super::propagation::Samples;
use super::{Plan, Report, ms, percentile, round3};
use crate::routeset;

const SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(fleet: &Fleet, plan: &Plan, report: &mut Report) -> Result<()> {
    for n in [plan.sizes[0], plan.sizes[1]] {
        let s = floor(fleet, plan, n)
            .await
            .with_context(|| format!("floor at {n} routes"))?;
        eprintln!(
            "kgw-bench: Envoy floor at {n}: p50 {} ms, max {} ms",
            percentile(&s.ms, 50.0),
            percentile(&s.ms, 100.0)
        );
        report.set_in(
            "envoy_floor_ms",
            &Plan::key(n),
            json!({"p50": round3(percentile(&s.ms, 50.0)), "max": round3(percentile(&s.ms, 100.0))}),
        );
        report.detail(&format!("envoy_floor_{n}"), json!({"ms": s.ms, "failures": s.failures}));
    }
    Ok(())
}

async fn floor(fleet: &Fleet, plan: &Plan, n: usize) -> Result<Samples> {
    let work = fleet.scratch(&format!("floor-{n}"))?;
    let watched = work.join("rds");
    let staging = work.join("staging");
    std::fs::create_dir_all(&watched)?;
    std::fs::create_dir_all(&staging)?;
    let table = watched.join("routes.json");
    let name = "listener~8080";
    let mut vhosts = envoy_static::virtual_hosts(n);
    let services = routeset::services_for(n);
    let mut version = 0;
    let mut write = |vhosts: &[serde_json::Value]| -> Result<std::path::PathBuf> {
        version += 1;
        let tmp = staging.join(format!("routes-{version}.json"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(&envoy_static::rds_file(name, version, vhosts))?,
        )?;
        Ok(tmp)
    };
    std::fs::rename(write(&vhosts)?, &table)?;
    let ip = fleet.spare_ip(3);
    let (admin, listen) = (
        std::net::SocketAddr::new(ip, 19000),
        std::net::SocketAddr::new(ip, 8080),
    );
    let config = envoy_static::bootstrap(
        admin,
        listen,
        Routes::File {
            path: table.clone(),
            dir: watched.clone(),
        },
        envoy_static::service_clusters(n, &fleet.backends),
        AccessLog::None,
    )?;
    let envoy = StaticEnvoy::start("envoy-floor", &work, &config, listen).await?;
    let poller = super::fleet::Poller::new(envoy.listen);
    let last = routeset::route_name(n - 1);
    poller
        .until_200(
            &routeset::host(&last),
            &routeset::request_path(&last),
            Instant::now(),
            plan.load_timeout,
        )
        .await?;
    let mut out = Samples::default();
    for k in 0..plan.floor_samples {
        let new = format!("floor{n}-{k}");
        vhosts.push(envoy_static::virtual_host(
            &new,
            &routeset::service_of(k * routeset::ROUTES_PER_SERVICE, services),
        ));
        let tmp = write(&vhosts)?;
        tokio::time::sleep(plan.sample_gap).await;
        let started = Instant::now();
        std::fs::rename(&tmp, &table)?;
        match poller
            .until_200(
                &routeset::host(&new),
                &routeset::request_path(&new),
                started,
                SAMPLE_TIMEOUT,
            )
            .await
        {
            Ok(took) => out.ms.push(ms(took)),
            Err(e) => out.failures.push(format!("{e:#}")),
        }
    }
    drop(envoy);
    anyhow::ensure!(!out.ms.is_empty(), "Envoy never served a new route: {:?}", out.failures);
    Ok(out)
}

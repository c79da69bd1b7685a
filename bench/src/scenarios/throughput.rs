//! Envoy at its maximum rate here (wrk over every route of a set, rotating hosts):
//! - `als_*`: with our gRPC access log, entries Envoy reports written (its admin stats) vs
//!   lines our sink wrote, and the sink's CPU;
//! - `envoy_rps_xds` / `envoy_rps_grpc_log`: the system's Envoy, configured by our xDS;
//! - `envoy_rps_static`: the same routes from a static bootstrap, same gRPC access log;
//! - `envoy_rps_file_log`: that static bootstrap with Envoy's own file log instead.
//!
//! The kinds of run alternate, and each figure is the median of its runs. Then the Envoy
//! floor ([`super::floor`]) runs on the same backends.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use kgw_harness::{Component, write_manifest_atomically};
use serde_json::json;

use super::envoy_static::{self, AccessLog, Routes, StaticEnvoy};
use super::fleet::{Fleet, Poller};
use super::{Plan, Report, floor, median, round3};
use crate::load::{self, LoadSpec, Target};
use crate::procstat;
use crate::routeset;

/// wrk's connections: enough to keep one Envoy worker busy.
const CONNECTIONS: u32 = 16;

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let n = plan.throughput_routes;
    let fleet = Fleet::start(|dir, backends| {
        write_manifest_atomically(dir, "gateway.yaml", &routeset::gateway_yaml())?;
        routeset::write_services(dir, backends, 0, routeset::services_for(n))?;
        routeset::write_routes(dir, routeset::services_for(n), 0, n)
    })
    .await?;
    let names: Vec<String> = (0..n).map(routeset::route_name).collect();
    fleet
        .poller
        .until_all_200(&names, Instant::now(), plan.load_timeout)
        .await
        .context("routes of the throughput set")?;
    tokio::time::sleep(Duration::from_secs(if plan.quick { 1 } else { 3 })).await;
    let targets: Vec<Target> = names
        .iter()
        .map(|name| Target {
            host: routeset::host(name),
            path: routeset::request_path(name),
        })
        .collect();
    let work = fleet.scratch("throughput")?;
    let spec = |addr: SocketAddr, secs: u64| LoadSpec {
        addr,
        targets: targets.clone(),
        threads: 1,
        connections: CONNECTIONS,
        duration: Duration::from_secs(secs),
        count_non_2xx: false,
    };

    if let Err(e) = als(&fleet, &spec(fleet.poller.addr, plan.als_secs), &work, report).await {
        report.error("als", &e);
    }

    let sink = AccessLog::Grpc {
        addr: fleet.system.layout().access_log_addr(),
        // The sink takes only clients with a certificate: this Envoy uses the system's.
        sds_dir: fleet.system.pki().map(|pki| pki.dir(kgw_harness::system::mtls::PROXY)),
    };
    let static_envoy = |name: &'static str, ip_n: u8, log: AccessLog| {
        let ip = fleet.spare_ip(ip_n);
        let (admin, listen) = (SocketAddr::new(ip, 19000), SocketAddr::new(ip, 8080));
        let config = envoy_static::bootstrap(
            admin,
            listen,
            Routes::Inline(envoy_static::virtual_hosts(n)),
            envoy_static::service_clusters(n, &fleet.backends),
            log,
        );
        let work = work.clone();
        async move { StaticEnvoy::start(name, &work, &config?, listen).await }
    };
    let grpc = static_envoy("envoy-static-grpc", 1, sink).await?;
    let file = static_envoy(
        "envoy-static-file",
        2,
        AccessLog::File(work.join("envoy-file-access.log")),
    )
    .await?;
    for envoy in [&grpc, &file] {
        Poller::new(envoy.listen)
            .until_all_200(&names, Instant::now(), plan.load_timeout)
            .await
            .with_context(|| format!("{} serving the set", envoy.process.name()))?;
    }
    let (mut xds, mut stat, mut filelog) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        xds.push(load::run(&spec(fleet.poller.addr, plan.load_secs), &work).await?.rps);
        stat.push(load::run(&spec(grpc.listen, plan.load_secs), &work).await?.rps);
        filelog.push(load::run(&spec(file.listen, plan.load_secs), &work).await?.rps);
    }
    drop((grpc, file));
    let (x, s, f) = (round3(median(&xds)), round3(median(&stat)), round3(median(&filelog)));
    eprintln!("kgw-bench: rps over {n} routes: xDS {x:.0}, static {s:.0}, static with file log {f:.0}");
    report.set("envoy_rps_xds", json!(x));
    report.set("envoy_rps_grpc_log", json!(x));
    report.set("envoy_rps_static", json!(s));
    report.set("envoy_rps_file_log", json!(f));
    report.detail(
        "envoy_rps",
        json!({"routes": n, "seconds_per_run": plan.load_secs, "connections": CONNECTIONS,
               "xds_runs": xds, "static_runs": stat, "file_log_runs": filelog,
               "static_over_xds": round3(if s > 0.0 { x / s } else { 0.0 }),
               "grpc_log_over_file_log": round3(if f > 0.0 { x / f } else { 0.0 })}),
    );

    if let Err(e) = floor::run(&fleet, plan, report).await {
        report.error("envoy_floor_ms", &e);
    }
    Ok(())
}

/// One run at full rate; then waits for the sink to write what Envoy sent.
async fn als(fleet: &Fleet, spec: &LoadSpec, work: &Path, report: &mut Report) -> Result<()> {
    let admin = fleet.system.admin_url("/stats?filter=grpc_access_log");
    let sink_pid = fleet
        .system
        .pid(Component::AccessLog)
        .ok_or_else(|| anyhow!("no access-log pid"))?;
    let mut lines = LineCounter::new(fleet.system.access_log_path());
    // Entries of earlier requests (Envoy flushes its buffer every second) land first.
    let lines0 = settle(&mut lines).await?;
    let (written0, dropped0) = als_stats(&admin).await?;
    let cpu0 = procstat::cpu_time(sink_pid)?;
    let started = Instant::now();
    let result = load::run(spec, work).await?;
    let (written1, dropped1) = als_stats(&admin).await?;
    let (sent, dropped) = (written1.saturating_sub(written0), dropped1.saturating_sub(dropped0));
    // Wait for the sink to catch up (or to stop making progress for 3 s).
    let (mut last, mut progress) = (lines.count()?, Instant::now());
    while last.saturating_sub(lines0) < sent + dropped && progress.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = lines.count()?;
        if now > last {
            (last, progress) = (now, Instant::now());
        }
    }
    let drained = started.elapsed();
    let cpu = procstat::cpu_time(sink_pid)?.saturating_sub(cpu0);
    let wrote = last.saturating_sub(lines0);
    let lost = (sent + dropped).saturating_sub(wrote);
    let cores = cpu.as_secs_f64() / result.seconds.max(0.001);
    eprintln!(
        "kgw-bench: ALS at {:.0} rps: Envoy sent {sent} (dropped {dropped}), sink wrote {wrote}, {cores:.2} core",
        result.rps
    );
    report.set("als_entries_sent", json!(sent));
    report.set("als_entries_lost", json!(lost));
    report.set("als_rps", json!(round3(result.rps)));
    report.set("als_sink_cores", json!(round3(cores)));
    report.detail(
        "als",
        json!({"requests": result.requests, "load_seconds": round3(result.seconds),
               "envoy_logs_written": sent, "envoy_logs_dropped": dropped, "sink_lines": wrote,
               "sink_cpu_seconds": round3(cpu.as_secs_f64()), "drained_after_s": round3(drained.as_secs_f64()),
               "non_2xx": result.non_2xx, "socket_errors": result.socket_errors()}),
    );
    Ok(())
}

/// The line count once it has not changed for 1.5 s (at most 15 s).
async fn settle(lines: &mut LineCounter) -> Result<u64> {
    let started = Instant::now();
    let (mut last, mut since) = (lines.count()?, Instant::now());
    while since.elapsed() < Duration::from_millis(1500) && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = lines.count()?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(last)
}

/// Envoy's gRPC access-log counters: (logs_written, logs_dropped), summed over loggers.
async fn als_stats(url: &str) -> Result<(u64, u64)> {
    let text = kgw_harness::get(url, None).await?.text();
    let (mut written, mut dropped, mut found) = (0, 0, false);
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        if name.ends_with(".logs_written") {
            (written, found) = (written + value, true);
        } else if name.ends_with(".logs_dropped") {
            dropped += value;
        }
    }
    if !found {
        return Err(anyhow!(
            "Envoy's stats have no grpc_access_log logs_written counter:\n{text}"
        ));
    }
    Ok((written, dropped))
}

/// Counts the lines of a growing file, reading only what was appended since last time.
struct LineCounter {
    path: PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCounter {
    fn new(path: PathBuf) -> Self {
        LineCounter {
            path,
            offset: 0,
            lines: 0,
        }
    }

    fn count(&mut self) -> Result<u64> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.path.display())),
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let got = f.read(&mut buf)?;
            if got == 0 {
                return Ok(self.lines);
            }
            self.offset += got as u64;
            self.lines += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
}

//! Issue 11's scale keys: the `discovery` binary alone against a real nats-server, with
//! 3,000 Services (3 ports and 3 endpoints each: 9,000 Upstreams) whose endpoints refuse
//! connections, so every function-discovery probe fails fast and is backed off.
//! - `uds_3k_services_seconds`: cold start → every Upstream key in `kgw_upstreams`;
//! - `fds_probes_per_minute_idle`: ProbeStatus writes per minute once the first round is
//!   done (full: minute 2 → 3 after the start; quick: 10 s after the first round);
//! - `discovery_rss_mib`: VmRSS at the end of that window;
//! - `uds_writes_on_restart`: SIGTERM, start again, healthy + 3 s: new Upstream writes;
//! - `discovery_failover_seconds`: two more replicas join; kill -9 of shard 0's owner →
//!   every shard leased to a live replica.
//!
//! No Envoy or other process: none of these figures involves them. The broker is open
//! and plain text and discovery runs `--insecure-no-mtls` (simpler; the work measured is
//! discovery's own, and the other scenarios run the system with users and mTLS).

mod replicas;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream;
use kgw_harness::{Component, System, SystemConfig, write_manifest_atomically};
use kgw_proto::nats::{DISCOVERY_PROBES_BUCKET, DISCOVERY_SHARDS, DISCOVERY_SHARDS_BUCKET, UPSTREAMS_BUCKET};
use serde_json::{Map, Value, json};

use super::{Plan, Report, round3};
use crate::procstat;
use replicas::{Leases, Replicas, even_shares, stream_state, until_keys};

/// Ports (so Upstreams) and endpoints per Service.
const PORTS: u16 = 3;
const ENDPOINTS: u8 = 3;
/// After the restart's health file: time for any write it would make.
const SETTLE: Duration = Duration::from_secs(3);
/// No probe write for this long: the first round is over (quick: the next is 30 s away).
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for the failover (the goal is 10 s).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let services = plan.discovery_services;
    let upstreams = services as u64 * u64::from(PORTS);
    let system = System::start(SystemConfig {
        components: vec![Component::Nats],
        nats_auth: false,
        mtls: false,
        ..Default::default()
    })
    .await?;
    let layout = system.layout().clone();
    // Backend addresses of our own block, with no echo backend started: connections are
    // refused at once.
    let refused: Vec<SocketAddr> = (1..=ENDPOINTS).map(|n| layout.backend(n)).collect();
    let config = system.config_dir().to_path_buf();
    for i in 0..services {
        write_manifest_atomically(&config, &format!("services/svc-{i}.yaml"), &service_yaml(i, &refused))?;
    }
    let js = jetstream::new(system.nats_client().await?);
    let mut replicas = Replicas::new(&config, &layout.nats_url(), system.run_dir());

    let started = Instant::now();
    replicas.add()?;
    let cold = until_keys(&js, UPSTREAMS_BUCKET, upstreams, started, plan.load_timeout)
        .await
        .with_context(|| replicas.logs())?;
    let state = stream_state(&js, UPSTREAMS_BUCKET).await?;
    eprintln!(
        "kgw-bench: discovery cold start: {upstreams} Upstreams of {services} Services in {:.2} s",
        cold.as_secs_f64()
    );
    report.set("uds_3k_services_seconds", json!(round3(cold.as_secs_f64())));
    report.detail(
        "uds_cold_start",
        json!({"services": services, "upstreams": upstreams, "messages": state.messages}),
    );

    // Discovery's CPU while it probes: says whether probing is bound by CPU or by waiting.
    let pid = replicas.pid(0)?;
    let cpu_before = (Instant::now(), procstat::cpu_time(pid)?);
    match idle_probes(&js, plan, upstreams, started).await {
        Ok((per_minute, mut details)) => {
            let cpu = procstat::cpu_time(pid)?.saturating_sub(cpu_before.1);
            details["cpu_cores"] = json!(round3(cpu.as_secs_f64() / cpu_before.0.elapsed().as_secs_f64()));
            eprintln!("kgw-bench: discovery idle probes: {per_minute:.0} per minute");
            report.set("fds_probes_per_minute_idle", json!(round3(per_minute)));
            report.detail("fds_probes", details);
        }
        Err(e) => report.error("fds_probes_per_minute_idle", &e.context(replicas.logs())),
    }
    match procstat::rss_mib(pid).and_then(|rss| Ok((rss, procstat::peak_rss_mib(pid)?))) {
        Ok((rss, peak)) => {
            report.set("discovery_rss_mib", json!(round3(rss)));
            report.detail("discovery_rss_peak_mib", json!(round3(peak)));
        }
        Err(e) => report.error("discovery_rss_mib", &e),
    }
    match writes_on_restart(&js, &mut replicas).await {
        Ok((writes, details)) => {
            report.set("uds_writes_on_restart", json!(writes));
            report.detail("uds_restart", details);
        }
        Err(e) => report.error("uds_writes_on_restart", &e.context(replicas.logs())),
    }
    match failover(&js, &mut replicas).await {
        Ok((took, details)) => {
            eprintln!("kgw-bench: discovery failover in {:.2} s", took.as_secs_f64());
            report.set("discovery_failover_seconds", json!(round3(took.as_secs_f64())));
            report.detail("discovery_failover", details);
        }
        Err(e) => report.error("discovery_failover_seconds", &e.context(replicas.logs())),
    }
    // The replicas stop before the broker.
    drop(replicas);
    drop(system);
    Ok(())
}

/// Service `svc-<i>`: ports 80, 81, 82; an EndpointSlice of the `refused` addresses, the
/// slice's port `k` on `refused[k]`'s port.
fn service_yaml(i: usize, refused: &[SocketAddr]) -> String {
    let ports: String = (0..PORTS)
        .map(|k| {
            let target = refused[usize::from(k) % refused.len()].port();
            format!("  - {{name: http-{k}, port: {}, targetPort: {target}}}\n", 80 + k)
        })
        .collect();
    let slice_ports: String = (0..PORTS)
        .map(|k| {
            let target = refused[usize::from(k) % refused.len()].port();
            format!("- {{name: http-{k}, port: {target}}}\n")
        })
        .collect();
    let endpoints: String = refused
        .iter()
        .map(|a| format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n", a.ip()))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: default}}
spec:
  ports:
{ports}---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i}-1
  namespace: default
  labels: {{kubernetes.io/service-name: svc-{i}}}
addressType: IPv4
ports:
{slice_ports}endpoints:
{endpoints}"
    )
}

/// Probe writes (messages on `KV_kgw_discovery_probes`) per minute over the window of
/// `probe_window`: from `probe_window_from` after the start (full: minute 2 → 3, whether or
/// not the first round is over: with 9,000 Upstreams it may not be, and writes never
/// pause), or when zero (quick) from the end of the first round: every Upstream has a
/// ProbeStatus and none was written for [`QUIET`] (each gets one before its first probe,
/// and one per probe). The bound the quick test asserts: one probe per Upstream per
/// minute, `bound_per_minute` (after its first failure an Upstream waits 30 s, then 60 s,
/// 120 s, ...: from then on it is probed at most once in any minute).
async fn idle_probes(js: &jetstream::Context, plan: &Plan, upstreams: u64, started: Instant) -> Result<(f64, Value)> {
    // (seconds since the start, last sequence), every 5 s.
    let mut series: Vec<(f64, u64)> = Vec::new();
    let mut changed = (Duration::ZERO, 0);
    let mut quiet: Option<(Duration, u64)> = None;
    let mut from: Option<(Duration, u64)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = started.elapsed();
        let state = stream_state(js, DISCOVERY_PROBES_BUCKET).await;
        let (seq, keys) = state.as_ref().map_or((0, 0), |s| (s.last_sequence, s.subjects_count));
        if series.last().is_none_or(|(t, _)| now.as_secs_f64() - t >= 5.0) {
            series.push((round3(now.as_secs_f64()), seq));
        }
        if seq != changed.1 {
            changed = (now, seq);
        }
        if quiet.is_none() && keys >= upstreams && now >= changed.0 + QUIET {
            quiet = Some(changed);
        }
        let start = match plan.probe_window_from.is_zero() {
            true => quiet.is_some(),
            false => keys >= upstreams && now >= plan.probe_window_from,
        };
        match from {
            None if start => from = Some((now, seq)),
            Some((t0, s0)) if now >= t0 + plan.probe_window => {
                series.push((round3(now.as_secs_f64()), seq));
                let secs = (now - t0).as_secs_f64();
                let per_minute = (seq - s0) as f64 * 60.0 / secs;
                let details = json!({
                    "first_round_quiet_s": quiet.map(|(t, _)| round3(t.as_secs_f64())),
                    "first_round_writes": quiet.map(|(_, w)| w),
                    "window_s": [round3(t0.as_secs_f64()), round3(now.as_secs_f64())],
                    "probes_in_window": seq - s0,
                    "bound_per_minute": upstreams,
                    "by_minute": by_minute(&series),
                    "series_s_seq": series,
                });
                return Ok((per_minute, details));
            }
            None if now > plan.load_timeout + plan.probe_window_from => {
                bail!("no probe window after {now:?}: {keys} of {upstreams} ProbeStatus keys; series {series:?}");
            }
            _ => {}
        }
    }
}

/// Probes in each whole minute since the start, from the series (sampled every 5 s).
fn by_minute(series: &[(f64, u64)]) -> Vec<u64> {
    let at = |t: f64| series.iter().find(|(s, _)| *s >= t).map(|(_, seq)| *seq);
    (0..)
        .map_while(|m| Some(at(60.0 * f64::from(m + 1))? - at(60.0 * f64::from(m))?))
        .collect()
}

/// SIGTERM replica 0, start it again, wait for its health file, then [`SETTLE`]: the
/// writes to `kgw_upstreams` meanwhile (and, in the details, to the probes' bucket).
async fn writes_on_restart(js: &jetstream::Context, replicas: &mut Replicas) -> Result<(u64, Value)> {
    let upstreams_before = stream_state(js, UPSTREAMS_BUCKET).await?.last_sequence;
    let probes_before = stream_state(js, DISCOVERY_PROBES_BUCKET).await?.last_sequence;
    let started = Instant::now();
    replicas.restart(0).await?;
    let healthy = replicas.until_healthy(0, Duration::from_secs(60)).await?;
    tokio::time::sleep(SETTLE).await;
    replicas.check(0)?;
    let writes = stream_state(js, UPSTREAMS_BUCKET).await?.last_sequence - upstreams_before;
    let probes = stream_state(js, DISCOVERY_PROBES_BUCKET).await?.last_sequence - probes_before;
    eprintln!("kgw-bench: discovery restart: {writes} Upstream writes ({probes} probe writes)");
    let details = json!({
        "stop_to_healthy_s": round3((started.elapsed() - SETTLE).as_secs_f64()),
        "healthy_after_start_s": round3(healthy.as_secs_f64()),
        "settle_s": SETTLE.as_secs(),
        "probe_writes": probes,
    });
    Ok((writes, details))
}

/// Two more replicas join replica 0; once the shards are shared evenly, kill -9 the owner
/// of shard 0: the time until every shard is leased to one of the two left.
async fn failover(js: &jetstream::Context, replicas: &mut Replicas) -> Result<(Duration, Value)> {
    let shards = DISCOVERY_SHARDS;
    let store = js.get_key_value(DISCOVERY_SHARDS_BUCKET).await?;
    replicas.add()?;
    replicas.add()?;
    let want = even_shares(usize::from(shards), 3);
    let joining = Instant::now();
    let mut leases = Leases::read(&store).await?;
    while !(leases.members.len() == 3 && leases.owners.len() == usize::from(shards) && leases.shares() == want) {
        if joining.elapsed() > Duration::from_secs(60) {
            bail!("shards not shared {want:?} after 60 s: {leases:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        leases = Leases::read(&store).await?;
    }
    let joined = joining.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leases = Leases::read(&store).await?;
    let dead = leases
        .owners
        .get(&0)
        .cloned()
        .ok_or_else(|| anyhow!("shard 0 has no owner"))?;
    let victim = replicas
        .by_name(&dead)
        .ok_or_else(|| anyhow!("shard 0's owner {dead} is none of ours"))?;
    let live: Vec<String> = leases.members.iter().filter(|m| **m != dead).cloned().collect();
    let writes_before = stream_state(js, UPSTREAMS_BUCKET).await?.last_sequence;
    let killed = Instant::now();
    replicas.procs[victim].kill9()?;
    let mut after = Leases::read(&store).await?;
    while !after.all_owned_by(shards, &live) {
        if killed.elapsed() > FAILOVER_TIMEOUT {
            bail!("shards not all owned by {live:?} after {FAILOVER_TIMEOUT:?}: {after:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = Leases::read(&store).await?;
    }
    let took = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = stream_state(js, UPSTREAMS_BUCKET).await?.last_sequence - writes_before;
    let mut rss = Map::new();
    for n in (0..replicas.procs.len()).filter(|n| *n != victim) {
        rss.insert(
            format!("discovery-{n}"),
            json!(round3(procstat::rss_mib(replicas.pid(n)?)?)),
        );
    }
    let details = json!({
        "join_to_even_shares_s": round3(joined.as_secs_f64()),
        "shards_of_victim": leases.owners.values().filter(|o| **o == dead).count(),
        "shares_after": after.shares(),
        "upstream_writes_during_handover": writes,
        "rss_mib_after": rss,
    });
    Ok((took, details))
}

/// The table rows of these keys (`details` for the probes by minute).
pub fn rows(
    v: &Map<String, Value>,
    details: &Map<String, Value>,
    show: impl Fn(Option<f64>) -> String,
) -> Vec<[String; 3]> {
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let probes = details.get("fds_probes");
    let by_minute: Vec<String> = probes
        .and_then(|p| p.get("by_minute")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|m| show(m.as_f64()))
        .collect();
    let window = probes
        .and_then(|p| p.get("window_s")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|t| show(t.as_f64()))
        .collect::<Vec<_>>()
        .join("–");
    let bound = show(probes.and_then(|p| p.get("bound_per_minute")?.as_f64()));
    let row = |key: &str, what: String, goal: String| [what, show(num(key)), goal];
    vec![
        row(
            "uds_3k_services_seconds",
            "uds_3k_services_seconds".into(),
            "≤ 3 s".into(),
        ),
        row("uds_writes_on_restart", "uds_writes_on_restart".into(), "0".into()),
        row(
            "fds_probes_per_minute_idle",
            match by_minute.is_empty() {
                true => format!("fds_probes_per_minute_idle (window {window} s)"),
                false => format!(
                    "fds_probes_per_minute_idle (window {window} s; by minute {})",
                    by_minute.join(" / ")
                ),
            },
            format!("≤ {bound} (one per Upstream) per minute, falling"),
        ),
        row(
            "discovery_rss_mib",
            "discovery_rss_mib".into(),
            "≤ 40 MiB per replica".into(),
        ),
        row(
            "discovery_failover_seconds",
            "discovery_failover_seconds".into(),
            "≤ 10 s".into(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_by_minute() {
        let series: Vec<(f64, u64)> = (0..=26u32).map(|i| (f64::from(i) * 5.0, u64::from(i) * 10)).collect();
        // 0 → 60 s: 120 probes; 60 → 120 s: 120; the series ends at 130 s.
        assert_eq!(by_minute(&series), [120, 120]);
    }

    #[test]
    fn service_has_three_ports_and_endpoints() {
        let refused: Vec<SocketAddr> = ["127.9.9.10:9001", "127.9.9.11:9002", "127.9.9.12:9003"]
            .map(|a| a.parse().unwrap())
            .to_vec();
        let yaml = service_yaml(7, &refused);
        assert_eq!(yaml.matches("targetPort").count(), 3);
        assert_eq!(yaml.matches("addresses").count(), 3);
        assert!(yaml.contains("name: svc-7-1"));
    }
}

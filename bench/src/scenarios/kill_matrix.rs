//! `kill_matrix`: under steady load through Envoy, each of our processes and nats-server is
//! killed with SIGKILL and started again at once (as a kubelet restarts a container); per
//! victim: responses that were not 2xx, socket errors, access-log entries lost (requests
//! wrk completed minus the distinct entries for them in the access-log stream, with two
//! sink replicas), and seconds from the kill until a route written right after it serves.
//! Goals: 0, 0, 0 and ≤ 2 s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt as _;
use kgw_harness::{Component, System, write_manifest_atomically};
use kgw_proto::nats::ACCESS_LOG_STREAM;
use serde_json::json;

use super::fleet::Fleet;
use super::{Plan, Report, round3};
use crate::load::{self, LoadSpec, Target};
use crate::routeset;

const LOADED: &str = "steady";
const SERVICE: &str = "svc-steady";
/// Load before the kill, and after it.
const LEAD: Duration = Duration::from_secs(2);
const TAIL: Duration = Duration::from_secs(6);
/// Time for the sinks to flush what Envoy sent last (Envoy buffers up to its flush interval).
const SETTLE: Duration = Duration::from_secs(4);

const VICTIMS: [Component; 5] = [
    Component::Controller,
    Component::Gateway,
    Component::Discovery,
    Component::AccessLog,
    Component::Nats,
];

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let fleet = Fleet::start_with(
        |dir, backends| {
            write_manifest_atomically(dir, "gateway.yaml", &routeset::gateway_yaml())?;
            write_manifest_atomically(
                dir,
                &routeset::service_file(SERVICE),
                &routeset::service_yaml(SERVICE, &backends.ips, backends.port),
            )?;
            write_manifest_atomically(
                dir,
                &routeset::route_file(LOADED),
                &routeset::route_yaml(LOADED, SERVICE, 0),
            )?;
            Ok(())
        },
        |config| config.access_log_replicas = 2,
    )
    .await?;
    let mut fleet = fleet;
    let host = routeset::host(LOADED);
    fleet
        .poller
        .until_200(
            &host,
            &routeset::request_path(LOADED),
            Instant::now(),
            plan.load_timeout,
        )
        .await
        .context("the loaded route never served")?;
    for victim in VICTIMS {
        let figures = one(&mut fleet, victim, plan)
            .await
            .with_context(|| format!("killing {}", victim.name()))?;
        eprintln!("kgw-bench: kill -9 {}: {figures}", victim.name());
        report.set_in("kill_matrix", victim.name(), figures);
    }
    Ok(())
}

async fn one(fleet: &mut Fleet, victim: Component, plan: &Plan) -> Result<serde_json::Value> {
    let host = routeset::host(LOADED);
    let start_sequence = last_sequence(&fleet.system).await? + 1;
    let spec = LoadSpec {
        addr: fleet.poller.addr,
        targets: vec![Target {
            host: host.clone(),
            path: routeset::request_path(LOADED),
        }],
        threads: 1,
        connections: 4,
        duration: LEAD + TAIL,
        count_non_2xx: true,
    };
    let work = fleet.scratch(&format!("kill-{}", victim.name()))?;
    let wrk = tokio::spawn(async move { load::run(&spec, &work).await });
    tokio::time::sleep(LEAD).await;

    let killed = Instant::now();
    fleet.system.kill9(victim)?;
    let fresh = format!("after-{}", victim.name());
    write_manifest_atomically(
        fleet.config_dir(),
        &routeset::route_file(&fresh),
        &routeset::route_yaml(&fresh, SERVICE, 0),
    )?;
    fleet.system.restart(victim).await?;
    let live = fleet
        .poller
        .until_200(
            &routeset::host(&fresh),
            &routeset::request_path(&fresh),
            killed,
            plan.load_timeout,
        )
        .await?;

    let load = wrk.await??;
    tokio::time::sleep(SETTLE).await;
    let logged = entries_for(&fleet.system, start_sequence, &host).await?;
    let completed = load.requests;
    Ok(json!({
        "requests": completed,
        "non_2xx": load.non_2xx,
        "socket_errors": load.socket_errors(),
        "access_log_entries": logged,
        "access_log_lost": completed.saturating_sub(logged),
        "new_route_live_s": round3(live.as_secs_f64()),
    }))
}

async fn last_sequence(system: &System) -> Result<u64> {
    let client = system.nats_client().await?;
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(ACCESS_LOG_STREAM)
        .await
        .context("the access-log stream")?;
    Ok(stream.info().await?.state.last_sequence)
}

/// Distinct entries (by request id) for `host` in the access-log stream from `start`.
async fn entries_for(system: &System, start: u64, host: &str) -> Result<u64> {
    let client = system.nats_client().await?;
    let stream = async_nats::jetstream::new(client)
        .get_stream(ACCESS_LOG_STREAM)
        .await
        .context("the access-log stream")?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut ids = std::collections::BTreeSet::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(3), messages.next()).await;
        let Ok(Some(message)) = next else { break };
        let message = message?;
        let line: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
        if line["authority"] == host {
            ids.insert(line["request_id"].as_str().unwrap_or_default().to_string());
        }
        if message.info().map(|i| i.pending).unwrap_or(0) == 0 {
            break;
        }
    }
    Ok(ids.len() as u64)
}

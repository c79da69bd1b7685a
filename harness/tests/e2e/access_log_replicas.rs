//! Access logs without loss: two access-log sink replicas, Envoy sending every entry to
//! both, steady load through Envoy, one replica killed (`kill -9`) or stopped (SIGTERM) in
//! the middle. Every request Envoy answered is in the JetStream stream `kgw_access_log`
//! exactly once: none lost, none twice.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kgw_harness::{Component, System, SystemConfig, wait_status, write_manifest_atomically};
use kgw_proto::nats::ACCESS_LOG_STREAM;

use crate::support::{WAIT, route_yaml, start_with};

/// Concurrent clients, each on its own keep-alive connection.
const CLIENTS: usize = 4;

/// Two sink replicas, route `/a` to an echo backend, serving.
async fn two_sinks() -> Result<crate::support::Running> {
    let running = start_with(
        &["echo"],
        SystemConfig {
            access_log_replicas: 2,
            ..Default::default()
        },
    )
    .await?;
    let dir = running.system.config_dir().to_path_buf();
    write_manifest_atomically(&dir, "a.yaml", &route_yaml("a", "/a", &[("echo", 1)]))?;
    wait_status(&running.system.url("/a"), None, 200, WAIT).await?;
    Ok(running)
}

/// Clients sending GET `/a/<client>/<n>` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Result<Answered>>>,
    started: Instant,
}

#[derive(Default)]
struct Answered {
    /// Paths of the requests answered 200.
    ok: Vec<String>,
    /// Requests answered with another status, or not answered (connection error, timeout).
    failed: u64,
}

impl Load {
    fn start(system: &System) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let base = system.url("");
        let clients = (0..CLIENTS)
            .map(|c| {
                let stop = stop.clone();
                let base = base.clone();
                tokio::spawn(async move {
                    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
                    let mut answered = Answered::default();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!("/a/{c}/{n}");
                        n += 1;
                        let uri: hyper::Uri = format!("{base}{path}").parse()?;
                        let response = tokio::time::timeout(Duration::from_secs(5), async {
                            let response = client.get(uri).await?;
                            let status = response.status();
                            response.into_body().collect().await?;
                            anyhow::Ok(status)
                        })
                        .await;
                        match response {
                            Ok(Ok(status)) if status.as_u16() == 200 => answered.ok.push(path),
                            _ => answered.failed += 1,
                        }
                    }
                    Ok(answered)
                })
            })
            .collect();
        Load {
            stop,
            clients,
            started: Instant::now(),
        }
    }

    async fn finish(self) -> Result<(Answered, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Answered::default();
        for client in self.clients {
            let answered = client.await??;
            all.ok.extend(answered.ok);
            all.failed += answered.failed;
        }
        Ok((all, self.started.elapsed()))
    }
}

/// Envoy's count of completed downstream requests on its listeners (not admin).
async fn envoy_completed(system: &System) -> Result<u64> {
    let text = kgw_harness::get(&system.admin_url("/stats?filter=downstream_rq_completed"), None)
        .await?
        .text();
    let mut total = 0;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        if name.starts_with("http.") && !name.starts_with("http.admin.") && name.ends_with(".downstream_rq_completed") {
            total += value.trim().parse::<u64>().with_context(|| line.to_string())?;
        }
    }
    Ok(total)
}

/// Envoy's gRPC access-logger counters (`logs_written`, `logs_dropped`), for the record.
async fn envoy_als_stats(system: &System) -> Result<String> {
    let text = kgw_harness::get(&system.admin_url("/stats?filter=grpc_access_log"), None)
        .await?
        .text();
    Ok(text.lines().collect::<Vec<_>>().join(", "))
}

/// Per access-log replica: the lines in its file and its publish counters.
async fn replica_figures(system: &System) -> Result<Vec<(Component, usize, String)>> {
    let mut out = Vec::new();
    for c in system.access_log_components() {
        let i = c.access_log_replica().unwrap_or(0);
        let lines = std::fs::read_to_string(system.access_log_replica_path(i))
            .unwrap_or_default()
            .lines()
            .count();
        let url = system.monitoring_url(c, "/metrics").context("monitoring")?;
        let counters = match kgw_harness::get(&url, None).await {
            Ok(response) => response
                .text()
                .lines()
                .filter(|l| {
                    [
                        "publishes_sent_total",
                        "publishes_duplicate_total",
                        "publish_retries_total",
                    ]
                    .iter()
                    .any(|m| l.starts_with(&format!("kgw_access_log_{m}")))
                        || (l.starts_with("kgw_access_log_publishes_dropped_total") && !l.ends_with(" 0"))
                })
                .map(|l| l.trim_start_matches("kgw_access_log_").to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => "not running".into(),
        };
        out.push((c, lines, counters));
    }
    Ok(out)
}

async fn stream_messages(system: &System) -> Result<u64> {
    let js = async_nats::jetstream::new(system.nats_client().await?);
    let mut stream = js.get_stream(ACCESS_LOG_STREAM).await?;
    Ok(stream.info().await?.state.messages)
}

/// What the stream holds: the count of each `path` and of each `request_id` (Envoy's
/// x-request-id, one per request).
struct Stored {
    paths: BTreeMap<String, u64>,
    request_ids: BTreeMap<String, u64>,
    entries: u64,
}

async fn stream_entries(system: &System) -> Result<Stored> {
    let js = async_nats::jetstream::new(system.nats_client().await?);
    let mut stream = js.get_stream(ACCESS_LOG_STREAM).await?;
    let total = stream.info().await?.state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let mut stored = Stored {
        paths: BTreeMap::new(),
        request_ids: BTreeMap::new(),
        entries: total,
    };
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("reading the stream")?
            .context("the stream ended")??;
        let line: serde_json::Value = serde_json::from_slice(&message.payload)?;
        let path = line["path"].as_str().unwrap_or_default().to_string();
        *stored.paths.entry(path).or_insert(0) += 1;
        let request_id = line["request_id"].as_str().unwrap_or_default().to_string();
        *stored.request_ids.entry(request_id).or_insert(0) += 1;
    }
    Ok(stored)
}

/// After the load: waits until the stream holds as many entries as Envoy completed
/// requests (and stays so), then compares entry by entry.
async fn check_no_loss(system: &System, answered: &Answered, elapsed: Duration) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let completed = loop {
        let completed = envoy_completed(system).await?;
        let stored = stream_messages(system).await.unwrap_or(0);
        if stored >= completed || Instant::now() > deadline {
            // Once more after a flush interval and more: nothing further arrives.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break envoy_completed(system).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stream = stream_entries(system).await?;
    let stored = stream.entries;
    // Every load request has its own path; every request its own x-request-id.
    let duplicated: Vec<_> = stream
        .request_ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .chain(stream.paths.iter().filter(|(p, n)| p.starts_with("/a/") && **n > 1))
        .collect();
    let missing: Vec<&String> = answered.ok.iter().filter(|p| !stream.paths.contains_key(*p)).collect();
    let answered_set: std::collections::BTreeSet<&String> = answered.ok.iter().collect();
    let unanswered: Vec<_> = stream.paths.iter().filter(|(p, _)| !answered_set.contains(p)).collect();
    println!(
        "entries of requests the clients did not count: {} paths, e.g. {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(8)]
    );
    println!(
        "load {elapsed:.1?}: {} requests answered 200, {} failed; Envoy completed {completed}; \
         stream entries {stored} ({} distinct request ids); answered but not in the stream {}; \
         duplicated {}; Envoy ALS: {}",
        answered.ok.len(),
        answered.failed,
        stream.request_ids.len(),
        missing.len(),
        duplicated.len(),
        envoy_als_stats(system).await?,
    );
    ensure!(
        missing.is_empty(),
        "{} answered requests lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    ensure!(
        duplicated.is_empty(),
        "entries stored twice: {:?}",
        &duplicated[..duplicated.len().min(5)]
    );
    ensure!(
        stored == completed,
        "the stream holds {stored} entries, Envoy completed {completed} requests"
    );
    ensure!(answered.failed == 0, "{} requests failed", answered.failed);
    Ok(())
}

/// Prints each replica's lines and counters; returns the lines per replica.
async fn print_replicas(system: &System) -> Result<Vec<usize>> {
    let mut lines = Vec::new();
    for (c, n, counters) in replica_figures(system).await? {
        println!("  {c}: {n} lines in its file; {counters}");
        lines.push(n);
    }
    Ok(lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_replica_killed_under_load_loses_no_entry() -> Result<()> {
    let mut running = two_sinks().await?;
    let system = &mut running.system;
    let load = Load::start(system);
    tokio::time::sleep(Duration::from_secs(3)).await;
    system.kill9(Component::AccessLog)?;
    println!("access-log replica 0 killed (-9) at {:.1?}", load.started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    // It comes back and Envoy reconnects to it; then both carry the load again.
    system.restart(Component::AccessLog).await?;
    println!("access-log replica 0 back at {:.1?}", load.started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (answered, elapsed) = load.finish().await?;
    ensure!(answered.ok.len() > 1000, "too little load: {}", answered.ok.len());
    check_no_loss(system, &answered, elapsed).await?;
    // The killed replica really missed entries (its outage): the other one covered them.
    let lines = print_replicas(system).await?;
    ensure!(
        lines[0] < lines[1],
        "the killed replica wrote {} lines, the other {}: nothing was at stake",
        lines[0],
        lines[1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_replica_stopped_under_load_loses_no_entry() -> Result<()> {
    let mut running = two_sinks().await?;
    let system = &mut running.system;
    let load = Load::start(system);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = Instant::now();
    system.stop(Component::AccessLogReplica(1)).await?;
    println!(
        "access-log replica 1 stopped (SIGTERM) at {:.1?}, in {:.1?}",
        load.started.elapsed(),
        stopping.elapsed()
    );
    // It stopped cleanly, and had every line it received acked by JetStream first.
    let log = std::fs::read_to_string(system.log_path(Component::AccessLogReplica(1)))?;
    let stopped = log
        .lines()
        .find(|l| l.contains("access-log stopped"))
        .with_context(|| {
            format!(
                "no clean stop:\n{}",
                system.log_tail(Component::AccessLogReplica(1), 20)
            )
        })?;
    let count = |key: &str| -> Result<u64> {
        let rest = stopped
            .split(&format!("{key}: "))
            .nth(1)
            .with_context(|| format!("no {key} in {stopped}"))?;
        Ok(rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .parse()?)
    };
    let (written, acked, dropped) = (
        count("lines_written")?,
        count("publishes_sent")?,
        count("publishes_dropped")?,
    );
    println!(
        "access-log replica 1 at its stop: {written} lines written, {acked} acked by JetStream, {dropped} dropped"
    );
    ensure!(
        written > 0 && acked == written && dropped == 0,
        "the stopping replica did not publish all it held: {stopped}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (answered, elapsed) = load.finish().await?;
    ensure!(answered.ok.len() > 1000, "too little load: {}", answered.ok.len());
    check_no_loss(system, &answered, elapsed).await?;
    print_replicas(system).await?;
    Ok(())
}

//! Leader election on a Lease of the test API server: one leader at a time; when the leader
//! dies without a word (its runtime dropped, as kill -9 would) another takes over within the
//! lease time; a leader that stops gracefully hands over at once. Then the same with two
//! gateway processes, one killed -9.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kgw_common::{
    leader::{LeaseConfig, spawn_leader_election},
    shutdown::Shutdown,
};
use kgw_harness::kube::{
    KubeCluster,
    apply::{apply_yaml, chart_crd_dir, install_crds},
};
use kgw_harness::manifest::{gateway_yaml, route_yaml};
use kgw_harness::process::Process;
use kgw_harness::{Component, System, SystemConfig, wait_for};
use tokio::sync::watch;

const LEASE: Duration = Duration::from_secs(3);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: LEASE,
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(250),
        ..LeaseConfig::new("default", "kgw-gateway", identity)
    }
}

/// Runs a candidate on a runtime of its own, so that dropping the runtime kills it with no
/// chance to release the lease.
fn candidate_on_own_runtime(
    client: kube::Client,
    identity: &str,
) -> Result<(tokio::runtime::Runtime, watch::Receiver<bool>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let leading = runtime.block_on(async { spawn_leader_election(client, config(identity), Shutdown::new()).0 });
    Ok((runtime, leading))
}

async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !check() {
        ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

#[test]
fn one_leader_at_a_time_and_failover_within_the_lease() -> Result<()> {
    let test = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cluster = test.block_on(KubeCluster::start())?;
    let (runtime_a, a) = candidate_on_own_runtime(cluster.client(), "replica-a")?;
    test.block_on(async {
        wait_until("a leads", Duration::from_secs(10), || *a.borrow()).await?;
        let shutdown_b = Shutdown::new();
        let (b, _) = spawn_leader_election(cluster.client(), config("replica-b"), shutdown_b.clone());
        // b follows while a renews.
        let watch_until = Instant::now() + LEASE * 2;
        while Instant::now() < watch_until {
            ensure!(!(*a.borrow() && *b.borrow()), "two leaders at once");
            ensure!(*a.borrow() && !*b.borrow(), "leadership moved while a was healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok((b, shutdown_b))
    })
    .and_then(|(b, shutdown_b)| {
        // kill -9 of the leader: its tasks vanish mid-term.
        let killed = Instant::now();
        runtime_a.shutdown_background();
        test.block_on(async {
            let took = wait_until("b takes over", LEASE * 3, || *b.borrow()).await?;
            let since_kill = killed.elapsed();
            eprintln!("failover after kill: {since_kill:?} (lease {LEASE:?})");
            ensure!(since_kill <= LEASE + Duration::from_secs(2), "took {took:?}");

            // A graceful stop hands over at once.
            let (c, _) = spawn_leader_election(cluster.client(), config("replica-c"), Shutdown::new());
            tokio::time::sleep(Duration::from_millis(500)).await;
            ensure!(!*c.borrow(), "c leads while b holds the lease");
            shutdown_b.trigger();
            let handover = wait_until("c takes over after b stops", Duration::from_secs(3), || *c.borrow()).await?;
            eprintln!("handover after graceful stop: {handover:?}");
            ensure!(!*b.borrow());
            Ok(())
        })
    })
}

/// A gateway on the Kubernetes source, writing to `nats`, its Lease held for 3 s.
fn gateway(cluster: &KubeCluster, system: &System, name: &str, monitoring_port: u16) -> Result<Process> {
    let monitoring = std::net::SocketAddr::new(system.layout().gateway, monitoring_port);
    let args = [
        "--source",
        "kubernetes",
        "--kubeconfig",
        &cluster.kubeconfig_path().display().to_string(),
        "--nats-url",
        &system.nats_url(),
        "--webhook-addr",
        "off",
        "--background-validation",
        "false",
        "--monitoring-addr",
        &monitoring.to_string(),
        "--leader-election-lease-seconds",
        "3",
    ]
    .map(String::from)
    .into_iter()
    // The system's gateway certificate: NATS requires TLS.
    .chain(system.process_tls_args("gateway"));
    let log = system.run_dir().join(format!("{name}.log"));
    let mut process = Process::new(name, kgw_harness::bins::bin(kgw_harness::bins::GATEWAY)?, args, &log);
    process.start()?;
    Ok(process)
}

/// The pid in the Lease's holder (`<host>-<pid>`), once someone holds it.
async fn holder_pid(cluster: &KubeCluster) -> Result<u32> {
    let leases: kube::Api<Lease> = kube::Api::namespaced(cluster.client(), "default");
    let lease = leases.get("kgw-gateway").await?;
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let pid = holder.rsplit('-').next().unwrap_or_default();
    Ok(pid.parse()?)
}

/// Whether a value of Proxy `default.gw` (its head or one of its virtual hosts) names `route`.
async fn proxy_holds(system: &System, route: &str) -> Result<bool> {
    let entries = system.kv_entries(kgw_proto::nats::PROXIES_BUCKET).await?;
    Ok(entries
        .iter()
        .filter(|(key, _)| *key == "default.gw" || kgw_proto::nats::vhost_part_head(key) == Some("default.gw"))
        .any(|(_, v)| v.windows(route.len()).any(|w| w == route.as_bytes())))
}

fn route(name: &str) -> String {
    route_yaml(name, &format!("/{name}"), &[("echo", 1)])
}

/// Two gateway replicas: only the leader writes (one KV write per change, not two); kill -9
/// the leader and the other takes over within the lease time, writes the change made
/// meanwhile (none lost) and rewrites nothing that was already right (none doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_one_writer_and_failover_after_kill() -> Result<()> {
    let cluster = KubeCluster::start().await?;
    let client = cluster.client();
    install_crds(&client, &chart_crd_dir()).await?;
    apply_yaml(&client, &gateway_yaml()).await?;
    apply_yaml(&client, &route("first-route")).await?;
    let system = System::start(SystemConfig {
        components: vec![Component::Nats],
        ..Default::default()
    })
    .await?;
    let mut replicas = [
        gateway(&cluster, &system, "gateway-a", 9091)?,
        gateway(&cluster, &system, "gateway-b", 9191)?,
    ];
    let pids: Vec<u32> = replicas.iter().filter_map(Process::pid).collect();
    let wait = Duration::from_secs(30);
    wait_for(wait, || async {
        ensure!(
            pids.contains(&holder_pid(&cluster).await?),
            "no leader among {pids:?} yet"
        );
        ensure!(proxy_holds(&system, "first-route").await?, "no Proxy yet");
        Ok(())
    })
    .await?;

    // One writer: a route change is one write to the Proxies bucket.
    let before = system.kv_last_sequence(kgw_proto::nats::PROXIES_BUCKET).await?;
    apply_yaml(&client, &route("second-route")).await?;
    wait_for(wait, || async {
        ensure!(proxy_holds(&system, "second-route").await?);
        Ok(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = system.kv_last_sequence(kgw_proto::nats::PROXIES_BUCKET).await?;
    ensure!(
        after == before + 1,
        "a route change wrote the Proxy {} times",
        after - before
    );

    // kill -9 the leader, change a route while nobody leads.
    let leader = holder_pid(&cluster).await?;
    let (dead, survivor): (Vec<_>, Vec<_>) = replicas.iter_mut().partition(|p| p.pid() == Some(leader));
    let killed = Instant::now();
    for process in dead {
        process.kill9()?;
    }
    let survivor_pid = survivor.first().and_then(|p| p.pid()).context("the other replica")?;
    apply_yaml(&client, &route("during-failover")).await?;
    wait_for(wait, || async {
        ensure!(holder_pid(&cluster).await? == survivor_pid, "not taken over yet");
        Ok(())
    })
    .await?;
    let took_over = killed.elapsed();
    wait_for(wait, || async {
        ensure!(proxy_holds(&system, "during-failover").await?);
        Ok(())
    })
    .await?;
    let written = killed.elapsed();
    eprintln!("failover: lease taken {took_over:?} after kill -9, the pending change written after {written:?}");
    ensure!(
        took_over <= Duration::from_secs(3) + Duration::from_millis(1500),
        "took over after {took_over:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = system.kv_last_sequence(kgw_proto::nats::PROXIES_BUCKET).await?;
    ensure!(
        end == after + 1,
        "the new leader wrote the Proxy {} times for one change",
        end - after
    );
    Ok(())
}

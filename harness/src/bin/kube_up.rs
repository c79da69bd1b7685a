//! `kgw-kube-up [--config-dir examples/basic]`: the whole system on the Kubernetes source.
//! Starts etcd and kube-apiserver (built from Go into a cache, see scripts/kube-tools.sh),
//! installs the chart's CRDs, applies the example through the API server, starts an echo
//! backend, nats-server, the four processes (gateway and discovery reading the API server)
//! and Envoy on 127.0.0.1 with the legacy ports, prints `KUBECONFIG=<path>` and stays in the
//! foreground until Ctrl-C or SIGTERM.
//!
//! The API server refuses loopback addresses in EndpointSlices, so the echo backend runs in
//! a test host namespace of its own (see `kgw_harness::netns`; needs root) and the example's
//! EndpointSlice addresses are rewritten to it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kgw_harness::kube::{
    KubeCluster,
    apply::{apply_yaml, chart_crd_dir, documents, install_crds},
};
use kgw_harness::netns::TestHost;
use kgw_harness::system::Source;
use kgw_harness::{Placement, System, SystemConfig};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "Brings the whole gateway system up on the Kubernetes source (a local API server)")]
struct Args {
    /// Manifests applied through the API server once it runs.
    #[arg(long, default_value = "examples/basic")]
    config_dir: PathBuf,
    /// Port of the echo backend (the port the example's EndpointSlice names).
    #[arg(long, default_value_t = 9001)]
    backend_port: u16,
    /// Where logs go; default: a new directory under the system's temp dir.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Run every process and NATS without TLS (debugging only); by default certificates
    /// are generated under `<run dir>/pki`.
    #[arg(long)]
    insecure_no_mtls: bool,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("kgw-kube-up: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if !args.config_dir.is_dir() {
        bail!(
            "config dir {} not found: run from the repository root or pass --config-dir",
            args.config_dir.display()
        );
    }
    kgw_harness::ensure_nats_server()?;
    kgw_harness::ensure_envoy()?;
    eprintln!("kgw-kube-up: starting etcd and kube-apiserver (the first run builds them, see README)...");
    let cluster = KubeCluster::start().await?;
    let client = cluster.client();
    install_crds(&client, &chart_crd_dir()).await?;

    let mut host = TestHost::create().context("the echo backend's test host")?;
    let backend = host.spawn_echo("echo-1", args.backend_port)?;
    for manifest in manifests(&args.config_dir)? {
        let text = std::fs::read_to_string(&manifest)?;
        apply_yaml(&client, &endpoints_to(&text, &backend.ip().to_string())?)
            .await
            .with_context(|| format!("applying {}", manifest.display()))?;
    }

    let run_dir = match args.run_dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("kgw-kube-up-").tempdir()?.keep(),
    };
    let start = System::start(SystemConfig {
        source: Source::Kubernetes {
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        },
        run_dir: Some(run_dir),
        placement: Placement::Local,
        mtls: !args.insecure_no_mtls,
        ..SystemConfig::default()
    });
    let mut sys = tokio::select! {
        sys = start => sys?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    println!("KUBECONFIG={}", cluster.kubeconfig_path().display());
    eprintln!("kgw-kube-up: running (Ctrl-C stops everything)");
    eprintln!("  API server   {}", cluster.server_url());
    eprintln!("  backend      echo-1 on {backend} (test host namespace)");
    eprintln!("  envoy        http://{}", sys.layout().envoy_http());
    eprintln!("  logs         {}/*.log", sys.run_dir().display());
    for (label, text) in kgw_harness::hints::client_commands(&sys, "default~gw") {
        eprintln!("  {label:<12} {text}");
    }
    eprintln!("Try:  curl -i {}", sys.url("/echo/hello"));
    eprintln!(
        "      KUBECONFIG={} kubectl get httproute echo -o yaml   (status written back)",
        cluster.kubeconfig_path().display()
    );

    sys.report_exits_until("kgw-kube-up", async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
    .await;
    eprintln!("kgw-kube-up: stopping...");
    // Envoy first, then the backend's namespace, then the API server.
    drop(sys);
    drop(host);
    drop(cluster);
    eprintln!("kgw-kube-up: stopped");
    Ok(())
}

/// The YAML files of `dir`, sorted.
fn manifests(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    Ok(files)
}

/// `text` with every loopback address of an EndpointSlice replaced by `ip` (the API server
/// refuses loopback endpoints).
fn endpoints_to(text: &str, ip: &str) -> Result<String> {
    let mut out = Vec::new();
    for mut object in documents(text)? {
        let is_slice = object.types.as_ref().is_some_and(|t| t.kind == "EndpointSlice");
        if is_slice && let Some(endpoints) = object.data.get_mut("endpoints").and_then(|e| e.as_array_mut()) {
            for endpoint in endpoints {
                if let Some(addresses) = endpoint.get_mut("addresses").and_then(|a| a.as_array_mut()) {
                    for address in addresses {
                        let loopback = address
                            .as_str()
                            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                            .is_some_and(|a| a.is_loopback());
                        if loopback {
                            *address = serde_json::Value::String(ip.to_string());
                        }
                    }
                }
            }
        }
        out.push(serde_yaml::to_string(&object)?);
    }
    Ok(out.join("---\n"))
}

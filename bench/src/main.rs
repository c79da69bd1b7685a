//! `kgw-bench [--quick]`: how fast config reaches Envoy, what it costs, at 1k–10k routes
//! (issue 4). Starts nats-server, our four processes and Envoy with the harness on loopback
//! blocks of its own, runs every scenario, prints a table of each figure beside its goal,
//! writes the figures as JSON and prints that file's path as the last line.

mod load;
mod procstat;
mod routeset;
mod scenarios;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};

use routeset::Shape;
use scenarios::{Plan, Report};

/// jemalloc, unless built without the default feature `jemalloc` (see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(about = "Benchmarks the control plane: propagation, translation, memory, Envoy throughput")]
struct Args {
    /// Every scenario, small and short (for CI): the JSON has every key, with real values.
    #[arg(long)]
    quick: bool,
    /// Where the JSON goes (default: target/bench of this repository).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these scenarios (comma-separated): translate, growth, propagation, bulk, throughput,
    /// kill_matrix, kube, discovery, sotw.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these shapes in `propagation` (comma-separated): spread, one_host.
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    /// Route counts of `propagation`'s shapes instead of the plan's (comma-separated, in
    /// increasing order), to look at one size.
    #[arg(long, value_delimiter = ',')]
    shape_sizes: Vec<usize>,
}

const SCENARIOS: [&str; 9] = [
    "translate",
    "growth",
    "propagation",
    "bulk",
    "throughput",
    "kill_matrix",
    "kube",
    "discovery",
    "sotw",
];

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // On Ctrl-C or SIGTERM the run is dropped, and with it every process it started.
    let result = tokio::select! {
        r = run(args) => Some(r),
        s = stop_signal() => {
            eprintln!("kgw-bench: {s}: stopping what was started");
            None
        }
    };
    // Here the run is dropped: every process it started has been stopped.
    let Some(result) = result else {
        std::process::exit(130);
    };
    match result {
        Ok((path, ok)) => {
            println!("{}", path.display());
            if !ok {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("kgw-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "interrupted",
            _ = term.recv() => "terminated",
        },
        _ => std::future::pending().await,
    }
}

async fn run(args: Args) -> Result<(PathBuf, bool)> {
    if let Some(bad) = args.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        anyhow::bail!("unknown scenario {bad:?}; scenarios: {}", SCENARIOS.join(", "));
    }
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if !args.shapes.is_empty() {
        let known = |name: &String| Shape::ALL.into_iter().find(|s| s.key() == name);
        if let Some(bad) = args.shapes.iter().find(|name| known(name).is_none()) {
            anyhow::bail!("unknown shape {bad:?}; shapes: spread, one_host");
        }
        plan.shapes = args.shapes.iter().filter_map(known).collect();
    }
    if !args.shape_sizes.is_empty() {
        if !args.shape_sizes.is_sorted() || args.shape_sizes.contains(&0) {
            anyhow::bail!("--shape-sizes must be positive and increasing: {:?}", args.shape_sizes);
        }
        plan.shape_sizes = args.shape_sizes.clone();
    }
    let wanted = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let started = Instant::now();
    let mut report = Report::default();
    report.set("machine", scenarios::machine::describe(plan.quick));
    // Each scenario's wall time goes to `details.scenario_seconds` (the full run's budget is
    // 25 minutes; this says where it goes).
    let mut scenario_seconds = serde_json::Map::new();
    macro_rules! scenario {
        ($name:literal, $what:literal, $run:expr) => {
            if wanted($name) {
                eprintln!(concat!("kgw-bench: ", $what));
                let began = Instant::now();
                if let Err(e) = $run {
                    report.error($name, &e);
                }
                let secs = scenarios::round3(began.elapsed().as_secs_f64());
                scenario_seconds.insert($name.into(), json!(secs));
            }
        };
    }
    scenario!(
        "translate",
        "translation, in process",
        scenarios::translate::run(&plan, &mut report)
    );
    scenario!(
        "growth",
        "propagation, churn, edits under load, memory",
        scenarios::growth::run(&plan, &mut report).await
    );
    scenario!(
        "propagation",
        "propagation in two shapes, Envoy's floor over ADS, memory per route",
        scenarios::shapes::run(&plan, &mut report).await
    );
    scenario!("bulk", "bulk load", scenarios::bulk::run(&plan, &mut report).await);
    scenario!(
        "throughput",
        "Envoy throughput, access log, Envoy floor",
        scenarios::throughput::run(&plan, &mut report).await
    );
    scenario!(
        "kill_matrix",
        "kill -9 of each process and nats-server under load",
        scenarios::kill_matrix::run(&plan, &mut report).await
    );
    scenario!(
        "kube",
        "the Kubernetes source against a real API server",
        scenarios::kube::run(&plan, &mut report).await
    );
    scenario!(
        "discovery",
        "discovery alone: cold start, restart, idle probes, memory, failover",
        scenarios::discovery::run(&plan, &mut report).await
    );
    scenario!(
        "sotw",
        "xDS bytes per route change with Envoy on state-of-the-world ADS",
        scenarios::sotw::run(&plan, &mut report).await
    );
    report.detail("scenario_seconds", Value::Object(scenario_seconds));
    let elapsed = started.elapsed().as_secs_f64();
    print!("{}", table(&plan, &report.values, &report.details));
    // Beside the figures (the head of a long log is what a reader sees first).
    for error in &report.errors {
        println!("error: {error}");
    }
    let mut doc = report.values.clone();
    doc.insert("details".into(), Value::Object(report.details.clone()));
    doc.insert("errors".into(), json!(report.errors));
    doc.insert("elapsed_s".into(), json!(scenarios::round3(elapsed)));
    let dir = args
        .out
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let suffix = if plan.quick { "-quick" } else { "" };
    let path = std::path::absolute(dir.join(format!("bench-{stamp}{suffix}.json")))?;
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(doc))? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("kgw-bench: done in {elapsed:.0} s");
    Ok((path, report.errors.is_empty()))
}

/// The figures, each beside its goal.
fn table(plan: &Plan, v: &serde_json::Map<String, Value>, details: &serde_json::Map<String, Value>) -> String {
    let [small, mid, large] = plan.sizes.map(Plan::key);
    let num = |key: &str, sub: &[&str]| -> Option<f64> {
        let mut x = v.get(key)?;
        for s in sub {
            x = x.get(s)?;
        }
        x.as_f64()
    };
    let show = |x: Option<f64>| x.map_or("—".to_string(), fmt);
    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut row = |what: String, measured: String, goal: &str| rows.push([what, measured, goal.to_string()]);
    for size in [&small, &mid, &large] {
        let goal = if *size == mid { "≤ 50 ms at 5k" } else { "" };
        row(
            format!("translate_full_ms {size}"),
            show(num("translate_full_ms", &[size])),
            goal,
        );
    }
    // In either shape: a route per hostname, or every route under one.
    for (suffix, goal) in [("", "≤ 1 ms, flat"), ("_one_host", "")] {
        for size in plan.shape_sizes.iter().map(|n| Plan::key(*n)) {
            let key = |what: &str| format!("{what}{suffix}_ms");
            row(
                format!("{} {size} (gateway + controller)", key("translate_one_route")),
                format!(
                    "{} ({} + {})",
                    show(num(&key("translate_one_route"), &[&size])),
                    show(num(&key("gateway_translate_one_route"), &[&size])),
                    show(num(&key("controller_apply_one_route"), &[&size]))
                ),
                goal,
            );
        }
    }
    for size in [&small, &mid, &large] {
        row(
            format!("controller_translate_one_vhost_ms {size} (whole-Proxy path)"),
            show(num("controller_translate_one_vhost_ms", &[size])),
            "",
        );
    }
    for size in plan.shape_sizes.iter().map(|n| Plan::key(*n)) {
        row(
            format!("controller_apply_one_upstream_ms {size}"),
            show(num("controller_apply_one_upstream_ms", &[&size])),
            "≤ 1 ms, flat",
        );
    }
    for size in [&small, &mid, &large] {
        let p = |q| num("propagation_ms", &[size, q]);
        let goal = if *size == mid {
            "p50 ≤ 10, p99 ≤ 30 at 5k"
        } else {
            ""
        };
        row(
            format!("propagation_ms {size} p50/p99/max"),
            format!("{} / {} / {}", show(p("p50")), show(p("p99")), show(p("max"))),
            goal,
        );
    }
    for size in [&small, &mid, &large] {
        row(
            format!("kv_bytes_per_route_change {size}"),
            show(num("kv_bytes_per_route_change", &[size])),
            "≤ 4 KB at any size",
        );
    }
    for size in plan.shape_sizes.iter().map(|n| Plan::key(*n)) {
        row(
            format!("kv_bytes_per_route_change_by_shape one_host {size}"),
            show(num("kv_bytes_per_route_change_by_shape", &["one_host", &size])),
            "≤ 4 KB at any size",
        );
    }
    for size in [&small, &mid, &large] {
        row(
            format!("xds_bytes_per_route_change {size}"),
            show(num("xds_bytes_per_route_change", &[size])),
            "≤ 16 KB at any size",
        );
    }
    for size in [&small, &mid, &large] {
        row(
            format!("xds_bytes_per_route_change_sotw {size}"),
            show(num("xds_bytes_per_route_change_sotw", &[size])),
            "for comparison (Envoy on sotw)",
        );
    }
    for size in [&small, &mid] {
        let p = |q| num("envoy_floor_ms", &[size, q]);
        row(
            format!("envoy_floor_ms {size} p50/max"),
            format!("{} / {}", show(p("p50")), show(p("max"))),
            "Envoy's own floor",
        );
    }
    rows.extend(scenarios::shapes::rows(plan, v, show));
    let mut row = |what: String, measured: String, goal: &str| rows.push([what, measured, goal.to_string()]);
    let churn = |q| num("propagation_under_churn_ms", &[q]);
    row(
        "propagation_under_churn_ms p50/p99".into(),
        format!("{} / {}", show(churn("p50")), show(churn("p99"))),
        "p99 ≤ 50",
    );
    row(
        "non_2xx_during_edits".into(),
        show(num("non_2xx_during_edits", &[])),
        "0",
    );
    let ours = ["gateway", "controller", "discovery", "access-log"];
    for p in ours.iter().chain(&["nats-server", "envoy"]) {
        row(format!("rss_mib {p}"), show(num("rss_mib", &[p])), "");
    }
    let total: Option<f64> = ours.iter().map(|p| num("rss_mib", &[p])).sum();
    row("rss_mib our four together".into(), show(total), "≤ 150 MiB");
    row("bulk_5k_seconds".into(), show(num("bulk_5k_seconds", &[])), "≤ 3 s");
    row("als_entries_sent".into(), show(num("als_entries_sent", &[])), "");
    row("als_entries_lost".into(), show(num("als_entries_lost", &[])), "0");
    row("als_rps".into(), show(num("als_rps", &[])), "");
    row("als_sink_cores".into(), show(num("als_sink_cores", &[])), "≤ 0.25 core");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("(ratio {:.3})", a / b),
        _ => String::new(),
    };
    let (grpc, file) = (num("envoy_rps_grpc_log", &[]), num("envoy_rps_file_log", &[]));
    row("envoy_rps_file_log".into(), show(file), "");
    row(
        "envoy_rps_grpc_log".into(),
        format!("{} {}", show(grpc), ratio(grpc, file)),
        "cost of our sink = ratio",
    );
    let (xds, stat) = (num("envoy_rps_xds", &[]), num("envoy_rps_static", &[]));
    row("envoy_rps_static".into(), show(stat), "");
    row(
        "envoy_rps_xds".into(),
        format!("{} {}", show(xds), ratio(xds, stat)),
        "ratio ≥ 0.95",
    );
    let kube = |q| num("kube_route_create_to_200_ms", &[&small, q]);
    row(
        format!("kube_route_create_to_200_ms {small} p50/p99"),
        format!("{} / {}", show(kube("p50")), show(kube("p99"))),
        "",
    );
    for kind in ["HTTPRoute", "Gateway", "GatewayClass", "RouteOption"] {
        let goal = if kind == "HTTPRoute" { "1" } else { "0" };
        row(
            format!("kube_status_writes_per_route_change {kind}"),
            show(num("kube_status_writes_per_route_change", &[kind])),
            goal,
        );
    }
    row(
        format!("kube_gateway_rss_mib {small}"),
        show(num("kube_gateway_rss_mib", &[&small])),
        "",
    );
    rows.extend(scenarios::discovery::rows(v, details, show));
    let mut row = |what: String, measured: String, goal: &str| rows.push([what, measured, goal.to_string()]);
    for victim in ["controller", "gateway", "discovery", "access-log", "nats"] {
        let figures = ["non_2xx", "socket_errors", "access_log_lost", "new_route_live_s"]
            .map(|f| show(num("kill_matrix", &[victim, f])))
            .join(" / ");
        row(
            format!("kill_matrix {victim}: non-2xx / socket errors / ALS lost / new route s"),
            figures,
            "0 / 0 / 0 / ≤ 2",
        );
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    let mut out = format!("\n{:<w0$}  {:<w1$}  goal\n", "figure", "measured");
    for [a, b, c] in &rows {
        out.push_str(&format!("{a:<w0$}  {b:<w1$}  {c}\n"));
    }
    if let Some(m) = v.get("machine") {
        out.push_str(&format!("machine: {m}\n"));
    }
    out
}

/// A figure with as many decimals as it deserves.
fn fmt(x: f64) -> String {
    if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

//! `conformance`: the Gateway API suite's HTTP cases against our processes and real Envoy
//! on loopback (see harness/src/conformance). Prints a table, writes a JSON report, ends
//! with `total: X/Y cases passed`, and exits 1 when a case or status check fails.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kgw_harness::conformance::{self, RunOptions};
use kgw_harness::envoy::XdsProtocol;

#[derive(Parser)]
#[command(about = "Runs the Gateway API conformance cases (../shared/conformance) through our stack")]
struct Cli {
    /// The folder with cases.json and manifests/ (default: ../shared/conformance beside the
    /// repo, else its copy in harness/conformance-data).
    #[arg(long)]
    conformance_dir: Option<PathBuf>,
    /// Run only these tests (by name; repeat or separate with commas).
    #[arg(long = "run-test", value_delimiter = ',')]
    tests: Vec<String>,
    /// Seconds one case may take to converge (the suite allows 30).
    #[arg(long, default_value_t = 15)]
    case_timeout: u64,
    /// Seconds a test's status checks may take to pass.
    #[arg(long, default_value_t = 20)]
    status_timeout: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/conformance-report.json")]
    report: PathBuf,
    /// Envoy's ADS protocol: sotw or delta.
    #[arg(long, default_value = "sotw")]
    xds: String,
    /// Keep logs and the config directory here (default: a temporary directory).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut opts = RunOptions {
        tests: cli.tests,
        case_timeout: Duration::from_secs(cli.case_timeout),
        status_timeout: Duration::from_secs(cli.status_timeout),
        xds_protocol: match cli.xds.as_str() {
            "delta" => XdsProtocol::Delta,
            "sotw" => XdsProtocol::StateOfTheWorld,
            other => anyhow::bail!("--xds {other}: expected sotw or delta"),
        },
        run_dir: cli.run_dir,
        ..RunOptions::default()
    };
    if let Some(dir) = cli.conformance_dir {
        opts.conformance_dir = dir;
    }
    // On Ctrl-C or SIGTERM the run is dropped, which stops every process it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = conformance::run(&opts) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    };
    if let Some(parent) = cli.report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.report, serde_json::to_string_pretty(&report)?)?;
    eprintln!("JSON report: {}", cli.report.display());
    print!("{}", report.render());
    std::process::exit(if report.all_passed() { 0 } else { 1 });
}

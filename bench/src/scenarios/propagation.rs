//! New route → first 200: one new HTTPRoute file (written atomically) per sample, Envoy
//! polled with its Host header every millisecond until it answers 200. Optionally while
//! another route's file is rewritten 50 times a second (churn).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kgw_harness::{remove_manifest, write_manifest_atomically};
use tokio::task::JoinHandle;

use super::fleet::Fleet;
use super::{Plan, ms};
use crate::routeset::{self, Shape};

/// Longest wait for one new route.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Samples allowed to time out before the size is given up.
const MAX_FAILURES: usize = 3;

/// What a series of samples measured.
#[derive(Debug, Default)]
pub struct Samples {
    pub ms: Vec<f64>,
    pub failures: Vec<String>,
    /// Stopped short: the series' time budget was spent.
    pub over_budget: bool,
}

impl Samples {
    /// Whether sample `k` of a series begun at `began` is over `budget` (the first never is).
    pub fn over(&mut self, k: usize, began: Instant, budget: Option<Duration>) -> bool {
        self.over_budget = k > 0 && budget.is_some_and(|b| began.elapsed() >= b);
        self.over_budget
    }
}

/// `count` new routes `<prefix>-<k>`, one at a time, each timed from its file write to
/// its first 200. The routes are removed afterwards.
pub async fn sample(fleet: &Fleet, plan: &Plan, prefix: &str, count: usize, services: usize) -> Result<Samples> {
    sample_in(fleet, plan, Shape::Spread, prefix, count, services, None).await
}

/// [`sample`] with routes of `shape`, stopping short once `budget` is spent.
pub async fn sample_in(
    fleet: &Fleet,
    plan: &Plan,
    shape: Shape,
    prefix: &str,
    count: usize,
    services: usize,
    budget: Option<Duration>,
) -> Result<Samples> {
    let dir = fleet.config_dir().to_path_buf();
    let mut out = Samples::default();
    let mut written = Vec::new();
    let began = Instant::now();
    for k in 0..count {
        if out.over(k, began, budget) {
            break;
        }
        let name = format!("{prefix}-{k}");
        let yaml = routeset::shaped_route_yaml(
            shape,
            &name,
            &routeset::service_of(k * routeset::ROUTES_PER_SERVICE, services),
            0,
        );
        tokio::time::sleep(plan.sample_gap).await;
        let started = Instant::now();
        write_manifest_atomically(&dir, &routeset::route_file(&name), &yaml)?;
        written.push(name.clone());
        let host = shape.host(&name);
        match fleet
            .poller
            .until_200(&host, &routeset::request_path(&name), started, SAMPLE_TIMEOUT)
            .await
        {
            Ok(took) => out.ms.push(ms(took)),
            Err(e) => {
                out.failures.push(format!("{e:#}"));
                if out.failures.len() >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    for name in written {
        remove_manifest(&dir, &routeset::route_file(&name))?;
    }
    if out.ms.is_empty() {
        bail!("no new route was served: {:?}", out.failures);
    }
    Ok(out)
}

/// A task rewriting one route's file at a fixed rate, each time with a new second rule.
pub struct Churn {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<usize>>,
}

impl Churn {
    pub fn start(dir: PathBuf, name: String, svc: String, every: Duration) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rewrites = 0;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                rewrites += 1;
                write_manifest_atomically(
                    &dir,
                    &routeset::route_file(&name),
                    &routeset::route_yaml(&name, &svc, rewrites),
                )?;
            }
            Ok(rewrites)
        });
        Churn { stop, task }
    }

    /// Stops the task; the number of rewrites it made.
    pub async fn stop(self) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

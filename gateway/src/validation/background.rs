//! Directory mode: there is no API server to ask the webhook, so after every batch the
//! whole state is validated in the background, as the webhook would validate it, and what
//! would have been denied is logged and reported (status key `problems.validation`).
//!
//! The controller translates every Proxy it serves anyway: it is asked for the problems it
//! found ([`served_findings`]), naming each Proxy by the digest of the values written, so
//! nothing is translated again and no Proxy crosses the wire. Only when it does not serve
//! what was written within [`SERVED_PATIENCE`], or cannot say, is the whole state dry-run
//! ([`check_all_findings`]).
use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use kgw_common::{bus::KvState, resources::Index, shutdown::Shutdown};
use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    Finding, Policy, Served, Validator, ValidatorError, check_all_findings, digests::DigestCache, served_findings,
};
use crate::translate::Options;

/// Asks the actor for the gateway's own findings on its current state: read from the
/// status of its last translation where it lies (no copy of the status per batch for
/// this). `None` when the actor is gone.
pub type OwnFindings = Arc<dyn Fn() -> BoxFuture<'static, Option<BTreeSet<Finding>>> + Send + Sync>;

/// What a check reads of the actor: its index (a change starts a check), its own findings
/// and the `kgw_proxies` values it wrote.
#[derive(Clone)]
pub struct Outputs {
    pub index: watch::Receiver<Arc<Index>>,
    pub own: OwnFindings,
    pub proxies: watch::Receiver<KvState>,
}

/// How long the controller may take to serve what was written before the check dry-runs
/// the whole state instead, and how often it is asked meanwhile.
const SERVED_PATIENCE: Duration = Duration::from_secs(3);
const SERVED_RETRY: Duration = Duration::from_millis(100);

/// One finding of the background validation, as reported in the status bucket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    #[serde(flatten)]
    pub finding: Finding,
    /// Whether the webhook would deny a change introducing it with `alwaysAccept: false`.
    pub would_deny: bool,
}

/// Validates the current index after every change and calls `report` with the findings
/// whenever they differ from the last report. While the controller cannot be asked, the
/// last report stays and the check is retried (with backoff) until it can.
pub fn spawn<V: Validator>(
    validator: V,
    options: Options,
    policy: Policy,
    outputs: Outputs,
    mut synced: watch::Receiver<bool>,
    report: impl Fn(Vec<Reported>) + Send + 'static,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let mut index = outputs.index.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.wait() => return,
            ready = synced.wait_for(|s| *s) => if ready.is_err() { return },
        }
        let mut last: Option<Vec<Reported>> = None;
        let mut failing: Option<String> = None;
        let mut backoff = Duration::from_millis(500);
        let mut digest_cache = DigestCache::default();
        loop {
            let current = index.borrow_and_update().clone();
            let (checked, dry_run) = check(&validator, &options, &current, &outputs, &mut digest_cache).await;
            // The next check waits for the index to change, and for a rest of
            // `REST_PER_CHECK` times the length of this one's dry run (none when the
            // controller answered: waiting for it costs no CPU).
            let rest_until = tokio::time::Instant::now() + rest_after(dry_run);
            match checked {
                Ok(findings) => {
                    if failing.take().is_some() {
                        tracing::info!("background validation works again");
                    }
                    backoff = Duration::from_millis(500);
                    let reported: Vec<Reported> = findings
                        .into_iter()
                        .map(|finding| Reported {
                            would_deny: policy.would_deny(std::slice::from_ref(&finding)),
                            finding,
                        })
                        .collect();
                    if last.as_ref() != Some(&reported) {
                        log_new(last.as_deref().unwrap_or_default(), &reported);
                        report(reported.clone());
                        last = Some(reported);
                    }
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        changed = index.changed() => if changed.is_err() { return },
                    }
                    // It is a report, not a gate: let a burst of edits settle first, so
                    // churn does not cost a full dry run per edit.
                    settle(&mut index, &shutdown).await;
                    // A check that dry-runs is a whole translation here and in the
                    // controller: at 20k routes about a second of CPU. Resting after it
                    // keeps that work to a fifth of the time, so it does not take the cores
                    // from the changes themselves (their propagation to Envoy).
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep_until(rest_until) => {}
                    }
                }
                Err(error) => {
                    let text = error.to_string();
                    if failing.as_deref() != Some(&text) {
                        tracing::warn!(%error, "background validation cannot ask the controller; retrying");
                        failing = Some(text);
                    }
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(backoff) => {}
                        changed = index.changed() => if changed.is_err() { return },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    })
}

/// The findings on the current state: from the controller's translation when it serves
/// what was written, else by a dry run of `index`; and how long that dry run took (zero
/// without one).
async fn check<V: Validator>(
    validator: &V,
    options: &Options,
    index: &Index,
    outputs: &Outputs,
    digest_cache: &mut DigestCache,
) -> (Result<Vec<Finding>, ValidatorError>, Duration) {
    match served(validator, outputs, digest_cache).await {
        Ok(Some(findings)) => (Ok(findings), Duration::ZERO),
        Err(error) => (Err(error), Duration::ZERO),
        Ok(None) => {
            let began = tokio::time::Instant::now();
            let checked = check_all_findings(validator, options, index).await;
            (checked, began.elapsed())
        }
    }
}

/// The findings from the controller's translation, asked until it serves what was written
/// (at most [`SERVED_PATIENCE`]); `None` when it does not by then, or cannot say.
async fn served<V: Validator>(
    validator: &V,
    outputs: &Outputs,
    digest_cache: &mut DigestCache,
) -> Result<Option<Vec<Finding>>, ValidatorError> {
    let deadline = tokio::time::Instant::now() + SERVED_PATIENCE;
    loop {
        let Some(own) = (outputs.own)().await else {
            return Ok(None);
        };
        // The values are shared with the writer: summed (what changed since the last state),
        // then let go.
        let values = outputs.proxies.borrow().values.clone();
        let digests = digest_cache.digests(&values);
        drop(values);
        match served_findings(validator, own, &digests).await? {
            Served::Findings(findings) => return Ok(Some(findings)),
            Served::Unsupported => return Ok(None),
            Served::NotYet if tokio::time::Instant::now() >= deadline => {
                tracing::debug!("the controller does not serve what was written yet; dry-running the state");
                return Ok(None);
            }
            Served::NotYet => tokio::time::sleep(SERVED_RETRY).await,
        }
    }
}

/// How long the index must stay unchanged before a background check, and the most a
/// check is put off while changes keep coming.
const SETTLE: Duration = Duration::from_millis(200);
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// After a check that took `took`, how long before the next may start: at most a fifth of
/// the time goes to checks (bounded, so a slow check is not put off for ever).
const REST_PER_CHECK: u32 = 4;
const REST_AT_MOST: Duration = Duration::from_secs(30);

fn rest_after(took: Duration) -> Duration {
    (took * REST_PER_CHECK).min(REST_AT_MOST)
}

async fn settle(index: &mut watch::Receiver<Arc<Index>>, shutdown: &Shutdown) {
    let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(SETTLE) => {}
        }
        if !index.has_changed().unwrap_or(false) || tokio::time::Instant::now() >= deadline {
            return;
        }
        index.borrow_and_update();
    }
}

/// Logs the findings that were not in the last report.
fn log_new(before: &[Reported], now: &[Reported]) {
    let before: BTreeSet<&Reported> = before.iter().collect();
    for reported in now.iter().filter(|r| !before.contains(r)) {
        let finding = &reported.finding;
        if reported.would_deny {
            tracing::warn!(
                severity = ?finding.severity,
                resource = %finding.resource,
                path = %finding.path,
                message = %finding.message,
                "the validating webhook would deny this configuration (alwaysAccept: false)"
            );
        } else {
            tracing::info!(
                severity = ?finding.severity,
                resource = %finding.resource,
                path = %finding.path,
                message = %finding.message,
                "validation warning"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_take_at_most_a_fifth_of_the_time_and_rest_is_bounded() {
        let took = Duration::from_millis(250);
        let rest = rest_after(took);
        assert_eq!(rest, Duration::from_secs(1));
        assert!(took.as_secs_f64() / (took + rest).as_secs_f64() <= 0.2 + f64::EPSILON);
        assert_eq!(rest_after(Duration::from_secs(60)), REST_AT_MOST);
        assert_eq!(rest_after(Duration::ZERO), Duration::ZERO);
    }
}

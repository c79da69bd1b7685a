//! When to probe each upstream, and whether to at all. Pure: the caller passes the time, so
//! every rule is unit-tested without a clock.
//!
//! - New upstream, or one whose ready endpoints or hints changed (a pod restarted, moved,
//!   or became ready): due at once, backoff forgotten.
//! - Found functions: probed again after [`ScheduleConfig::refresh`] (30 min), to see
//!   new versions of the same pods' APIs.
//! - Found nothing (no detector answered, or errors): backed off 30 s, 1 min, 2 min, ...
//!   doubling to 1 h, so 3,000 silent Services cost under one probe a second.
//! - Every delay gets up to +10 % of jitter, derived from the name (deterministic), so
//!   upstreams that failed together do not come back together.
//! - No ready endpoint: not due until one appears.
use std::{
    collections::BTreeMap,
    str::FromStr,
    time::{Duration, Instant},
};

use super::{Detector, Hints};

/// Label on a Service or Namespace: `enabled` or `disabled` (as Gloo).
pub const FUNCTION_DISCOVERY_LABEL: &str = "discovery.solo.io/function_discovery";

/// Gloo's `settings.discovery.fdsMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FdsMode {
    /// Probe every Service but those labelled (or in a namespace labelled) `disabled`.
    #[default]
    Blacklist,
    /// Probe only Services labelled (or in a namespace labelled) `enabled`.
    Whitelist,
    /// Probe nothing.
    Disabled,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown fdsMode {0:?}: expected BLACKLIST, WHITELIST or DISABLED")]
pub struct UnknownMode(String);

impl FromStr for FdsMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "BLACKLIST" => Ok(Self::Blacklist),
            "WHITELIST" => Ok(Self::Whitelist),
            "DISABLED" => Ok(Self::Disabled),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

/// Whether a Service may be probed. The Service's label wins over its namespace's (so one
/// Service can opt out of an enabled namespace, or into a disabled one); other values
/// than `enabled` / `disabled` count as no label.
pub fn should_probe(
    mode: FdsMode,
    namespace_labels: &BTreeMap<String, String>,
    service_labels: &BTreeMap<String, String>,
) -> bool {
    let says = |labels: &BTreeMap<String, String>| match labels.get(FUNCTION_DISCOVERY_LABEL).map(String::as_str) {
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        _ => None,
    };
    let label = says(service_labels).or_else(|| says(namespace_labels));
    match mode {
        FdsMode::Disabled => false,
        FdsMode::Blacklist => label.unwrap_or(true),
        FdsMode::Whitelist => label.unwrap_or(false),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Delay after the first probe that found nothing; doubles with each further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Delay after a probe that found functions.
    pub refresh: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
            refresh: Duration::from_secs(30 * 60),
        }
    }
}

/// What a probe depends on: the ready endpoints and the hints (or, for Lambda, the
/// region and credentials). A different fingerprint makes the upstream due at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// (address, port), sorted and deduplicated.
    pub ready_endpoints: Vec<(String, u32)>,
    pub hints: Hints,
    /// Anything else the probe depends on (Lambda: region, endpoint, key id, a hash of the
    /// secret key); never secrets themselves.
    pub extra: Vec<String>,
}

impl Fingerprint {
    pub fn new(ready_endpoints: impl IntoIterator<Item = (String, u32)>, hints: Hints) -> Self {
        let mut ready_endpoints: Vec<_> = ready_endpoints.into_iter().collect();
        ready_endpoints.sort();
        ready_endpoints.dedup();
        Self {
            ready_endpoints,
            hints,
            extra: Vec::new(),
        }
    }

    /// There is something to probe (else not due until there is).
    pub fn probeable(&self) -> bool {
        !self.ready_endpoints.is_empty() || !self.extra.is_empty()
    }
}

/// The last probe's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastProbe {
    pub at: Instant,
    /// The detector that found functions; `None`: nothing found.
    pub found: Option<Detector>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeState {
    pub fingerprint: Fingerprint,
    pub last: Option<LastProbe>,
    /// Probes in a row that found nothing.
    pub failures: u32,
    /// `None`: not due (in flight, or no ready endpoint).
    pub next_probe: Option<Instant>,
    pub in_flight: bool,
}

/// Every probed upstream's state, by upstream name.
#[derive(Debug, Default)]
pub struct Schedule {
    config: ScheduleConfig,
    states: BTreeMap<String, ProbeState>,
}

impl Schedule {
    pub fn new(config: ScheduleConfig) -> Self {
        Self {
            config,
            states: BTreeMap::new(),
        }
    }

    /// Records the upstream as it is now (call on every change, and for every upstream
    /// that [`should_probe`]). New or changed: due at `now`, backoff reset.
    pub fn observe(&mut self, name: &str, fingerprint: Fingerprint, now: Instant) {
        let due = fingerprint.probeable().then_some(now);
        match self.states.get_mut(name) {
            Some(state) if state.fingerprint == fingerprint => {}
            Some(state) => {
                state.fingerprint = fingerprint;
                state.failures = 0;
                // An in-flight probe is stale now; `finished` makes it due again.
                if !state.in_flight {
                    state.next_probe = due;
                }
            }
            None => {
                self.states.insert(
                    name.to_string(),
                    ProbeState {
                        fingerprint,
                        last: None,
                        failures: 0,
                        next_probe: due,
                        in_flight: false,
                    },
                );
            }
        }
    }

    /// Stops tracking an upstream (deleted, or no longer to be probed).
    pub fn forget(&mut self, name: &str) {
        self.states.remove(name);
    }

    /// Keeps only the upstreams `keep` names.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.states.retain(|name, _| keep(name));
    }

    /// The upstreams due at `now`, earliest first (ties by name), marked in flight; each
    /// with the fingerprint to probe and to hand back to [`Schedule::finished`].
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Fingerprint)> {
        self.take_due_at_most(now, usize::MAX)
    }

    /// [`Schedule::take_due`], at most `max` of them (the rest stay due).
    pub fn take_due_at_most(&mut self, now: Instant, max: usize) -> Vec<(String, Fingerprint)> {
        let mut due: Vec<(Instant, &String)> = self
            .states
            .iter()
            .filter(|(_, s)| !s.in_flight)
            .filter_map(|(name, s)| s.next_probe.filter(|at| *at <= now).map(|at| (at, name)))
            .collect();
        due.sort();
        let names: Vec<String> = due.into_iter().take(max).map(|(_, name)| name.clone()).collect();
        names
            .into_iter()
            .filter_map(|name| {
                let state = self.states.get_mut(&name)?;
                state.in_flight = true;
                state.next_probe = None;
                Some((name, state.fingerprint.clone()))
            })
            .collect()
    }

    /// When the next upstream is due (for the caller's timer).
    pub fn next_due(&self) -> Option<Instant> {
        self.states
            .values()
            .filter(|s| !s.in_flight)
            .filter_map(|s| s.next_probe)
            .min()
    }

    /// A probe of `name` with `probed` ended at `now`. If the upstream changed meanwhile,
    /// the result is about old endpoints: due again at once.
    pub fn finished(&mut self, name: &str, probed: &Fingerprint, found: Option<Detector>, now: Instant) {
        let config = &self.config;
        let Some(state) = self.states.get_mut(name) else {
            return;
        };
        state.in_flight = false;
        if state.fingerprint != *probed {
            state.next_probe = state.fingerprint.probeable().then_some(now);
            return;
        }
        state.last = Some(LastProbe { at: now, found });
        let delay = if found.is_some() {
            state.failures = 0;
            config.refresh
        } else {
            state.failures = state.failures.saturating_add(1);
            backoff(config, state.failures)
        };
        state.next_probe = Some(now + delay + jitter(name, state.failures, delay));
    }

    pub fn state(&self, name: &str) -> Option<&ProbeState> {
        self.states.get(name)
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// `first_backoff * 2^(failures-1)`, at most `max_backoff`.
pub fn backoff(config: &ScheduleConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    config
        .first_backoff
        .checked_mul(1u32 << doublings)
        .unwrap_or(config.max_backoff)
        .min(config.max_backoff)
}

/// 0..10 % of `delay`, from a hash of the name and the attempt (FNV-1a: stable across
/// runs and builds, unlike std's hasher).
fn jitter(name: &str, failures: u32, delay: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain(failures.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    delay / 10 * u32::try_from(hash % 1000).unwrap_or(0) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(value: Option<&str>) -> BTreeMap<String, String> {
        value
            .map(|v| BTreeMap::from([(FUNCTION_DISCOVERY_LABEL.to_string(), v.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn modes() {
        use FdsMode::*;
        let cases = [
            // mode, namespace label, service label, probe?
            (Blacklist, None, None, true),
            (Blacklist, Some("disabled"), None, false),
            (Blacklist, None, Some("disabled"), false),
            (Blacklist, Some("disabled"), Some("enabled"), true),
            (Blacklist, Some("enabled"), Some("disabled"), false),
            (Blacklist, None, Some("maybe"), true),
            (Whitelist, None, None, false),
            (Whitelist, Some("enabled"), None, true),
            (Whitelist, None, Some("enabled"), true),
            (Whitelist, Some("enabled"), Some("disabled"), false),
            (Whitelist, Some("disabled"), Some("enabled"), true),
            (Disabled, Some("enabled"), Some("enabled"), false),
        ];
        for (mode, ns, svc, want) in cases {
            assert_eq!(
                should_probe(mode, &labels(ns), &labels(svc)),
                want,
                "{mode:?} ns={ns:?} svc={svc:?}"
            );
        }
        assert_eq!("whitelist".parse::<FdsMode>().ok(), Some(Whitelist));
        assert_eq!(FdsMode::default(), Blacklist);
        assert!("sometimes".parse::<FdsMode>().is_err());
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        let config = ScheduleConfig::default();
        let secs: Vec<u64> = (1..=10).map(|n| backoff(&config, n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(&config, u32::MAX), config.max_backoff);
    }

    fn fp(endpoints: &[(&str, u32)]) -> Fingerprint {
        Fingerprint::new(endpoints.iter().map(|(a, p)| (a.to_string(), *p)), Hints::default())
    }

    #[test]
    fn silent_upstream_backs_off_and_endpoint_change_reprobes_at_once() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(ScheduleConfig::default());
        schedule.observe("a", fp(&[("10.0.0.1", 80)]), t0);
        let due = schedule.take_due(t0);
        assert_eq!(due.len(), 1);
        assert!(schedule.take_due(t0).is_empty(), "in flight: not handed out twice");
        let mut now = t0;
        for failures in 1..=9u32 {
            let (_, probed) = &due[0];
            schedule.finished("a", probed, None, now);
            let next = schedule.next_due().expect("scheduled");
            let delay = next - now;
            let base = backoff(&ScheduleConfig::default(), failures);
            assert!(
                delay >= base && delay <= base + base / 10,
                "failure {failures}: {delay:?}"
            );
            assert!(schedule.take_due(next - Duration::from_millis(1)).is_empty());
            now = next;
            assert_eq!(schedule.take_due(now).len(), 1);
        }
        // A pod restart: new address. Due at once, backoff forgotten.
        schedule.finished("a", &fp(&[("10.0.0.1", 80)]), None, now);
        schedule.observe("a", fp(&[("10.0.0.2", 80)]), now);
        assert_eq!(schedule.state("a").map(|s| s.failures), Some(0));
        assert_eq!(schedule.take_due(now).len(), 1);
        // Same fingerprint again: nothing changes.
        schedule.observe("a", fp(&[("10.0.0.2", 80)]), now);
        assert!(schedule.take_due(now).is_empty());
    }

    #[test]
    fn found_refreshes_later_and_stale_results_reprobe() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(ScheduleConfig::default());
        schedule.observe("a", fp(&[("10.0.0.1", 80)]), t0);
        let (_, probed) = schedule.take_due(t0).remove(0);
        // The endpoints change while the probe runs: its result is stale.
        schedule.observe("a", fp(&[("10.0.0.9", 80)]), t0);
        assert!(schedule.take_due(t0).is_empty(), "still in flight");
        schedule.finished("a", &probed, Some(Detector::OpenApi), t0);
        let (_, probed) = schedule.take_due(t0).remove(0);
        assert_eq!(probed.ready_endpoints, [("10.0.0.9".to_string(), 80)]);
        schedule.finished("a", &probed, Some(Detector::Grpc), t0);
        let state = schedule.state("a").expect("state");
        assert_eq!(state.last.map(|l| l.found), Some(Some(Detector::Grpc)));
        let delay = state.next_probe.expect("next") - t0;
        assert!(delay >= Duration::from_secs(1800) && delay <= Duration::from_secs(1980));
    }

    #[test]
    fn no_ready_endpoint_is_not_due_until_one_appears() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(ScheduleConfig::default());
        schedule.observe("b", fp(&[]), t0);
        schedule.observe("a", fp(&[("10.0.0.1", 80)]), t0 + Duration::from_secs(1));
        assert_eq!(schedule.next_due(), Some(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(5);
        schedule.observe("b", fp(&[("10.0.0.2", 80)]), later);
        let names: Vec<_> = schedule.take_due(later).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"], "earliest first");
        schedule.forget("a");
        schedule.retain(|n| n != "b");
        assert!(schedule.is_empty());
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let d = Duration::from_secs(100);
        assert_eq!(jitter("x", 3, d), jitter("x", 3, d));
        assert!((0..50).all(|n| jitter(&format!("u{n}"), 1, d) < Duration::from_secs(10)));
        assert!((0..50).any(|n| jitter(&format!("u{n}"), 1, d) != jitter("u0", 1, d)));
    }
}

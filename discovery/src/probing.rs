//! Function discovery at work: probes the Upstreams of the shards this replica owns, when
//! [`crate::fds::schedule`] says they are due, and adds what it finds (functions, gRPC
//! descriptors) to their values before the KV writer writes them. What each probe found is
//! also published per Upstream as a [`ProbeStatus`] (bucket `kgw_discovery_probes`).
//!
//! A probe that finds nothing keeps the functions an earlier probe found: a Service that
//! stops answering for a while does not lose its routes' functions; a new document
//! replaces them. At start, the functions already in the bucket count as found, so a
//! restart rewrites nothing that is right (and routes never lose their functions).
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use kgw_common::{
    bus::{self, Bus, KvState},
    resources::Index,
    shutdown::Shutdown,
};
use kgw_proto::{
    nats::UPSTREAMS_BUCKET,
    v1::{ProbeStatus, Upstream, upstream::UpstreamType},
};
use prost::Message as _;
use tokio::{sync::watch, task::JoinSet};

use crate::fds::{
    self, Detector, Hints, ProbeResult, Prober, Target,
    schedule::{self, FdsMode, Fingerprint, Schedule, ScheduleConfig},
};

/// What the index says about probing one Upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProbeInput {
    pub(crate) hints: Hints,
    /// fdsMode and the labels allow probing it.
    pub(crate) enabled: bool,
}

/// Per Upstream key, whether and how to probe it: kube Upstreams by their Service's labels,
/// annotation and port protocol; declared static ones by their own labels. Lambda
/// Upstreams are listed with credentials from a Secret, which discovery does not read yet.
pub(crate) fn probe_inputs(
    index: &Index,
    upstreams: &BTreeMap<String, Upstream>,
    mode: FdsMode,
) -> BTreeMap<String, ProbeInput> {
    let no_labels = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (key, upstream) in upstreams {
        let input = match &upstream.upstream_type {
            Some(UpstreamType::Kube(kube)) => {
                let service = index
                    .services
                    .get(&(kube.service_namespace.clone(), kube.service_name.clone()));
                let Some(service) = service else { continue };
                let labels = service.metadata.labels.as_ref().unwrap_or(&no_labels);
                // The namespace's label applies to its Services that carry none.
                let namespace_labels = index
                    .namespaces
                    .get(&kube.service_namespace)
                    .and_then(|n| n.metadata.labels.as_ref())
                    .unwrap_or(&no_labels);
                ProbeInput {
                    hints: Hints::from_service(service, &kube.app_protocol),
                    enabled: schedule::should_probe(mode, namespace_labels, labels),
                }
            }
            Some(UpstreamType::Static(hosts)) => {
                let labels = upstream.metadata.as_ref().map(|m| &m.labels).unwrap_or(&no_labels);
                ProbeInput {
                    hints: Hints {
                        openapi_path: None,
                        http2: hosts.app_protocol == "HTTP2",
                    },
                    enabled: schedule::should_probe(mode, &no_labels, labels),
                }
            }
            _ => continue,
        };
        out.insert(key.clone(), input);
    }
    out
}

/// What was found on one Upstream.
#[derive(Debug)]
struct Found {
    functions: Vec<kgw_proto::v1::Function>,
    descriptors: Vec<u8>,
    detector: Detector,
    source: String,
}

/// The probing task's outputs.
pub(crate) struct Outputs {
    /// The writer-bound state with the functions found.
    pub(crate) enriched: watch::Receiver<KvState>,
    /// A [`ProbeStatus`] per Upstream owned.
    pub(crate) statuses: watch::Receiver<KvState>,
    /// True once the functions already in the bucket were read: before that `enriched`
    /// lacks them, and writing it would strip them.
    pub(crate) ready: watch::Receiver<bool>,
}

/// The probing task: reads the writer-bound state (`scoped`, the owned shards' Upstreams)
/// and the probe inputs; returns the state with functions added, and the probe statuses.
pub(crate) fn spawn(
    bus: Bus,
    mut scoped: watch::Receiver<KvState>,
    mut inputs: watch::Receiver<Arc<BTreeMap<String, ProbeInput>>>,
    prober: Prober,
    replica: String,
    shutdown: Shutdown,
) -> Outputs {
    let first = scoped.borrow_and_update().clone();
    let (enriched_tx, enriched) = watch::channel(first.clone());
    let (status_tx, statuses) = watch::channel(KvState {
        scope: first.scope.clone(),
        ..Default::default()
    });
    let (ready_tx, ready) = watch::channel(false);
    tokio::spawn(async move {
        let Some(existing) = functions_in_bucket(&bus, &shutdown).await else {
            return;
        };
        let mut state = Probing {
            schedule: Schedule::new(ScheduleConfig::default()),
            found: BTreeMap::new(),
            errors: BTreeMap::new(),
            times: BTreeMap::new(),
            targets: BTreeMap::new(),
            encoded: BTreeMap::new(),
            seed: BTreeMap::new(),
            replica,
        };
        state.seed = existing;
        let mut running: JoinSet<(String, Fingerprint, ProbeResult)> = JoinSet::new();
        // Probes in flight at most: more would only wait for the prober's permits, each
        // holding its future's memory.
        let limit = prober.config().concurrency.max(1);
        let mut current = KvState::default();
        let mut probe_inputs = Arc::default();
        // What to redo this round: everything when the owned Upstreams or the inputs
        // changed; else only the Upstream whose probe ended.
        let mut inputs_changed = true;
        let mut probed: Option<String> = None;
        loop {
            let now = Instant::now();
            if inputs_changed {
                current = scoped.borrow_and_update().clone();
                probe_inputs = inputs.borrow_and_update().clone();
                state.observe(&current, &probe_inputs, now);
                enriched_tx.send_replace(state.enrich(&current));
                status_tx.send_replace(state.statuses(&current, &probe_inputs));
                ready_tx.send_if_modified(|ready| !std::mem::replace(ready, true));
            } else if let Some(key) = probed.take() {
                let enriched = state.enrich_one(&enriched_tx.borrow(), &current, &key);
                if let Some(enriched) = enriched {
                    enriched_tx.send_replace(enriched);
                }
                let statuses = state.status_one(&status_tx.borrow(), &current, &probe_inputs, &key);
                if let Some(statuses) = statuses {
                    status_tx.send_replace(statuses);
                }
            }
            inputs_changed = false;
            let room = limit.saturating_sub(running.len());
            for (key, fingerprint) in state.schedule.take_due_at_most(now, room) {
                let Some(target) = state.targets.get(&key).map(|(_, target)| target.clone()) else {
                    state.schedule.finished(&key, &fingerprint, None, now);
                    continue;
                };
                let prober = prober.clone();
                let hints = fingerprint.hints.clone();
                running.spawn(async move {
                    let result = prober.probe(&target, &hints).await;
                    (key, fingerprint, result)
                });
            }
            // Woken by the schedule only when a probe could start.
            let wake = state
                .schedule
                .next_due()
                .filter(|_| running.len() < limit)
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = scoped.changed() => if changed.is_err() { return } else { inputs_changed = true },
                changed = inputs.changed() => if changed.is_err() { return } else { inputs_changed = true },
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((key, fingerprint, result)) = done {
                        state.finished(key.clone(), &fingerprint, result);
                        probed = Some(key);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    });
    Outputs {
        enriched,
        statuses,
        ready,
    }
}

/// The functions discovery wrote on the Upstreams in the bucket (`None`: shutdown first).
async fn functions_in_bucket(bus: &Bus, shutdown: &Shutdown) -> Option<BTreeMap<String, Found>> {
    let store = bus.kv(UPSTREAMS_BUCKET, shutdown).await.ok()?;
    let mut delay = Duration::from_millis(50);
    loop {
        match bus::read_all(&store).await {
            Ok(all) => {
                let found = all
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let upstream = Upstream::decode(value.as_ref()).ok()?;
                        let detector = upstream.functions.first().and_then(|f| Detector::from_kind(&f.kind))?;
                        let found = Found {
                            functions: upstream.functions,
                            descriptors: upstream.grpc_descriptors,
                            detector,
                            source: "found before this process started".into(),
                        };
                        Some((key, found))
                    })
                    .collect();
                return Some(found);
            }
            Err(error) => tracing::warn!(%error, "cannot read the upstreams' functions yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

struct Probing {
    schedule: Schedule,
    found: BTreeMap<String, Found>,
    /// The last probe's error, for those that found nothing.
    errors: BTreeMap<String, String>,
    /// When each was last probed and is due next (unix ms), fixed when a probe ends so
    /// that statuses change only then.
    times: BTreeMap<String, (i64, i64)>,
    /// What to probe per Upstream key (enabled ones), with the value it was read from.
    targets: BTreeMap<String, (Bytes, Target)>,
    /// Functions in the bucket when this process started, by key: taken as found when the
    /// key is first owned here (and replaced by what probes find).
    seed: BTreeMap<String, Found>,
    /// Each status as last encoded: re-encoded only when it changed.
    encoded: BTreeMap<String, (ProbeStatus, Bytes)>,
    replica: String,
}

impl Probing {
    /// Brings the schedule in line with the Upstreams owned and their inputs.
    /// Decodes only the values that changed since the last call.
    fn observe(&mut self, current: &KvState, inputs: &BTreeMap<String, ProbeInput>, now: Instant) {
        let mut targets = BTreeMap::new();
        for (key, value) in current.values.iter() {
            let Some(input) = inputs.get(key).filter(|i| i.enabled) else {
                continue;
            };
            let target = match self.targets.remove(key) {
                Some((seen, target)) if seen == *value => target,
                _ => {
                    let Ok(upstream) = Upstream::decode(value.as_ref()) else {
                        continue;
                    };
                    Target::from_upstream(&upstream)
                }
            };
            self.schedule.observe(key, target.fingerprint(&input.hints), now);
            if !self.found.contains_key(key)
                && let Some(seeded) = self.seed.remove(key)
            {
                self.found.insert(key.clone(), seeded);
            }
            targets.insert(key.clone(), (value.clone(), target));
        }
        self.schedule.retain(|key| targets.contains_key(key));
        self.found.retain(|key, _| targets.contains_key(key));
        self.errors.retain(|key, _| targets.contains_key(key));
        self.times.retain(|key, _| targets.contains_key(key));
        self.targets = targets;
    }

    fn finished(&mut self, key: String, fingerprint: &Fingerprint, result: ProbeResult) {
        let now = Instant::now();
        self.schedule.finished(&key, fingerprint, result.detector, now);
        let wall_ms = |at: Instant| -> i64 {
            let wall = SystemTime::now().checked_add(at.saturating_duration_since(now));
            wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let next = self.schedule.state(&key).and_then(|s| s.next_probe).map_or(0, wall_ms);
        self.times.insert(key.clone(), (wall_ms(now), next));
        match result.detector {
            Some(detector) => {
                self.errors.remove(&key);
                self.found.insert(
                    key,
                    Found {
                        functions: result.functions,
                        descriptors: result.descriptors,
                        detector,
                        source: result.source,
                    },
                );
            }
            None => {
                let error = result.error.as_ref().map(|e| fds::chain(e)).unwrap_or_default();
                self.errors.insert(key, error);
            }
        }
    }

    /// `current` with the functions found added to their Upstreams.
    fn enrich(&self, current: &KvState) -> KvState {
        if self.found.is_empty() {
            return current.clone();
        }
        let mut values: BTreeMap<String, Bytes> = (*current.values).clone();
        for (key, found) in &self.found {
            let Some(value) = values.get_mut(key) else { continue };
            let Ok(mut upstream) = Upstream::decode(value.as_ref()) else {
                continue;
            };
            upstream.functions = found.functions.clone();
            upstream.grpc_descriptors = found.descriptors.clone();
            *value = Bytes::from(upstream.encode_to_vec());
        }
        KvState {
            values: Arc::new(values),
            trace: current.trace.clone(),
            scope: current.scope.clone(),
        }
    }

    /// `last` (what [`Self::enrich`] gave for `current`) with the Upstream under `key`
    /// enriched again; `None` when its value is the same.
    fn enrich_one(&self, last: &KvState, current: &KvState, key: &str) -> Option<KvState> {
        let value = current.values.get(key)?;
        let value = match self.found.get(key) {
            Some(found) => {
                let mut upstream = Upstream::decode(value.as_ref()).ok()?;
                upstream.functions = found.functions.clone();
                upstream.grpc_descriptors = found.descriptors.clone();
                Bytes::from(upstream.encode_to_vec())
            }
            None => value.clone(),
        };
        if last.values.get(key) == Some(&value) {
            return None;
        }
        let mut values = (*last.values).clone();
        values.insert(key.to_string(), value);
        Some(KvState {
            values: Arc::new(values),
            trace: last.trace.clone(),
            scope: last.scope.clone(),
        })
    }

    /// `last` (what [`Self::statuses`] gave for `current`) with the status of `key` made
    /// again; `None` when it is the same.
    fn status_one(
        &mut self,
        last: &KvState,
        current: &KvState,
        inputs: &BTreeMap<String, ProbeInput>,
        key: &str,
    ) -> Option<KvState> {
        let input = inputs.get(key).filter(|_| current.values.contains_key(key))?;
        let status = self.status(key, input);
        if self
            .encoded
            .get(key)
            .is_some_and(|(last_status, _)| *last_status == status)
        {
            return None;
        }
        let bytes = Bytes::from(status.encode_to_vec());
        self.encoded.insert(key.to_string(), (status, bytes.clone()));
        let mut values = (*last.values).clone();
        values.insert(key.to_string(), bytes);
        Some(KvState {
            values: Arc::new(values),
            trace: None,
            scope: last.scope.clone(),
        })
    }

    fn status(&self, key: &str, input: &ProbeInput) -> ProbeStatus {
        let state = self.schedule.state(key);
        let found = self.found.get(key);
        ProbeStatus {
            replica: self.replica.clone(),
            detector: found.map(|f| f.detector.kind().to_string()).unwrap_or_default(),
            functions: found.map_or(0, |f| f.functions.len() as u32),
            source: found.map(|f| f.source.clone()).unwrap_or_default(),
            error: self.errors.get(key).cloned().unwrap_or_default(),
            failures: state.map_or(0, |s| s.failures),
            probed_at_unix_ms: self.times.get(key).map_or(0, |t| t.0),
            next_probe_unix_ms: self.times.get(key).map_or(0, |t| t.1),
            enabled: input.enabled,
        }
    }

    /// A [`ProbeStatus`] per Upstream owned that has probe inputs, scoped as `current`.
    fn statuses(&mut self, current: &KvState, inputs: &BTreeMap<String, ProbeInput>) -> KvState {
        let mut values = BTreeMap::new();
        let mut encoded = BTreeMap::new();
        for key in current.values.keys() {
            let Some(input) = inputs.get(key) else { continue };
            let status = self.status(key, input);
            let bytes = match self.encoded.remove(key) {
                Some((last, bytes)) if last == status => bytes,
                _ => Bytes::from(status.encode_to_vec()),
            };
            values.insert(key.clone(), bytes.clone());
            encoded.insert(key.clone(), (status, bytes));
        }
        self.encoded = encoded;
        KvState {
            values: Arc::new(values),
            trace: None,
            scope: current.scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgw_common::resources::{Change, decode};

    fn index(yaml: &str) -> Index {
        let mut index = Index::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("yaml");
            if let Some((key, resource)) = decode(value).expect("valid") {
                index.apply(&Change::Upsert(key, resource));
            }
        }
        index
    }

    /// A namespace's label decides for its Services without one; a Service's own wins.
    #[test]
    fn a_namespace_label_turns_discovery_off_for_its_services_without_one() {
        let service = |name: &str, label: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: quiet{label}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n"
            )
        };
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: quiet, labels: {{discovery.solo.io/function_discovery: disabled}}}}\n---\n{}{}",
            service("plain", ""),
            service("opted-in", ", labels: {discovery.solo.io/function_discovery: enabled}"),
        );
        let index = index(&yaml);
        let upstreams = kgw_common::upstreams::upstreams(&index);
        let inputs = probe_inputs(&index, &upstreams, FdsMode::Blacklist);
        let enabled = |service: &str| {
            inputs
                .iter()
                .find(|(key, _)| key.contains(service))
                .map(|(_, input)| input.enabled)
        };
        assert_eq!(enabled("plain"), Some(false), "{inputs:?}");
        assert_eq!(enabled("opted-in"), Some(true), "{inputs:?}");
    }
}

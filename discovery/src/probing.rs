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
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kgw_common::{
    bus::{self, Bus, KvState},
    resources::{Change, Index, Resource},
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
    /// A Lambda Upstream: its region and the credentials of its Secret, or what is
    /// missing (set on its [`Target`] before probing).
    pub(crate) lambda: Option<Arc<fds::LambdaInput>>,
}

/// Per Upstream key, whether and how to probe it: kube Upstreams by their Service's labels,
/// annotation and port protocol; declared static and Lambda ones by their own labels.
/// Lambda Upstreams are listed with the credentials of the Secret they name.
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
                    hints: Hints::from_service(service, &kube.app_protocol, kube.service_port),
                    enabled: schedule::should_probe(mode, namespace_labels, labels),
                    lambda: None,
                }
            }
            Some(UpstreamType::Static(hosts)) => {
                let labels = upstream.metadata.as_ref().map(|m| &m.labels).unwrap_or(&no_labels);
                ProbeInput {
                    hints: Hints {
                        openapi_path: None,
                        http2: hosts.app_protocol == "HTTP2",
                        tls: fds::TlsHint::from_static(hosts),
                    },
                    enabled: schedule::should_probe(mode, &no_labels, labels),
                    lambda: None,
                }
            }
            Some(UpstreamType::Aws(aws)) => {
                let labels = upstream.metadata.as_ref().map(|m| &m.labels).unwrap_or(&no_labels);
                let enabled = schedule::should_probe(mode, &no_labels, labels);
                ProbeInput {
                    hints: Hints::default(),
                    enabled,
                    // Secrets are read only for the Upstreams that will be listed.
                    lambda: enabled.then(|| Arc::new(lambda_input(index, aws))),
                }
            }
            None => continue,
        };
        out.insert(key.clone(), input);
    }
    out
}

/// Gloo's AWS Secret keys.
const AWS_ACCESS_KEY_ID: &str = "aws_access_key_id";
const AWS_SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
const AWS_SESSION_TOKEN: &str = "aws_session_token";

/// A Lambda Upstream's region and credentials, from the Secret it names (Gloo's shape:
/// `aws_access_key_id`, `aws_secret_access_key`, optional `aws_session_token`, in `data`,
/// or in `stringData` as a directory of manifests may hold them); else what is missing.
fn lambda_input(index: &Index, aws: &kgw_proto::v1::AwsUpstream) -> fds::LambdaInput {
    let Some(secret_ref) = aws.secret_ref.as_ref().filter(|r| !r.name.is_empty()) else {
        return Err("the Upstream names no Secret (spec.aws.secretRef)".into());
    };
    let (namespace, name) = (&secret_ref.namespace, &secret_ref.name);
    let Some(secret) = index.secrets.get(&(namespace.clone(), name.clone())) else {
        return Err(format!("Secret {namespace}/{name} not found"));
    };
    let value = |key: &str| -> Result<Option<String>, String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.as_bytes())
            });
        let Some(bytes) = bytes else { return Ok(None) };
        let text = std::str::from_utf8(bytes).map_err(|_| format!("Secret {namespace}/{name}: {key} is not UTF-8"))?;
        // `echo ... | base64` leaves a newline in many Secrets.
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    };
    let required = |key: &str| value(key)?.ok_or_else(|| format!("Secret {namespace}/{name} has no {key}"));
    Ok(fds::LambdaTarget {
        region: aws.region.clone(),
        credentials: fds::Credentials {
            access_key_id: required(AWS_ACCESS_KEY_ID)?,
            secret_access_key: required(AWS_SECRET_ACCESS_KEY)?,
            session_token: value(AWS_SESSION_TOKEN)?,
        },
        endpoint: None,
        page_size: None,
    })
}

/// A Secret change as discovery keeps it: only its name and Gloo's AWS keys (the index
/// would otherwise hold every Secret of the cluster, TLS keys and Helm releases included).
/// `None` when it changes nothing discovery keeps (another key of a Secret changed).
pub(crate) fn secret_change(index: &Index, change: &Change) -> Option<Change> {
    let Change::Upsert(key, Resource::Secret(secret)) = change else {
        return Some(change.clone());
    };
    /// The AWS keys of one of the Secret's maps (`None` when it has none).
    fn aws_keys<V: Clone>(map: Option<&BTreeMap<String, V>>) -> Option<BTreeMap<String, V>> {
        let kept: BTreeMap<String, V> = map?
            .iter()
            .filter(|(k, _)| [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!kept.is_empty()).then_some(kept)
    }
    let slim = Secret {
        metadata: ObjectMeta {
            name: secret.metadata.name.clone(),
            namespace: secret.metadata.namespace.clone(),
            ..Default::default()
        },
        data: aws_keys(secret.data.as_ref()),
        string_data: aws_keys(secret.string_data.as_ref()),
        ..Default::default()
    };
    let kept = index.secrets.get(&(key.namespace.clone(), key.name.clone()));
    if kept.is_some_and(|k| **k == slim) {
        return None;
    }
    Some(Change::Upsert(key.clone(), Resource::Secret(Arc::new(slim))))
}

/// The functions an Upstream declares (a Lambda Upstream's `lambdaFunctions`; none for
/// the others) and those found, by name, the declared winning (their logical name may be
/// a found function's name); sorted by name.
fn with_declared(
    declared: Vec<kgw_proto::v1::Function>,
    found: &[kgw_proto::v1::Function],
) -> Vec<kgw_proto::v1::Function> {
    if declared.is_empty() {
        return found.to_vec();
    }
    let mut all = declared;
    let names: std::collections::BTreeSet<String> = all.iter().map(|f| f.name.clone()).collect();
    all.extend(found.iter().filter(|f| !names.contains(&f.name)).cloned());
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
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
            probes: BTreeMap::new(),
            observed: KvState::default(),
            observed_inputs: Arc::default(),
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
                // In place: the writer holds no copy of the map between its writes.
                status_tx.send_modify(|last| state.statuses(last, &current, &probe_inputs));
                ready_tx.send_if_modified(|ready| !std::mem::replace(ready, true));
            } else if let Some(key) = probed.take() {
                enriched_tx.send_if_modified(|last| state.enrich_one(last, &current, &key));
                status_tx.send_if_modified(|last| state.status_one(last, &current, &probe_inputs, &key));
            }
            inputs_changed = false;
            let room = limit.saturating_sub(running.len());
            for (key, fingerprint) in state.schedule.take_due_at_most(now, room) {
                // Made again from the value and inputs observed (as cheap as keeping it).
                let target = current
                    .values
                    .get(&key)
                    .zip(probe_inputs.get(&key))
                    .and_then(|(value, input)| target_of(value, input));
                let Some(target) = target else {
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

/// What to probe for the Upstream `value` with `input` (`None`: it does not decode).
fn target_of(value: &Bytes, input: &ProbeInput) -> Option<Target> {
    let upstream = Upstream::decode(value.as_ref()).ok()?;
    let mut target = Target::from_upstream(&upstream);
    // From the Secret, which the value does not hold.
    target.lambda.clone_from(&input.lambda);
    Some(target)
}

/// The last probe of one Upstream.
struct Probed {
    /// When it was probed and is due next (unix ms), fixed when a probe ends so that
    /// statuses change only then.
    at_ms: i64,
    next_ms: i64,
    /// Its error, when it found nothing.
    error: Box<str>,
}

/// The probing task's state. Per Upstream it keeps only what the owned state and the
/// statuses do not hold already: the schedule, what was found, the last probe. Targets
/// are made again from the (shared) values when a probe starts.
struct Probing {
    /// The Upstreams to probe (enabled, decodable): the keys of every map below.
    schedule: Schedule,
    found: BTreeMap<String, Found>,
    probes: BTreeMap<String, Probed>,
    /// The owned state and the inputs the schedule was last brought in line with (shared
    /// with the task): values unchanged since are not decoded again.
    observed: KvState,
    observed_inputs: Arc<BTreeMap<String, ProbeInput>>,
    /// Functions in the bucket when this process started, by key: taken as found when the
    /// key is first owned here (and replaced by what probes find).
    seed: BTreeMap<String, Found>,
    replica: String,
}

impl Probing {
    /// Brings the schedule in line with the Upstreams owned and their inputs.
    /// Decodes only the values that changed since the last call.
    fn observe(&mut self, current: &KvState, inputs: &Arc<BTreeMap<String, ProbeInput>>, now: Instant) {
        let enabled = |key: &str| inputs.get(key).filter(|i| i.enabled);
        for (key, value) in current.values.iter() {
            let Some(input) = enabled(key) else {
                continue;
            };
            let same = self.schedule.state(key).is_some()
                && self.observed.values.get(key) == Some(value)
                && self.observed_inputs.get(key) == Some(input);
            if !same {
                let Some(target) = target_of(value, input) else {
                    self.schedule.forget(key);
                    continue;
                };
                self.schedule.observe(key, target.fingerprint(&input.hints), now);
            }
            if !self.found.contains_key(key)
                && let Some(seeded) = self.seed.remove(key)
            {
                self.found.insert(key.clone(), seeded);
            }
        }
        self.schedule
            .retain(|key| current.values.contains_key(key) && enabled(key).is_some());
        let schedule = &self.schedule;
        self.found.retain(|key, _| schedule.state(key).is_some());
        self.probes.retain(|key, _| schedule.state(key).is_some());
        self.observed = current.clone();
        self.observed_inputs = Arc::clone(inputs);
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
        let error = match result.detector {
            Some(_) => Box::default(),
            None => result.error.as_ref().map(|e| fds::chain(e)).unwrap_or_default().into(),
        };
        let probed = Probed {
            at_ms: wall_ms(now),
            next_ms: next,
            error,
        };
        self.probes.insert(key.clone(), probed);
        if let Some(detector) = result.detector {
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
            upstream.functions = with_declared(std::mem::take(&mut upstream.functions), &found.functions);
            upstream.grpc_descriptors = found.descriptors.clone();
            *value = Bytes::from(upstream.encode_to_vec());
        }
        KvState {
            values: Arc::new(values),
            trace: current.trace.clone(),
            scope: current.scope.clone(),
        }
    }

    /// Enriches the Upstream under `key` again in `last` (what [`Self::enrich`] gave for
    /// `current`), in place; false when its value is the same.
    fn enrich_one(&self, last: &mut KvState, current: &KvState, key: &str) -> bool {
        let Some(value) = current.values.get(key) else {
            return false;
        };
        let value = match self.found.get(key) {
            Some(found) => {
                let Ok(mut upstream) = Upstream::decode(value.as_ref()) else {
                    return false;
                };
                upstream.functions = with_declared(std::mem::take(&mut upstream.functions), &found.functions);
                upstream.grpc_descriptors = found.descriptors.clone();
                Bytes::from(upstream.encode_to_vec())
            }
            None => value.clone(),
        };
        if last.values.get(key) == Some(&value) {
            return false;
        }
        // Copied only while another holder shares the map (at most once per state).
        Arc::make_mut(&mut last.values).insert(key.to_string(), value);
        true
    }

    /// Makes the status of `key` again in `last` (what [`Self::statuses`] gave for
    /// `current`), in place; false when it is the same. Statuses are kept encoded only.
    fn status_one(
        &self,
        last: &mut KvState,
        current: &KvState,
        inputs: &BTreeMap<String, ProbeInput>,
        key: &str,
    ) -> bool {
        let Some(input) = inputs.get(key).filter(|_| current.values.contains_key(key)) else {
            return false;
        };
        let bytes = self.status(key, input).encode_to_vec();
        if last.values.get(key).is_some_and(|old| old[..] == bytes[..]) {
            return false;
        }
        Arc::make_mut(&mut last.values).insert(key.to_string(), Bytes::from(bytes));
        true
    }

    fn status(&self, key: &str, input: &ProbeInput) -> ProbeStatus {
        let state = self.schedule.state(key);
        let found = self.found.get(key);
        ProbeStatus {
            replica: self.replica.clone(),
            detector: found.map(|f| f.detector.kind().to_string()).unwrap_or_default(),
            functions: found.map_or(0, |f| f.functions.len() as u32),
            source: found.map(|f| f.source.clone()).unwrap_or_default(),
            error: self.probes.get(key).map(|p| p.error.to_string()).unwrap_or_default(),
            failures: state.map_or(0, |s| s.failures),
            probed_at_unix_ms: self.probes.get(key).map_or(0, |p| p.at_ms),
            next_probe_unix_ms: self.probes.get(key).map_or(0, |p| p.next_ms),
            enabled: input.enabled,
        }
    }

    /// Makes `last` a [`ProbeStatus`] per Upstream owned that has probe inputs, scoped as
    /// `current`: in place, statuses that did not change keep their bytes.
    fn statuses(&self, last: &mut KvState, current: &KvState, inputs: &BTreeMap<String, ProbeInput>) {
        let values = Arc::make_mut(&mut last.values);
        values.retain(|key, _| current.values.contains_key(key) && inputs.contains_key(key));
        let mut bytes = Vec::new();
        for key in current.values.keys() {
            let Some(input) = inputs.get(key) else { continue };
            bytes.clear();
            if self.status(key, input).encode(&mut bytes).is_err() {
                continue;
            }
            if values.get(key).is_some_and(|old| old[..] == bytes[..]) {
                continue;
            }
            values.insert(key.clone(), Bytes::copy_from_slice(&bytes));
        }
        last.trace = None;
        last.scope = current.scope.clone();
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

    const LAMBDA: &str = "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: fns, namespace: prod}\n\
        spec: {aws: {region: eu-west-1, secretRef: {name: creds}}}\n---\n";

    fn lambda_of(index: &Index) -> Option<fds::LambdaInput> {
        let upstreams = kgw_common::upstreams::upstreams(index);
        let inputs = probe_inputs(index, &upstreams, FdsMode::Blacklist);
        inputs.get("prod.fns").and_then(|i| i.lambda.as_deref().cloned())
    }

    /// Credentials from `data` (base64) or `stringData`, trimmed; what is missing, named.
    #[test]
    fn lambda_credentials_come_from_the_named_secret() {
        let missing = lambda_of(&index(LAMBDA));
        assert_eq!(missing, Some(Err("Secret prod/creds not found".into())));

        // "AKID\n" and "s3cr3t" in base64; the token in stringData.
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: prod}\n\
            data: {aws_access_key_id: QUtJRAo=, aws_secret_access_key: czNjcjN0}\n\
            stringData: {aws_session_token: tok}\n";
        let Some(Ok(target)) = lambda_of(&index(&format!("{LAMBDA}{secret}"))) else {
            panic!("no target");
        };
        assert_eq!(target.region, "eu-west-1");
        assert_eq!(target.credentials.access_key_id, "AKID");
        assert_eq!(target.credentials.secret_access_key, "s3cr3t");
        assert_eq!(target.credentials.session_token.as_deref(), Some("tok"));

        let half = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: prod}\n\
            stringData: {aws_access_key_id: AKID}\n";
        assert_eq!(
            lambda_of(&index(&format!("{LAMBDA}{half}"))),
            Some(Err("Secret prod/creds has no aws_secret_access_key".into()))
        );
    }

    /// Only the AWS keys of a Secret are kept; a change to its other keys is no change.
    #[test]
    fn secrets_are_kept_slim() {
        let secret = |extra: &str| {
            let yaml = format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: prod, labels: {{a: b}}}}\n\
                 data: {{aws_access_key_id: QUtJRA==, tls.key: {extra}}}\n"
            );
            let value: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("yaml");
            let (key, resource) = decode(value).expect("valid").expect("known");
            Change::Upsert(key, resource)
        };
        let mut index = Index::default();
        let first = secret_change(&index, &secret("c2VjcmV0")).expect("a change");
        index.apply(&first);
        let kept = index
            .secrets
            .get(&("prod".to_string(), "creds".to_string()))
            .expect("kept");
        let keys: Vec<&String> = kept.data.as_ref().expect("data").keys().collect();
        assert_eq!(keys, ["aws_access_key_id"]);
        assert!(kept.metadata.labels.is_none());
        assert!(secret_change(&index, &secret("b3RoZXI=")).is_none());
    }

    /// Ports that only speak TLS get a TLS hint with the Service's DNS name.
    #[test]
    fn tls_ports_are_probed_over_tls() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
            spec: {ports: [{name: http, port: 80}, {name: https, port: 8443}, {name: x, port: 443}, \
            {name: y, port: 9000, appProtocol: tls}, {name: z, port: 443, appProtocol: http}]}\n";
        let index = index(yaml);
        let upstreams = kgw_common::upstreams::upstreams(&index);
        let inputs = probe_inputs(&index, &upstreams, FdsMode::Blacklist);
        let tls: BTreeMap<&str, bool> = inputs
            .iter()
            .map(|(key, input)| (key.as_str(), input.hints.tls.is_some()))
            .collect();
        assert_eq!(
            tls,
            BTreeMap::from([
                ("shop.shop-web-443", true),
                ("shop.shop-web-80", false),
                ("shop.shop-web-8443", true),
                ("shop.shop-web-9000", true),
            ]),
            "{inputs:?}"
        );
        let hint = inputs["shop.shop-web-8443"].hints.tls.clone().expect("tls");
        assert_eq!(hint.server_name.as_deref(), Some("web.shop.svc.cluster.local"));
    }
}

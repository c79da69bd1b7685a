//! The pure part of the Kubernetes source: watcher events of every (kind, namespace) watcher
//! → [`Batch`]es. Each watcher's initial list is buffered and, at its end, diffed against what
//! that watcher held before, so a relist (after a desync, or an API server restart) emits only
//! what really changed. The first batch (`initial: true`) goes out once every watcher has
//! finished its first list, so consumers never see a partial cluster as the whole state.
use std::{collections::BTreeMap, sync::Arc};

use super::{Batch, Problem};
use crate::resources::{Change, Resource, ResourceKey};

/// Index of a watcher in the [`RelistState`] (the order the source created them in).
pub type WatchId = usize;

/// An object as decoded from the API server: the resource, or why it could not be read.
#[derive(Clone, Debug)]
pub enum Decoded {
    Good(ResourceKey, Resource),
    Bad(ResourceKey, String),
}

/// What one watcher reports (kube's `watcher::Event`, decoded, plus its errors).
#[derive(Clone, Debug)]
pub enum Observed {
    /// A (re)list starts: objects follow as `InitApply` until `InitDone`.
    Init,
    InitApply(Decoded),
    InitDone,
    Apply(Decoded),
    Delete(ResourceKey),
    /// The watcher failed; it retries with backoff.
    Failed {
        failure: Failure,
        message: String,
    },
}

/// Why a watcher failed, as far as the config is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The API server does not serve the resource type (its CRD is not installed): a config
    /// problem, and an empty list meanwhile.
    Missing,
    /// We may not read it (RBAC): a config problem.
    Forbidden,
    /// The connection or the API server (a restart, a timeout): logged, retried, and not a
    /// config problem (what we hold keeps serving; a problem would be written and cleared
    /// on every API server restart).
    Transient,
}

/// What one watcher holds: the last good version of each of its objects.
#[derive(Debug)]
struct WatchStore {
    /// `Kind` or `Kind in namespace`, for problems and logs.
    label: String,
    held: BTreeMap<ResourceKey, Resource>,
    /// Objects of the list in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<ResourceKey, Resource>>,
    /// Objects that failed to decode, with why.
    bad: BTreeMap<ResourceKey, String>,
    bad_during_relist: BTreeMap<ResourceKey, String>,
    /// Listed at least once (or known to be absent from the API server).
    listed: bool,
    failure: Option<String>,
}

/// Every watcher of one source.
#[derive(Debug)]
pub struct RelistState {
    stores: Vec<WatchStore>,
    initial_sent: bool,
    last_problems: Vec<Problem>,
}

/// The `file` of problems the Kubernetes source reports.
pub const PROBLEM_SOURCE: &str = "kubernetes";

impl RelistState {
    /// One store per watcher, labelled for problems (e.g. `RouteOption in team-a`).
    pub fn new(labels: Vec<String>) -> Self {
        let stores = labels
            .into_iter()
            .map(|label| WatchStore {
                label,
                held: BTreeMap::new(),
                relist: None,
                bad: BTreeMap::new(),
                bad_during_relist: BTreeMap::new(),
                listed: false,
                failure: None,
            })
            .collect();
        Self {
            stores,
            initial_sent: false,
            last_problems: Vec::new(),
        }
    }

    /// Applies one event; returns the batch to send, if any. Before every watcher has
    /// listed once nothing is sent; then one `initial` batch carries the whole state.
    pub fn observe(&mut self, id: WatchId, event: Observed) -> Option<Batch> {
        let store = self.stores.get_mut(id)?;
        let changes = store.observe(event);
        if !self.initial_sent {
            if !self.stores.iter().all(|s| s.listed) {
                return None;
            }
            self.initial_sent = true;
            let changes = self
                .stores
                .iter()
                .flat_map(|s| s.held.iter())
                .map(|(key, resource)| Change::Upsert(key.clone(), resource.clone()))
                .collect();
            self.last_problems = self.problems();
            return Some(Batch::new(
                "kubernetes",
                changes,
                Arc::new(self.last_problems.clone()),
                true,
            ));
        }
        let problems = self.problems();
        if changes.is_empty() && problems == self.last_problems {
            return None;
        }
        self.last_problems = problems;
        Some(Batch::new(
            "kubernetes",
            changes,
            Arc::new(self.last_problems.clone()),
            false,
        ))
    }

    /// Whether the first (`initial`) batch has gone out.
    pub fn initial_sent(&self) -> bool {
        self.initial_sent
    }

    /// Every current problem: objects that do not decode, watchers that fail.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for store in &self.stores {
            if let Some(message) = &store.failure {
                problems.push(Problem {
                    file: PROBLEM_SOURCE.into(),
                    document: 0,
                    resource: Some(store.label.clone()),
                    message: format!("cannot watch {}: {message}; retrying", store.label),
                });
            }
            for (key, message) in &store.bad {
                let kept = if store.held.contains_key(key) {
                    "; its last good version keeps serving"
                } else {
                    ""
                };
                problems.push(Problem {
                    file: PROBLEM_SOURCE.into(),
                    document: 0,
                    resource: Some(key.to_string()),
                    message: format!("{message}{kept}"),
                });
            }
        }
        problems
    }
}

impl WatchStore {
    fn observe(&mut self, event: Observed) -> Vec<Change> {
        match event {
            Observed::Init => {
                self.relist = Some(BTreeMap::new());
                self.bad_during_relist.clear();
                Vec::new()
            }
            Observed::InitApply(decoded) => {
                self.failure = None;
                let Some(relist) = self.relist.as_mut() else {
                    // An object outside a list: treat it as a plain update.
                    return self.apply(decoded);
                };
                match decoded {
                    Decoded::Good(key, resource) => {
                        relist.insert(key, resource);
                    }
                    Decoded::Bad(key, message) => {
                        if let Some(last_good) = self.held.get(&key) {
                            relist.insert(key.clone(), last_good.clone());
                        }
                        self.bad_during_relist.insert(key, message);
                    }
                }
                Vec::new()
            }
            Observed::InitDone => {
                self.failure = None;
                self.listed = true;
                let Some(listed) = self.relist.take() else {
                    return Vec::new();
                };
                self.bad = std::mem::take(&mut self.bad_during_relist);
                let changes = diff(&self.held, &listed);
                // Keep the listed copies (their status may be newer), even where the diff
                // saw no change.
                self.held = listed;
                changes
            }
            Observed::Apply(decoded) => self.apply(decoded),
            Observed::Delete(key) => {
                self.bad.remove(&key);
                match self.held.remove(&key) {
                    Some(_) => vec![Change::Delete(key)],
                    None => Vec::new(),
                }
            }
            Observed::Failed { failure, message } => {
                // A resource type the API server does not serve is an empty list for now:
                // the other kinds must not wait for a CRD that may never be installed.
                if failure == Failure::Missing && !self.listed {
                    self.listed = true;
                }
                self.relist = None;
                if failure != Failure::Transient {
                    self.failure = Some(message);
                }
                Vec::new()
            }
        }
    }

    fn apply(&mut self, decoded: Decoded) -> Vec<Change> {
        self.failure = None;
        match decoded {
            Decoded::Good(key, resource) => {
                self.bad.remove(&key);
                let changed = self.held.get(&key).is_none_or(|old| !same_input(old, &resource));
                self.held.insert(key.clone(), resource.clone());
                if changed {
                    vec![Change::Upsert(key, resource)]
                } else {
                    Vec::new()
                }
            }
            Decoded::Bad(key, message) => {
                self.bad.insert(key, message);
                Vec::new()
            }
        }
    }
}

/// Changes that turn `before` into `after`: deletes for vanished keys, upserts for new or
/// changed objects (by [`same_input`]).
pub fn diff(before: &BTreeMap<ResourceKey, Resource>, after: &BTreeMap<ResourceKey, Resource>) -> Vec<Change> {
    let deletes = before
        .keys()
        .filter(|key| !after.contains_key(*key))
        .map(|key| Change::Delete(key.clone()));
    let upserts = after
        .iter()
        .filter(|(key, resource)| before.get(*key).is_none_or(|old| !same_input(old, resource)))
        .map(|(key, resource)| Change::Upsert(key.clone(), resource.clone()));
    deletes.chain(upserts).collect()
}

/// Whether two versions of an object are the same input to translation: equal but for
/// `status` (ours to write: our own status writes must not make us translate again).
/// `resourceVersion` and `managedFields` are already stripped when objects are decoded.
pub fn same_input(a: &Resource, b: &Resource) -> bool {
    fn without_status<T: Clone>(value: &T, clear: impl FnOnce(&mut T)) -> T {
        let mut value = value.clone();
        clear(&mut value);
        value
    }
    match (a, b) {
        (Resource::GatewayClass(a), Resource::GatewayClass(b)) => a.spec == b.spec && a.metadata == b.metadata,
        (Resource::Gateway(a), Resource::Gateway(b)) => a.spec == b.spec && a.metadata == b.metadata,
        (Resource::HttpRoute(a), Resource::HttpRoute(b)) => a.spec == b.spec && a.metadata == b.metadata,
        (Resource::RouteOption(a), Resource::RouteOption(b)) => a.spec == b.spec && a.metadata == b.metadata,
        (Resource::Upstream(a), Resource::Upstream(b)) => a.spec == b.spec && a.metadata == b.metadata,
        (Resource::Service(a), Resource::Service(b)) => {
            without_status(a.as_ref(), |s| s.status = None) == without_status(b.as_ref(), |s| s.status = None)
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Kind;
    use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteSpec, HttpRouteStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// An HTTPRoute `default/<name>` with one hostname.
    fn route(name: &str, host: &str) -> Decoded {
        let route = HttpRoute {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: HttpRouteSpec {
                hostnames: Some(vec![host.into()]),
                ..Default::default()
            },
            status: None,
        };
        Decoded::Good(key(name), Resource::HttpRoute(Arc::new(route)))
    }

    fn with_status(decoded: Decoded) -> Decoded {
        let Decoded::Good(key, Resource::HttpRoute(route)) = decoded else {
            panic!("a route")
        };
        let mut route = route.as_ref().clone();
        route.status = Some(HttpRouteStatus { parents: Vec::new() });
        Decoded::Good(key, Resource::HttpRoute(Arc::new(route)))
    }

    fn key(name: &str) -> ResourceKey {
        ResourceKey {
            kind: Kind::HttpRoute,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn names(batch: &Batch) -> Vec<String> {
        batch
            .changes
            .iter()
            .map(|c| match c {
                Change::Upsert(k, _) => format!("+{k}"),
                Change::Delete(k) => format!("-{k}"),
            })
            .collect()
    }

    fn list(state: &mut RelistState, id: WatchId, objects: Vec<Decoded>) -> Option<Batch> {
        let mut last = state.observe(id, Observed::Init);
        for object in objects {
            last = last.or(state.observe(id, Observed::InitApply(object)));
        }
        last.or(state.observe(id, Observed::InitDone))
    }

    #[test]
    fn initial_batch_waits_for_every_watcher() {
        let mut state = RelistState::new(vec!["HTTPRoute".into(), "Service".into()]);
        assert!(
            list(&mut state, 0, vec![route("a", "a.example")]).is_none(),
            "Service not listed yet"
        );
        let batch = list(&mut state, 1, vec![]).expect("both listed");
        assert!(batch.initial);
        assert_eq!(names(&batch), ["+HTTPRoute/default/a"]);
        let next = state
            .observe(0, Observed::Apply(route("b", "b.example")))
            .expect("a change");
        assert!(!next.initial);
        assert_eq!(names(&next), ["+HTTPRoute/default/b"]);
    }

    #[test]
    fn events_before_the_initial_batch_are_part_of_it() {
        let mut state = RelistState::new(vec!["HTTPRoute".into(), "Service".into()]);
        list(&mut state, 0, vec![route("a", "a.example")]);
        assert!(state.observe(0, Observed::Apply(route("b", "b.example"))).is_none());
        assert!(state.observe(0, Observed::Delete(key("a"))).is_none());
        let batch = list(&mut state, 1, vec![]).expect("initial");
        assert_eq!(names(&batch), ["+HTTPRoute/default/b"]);
    }

    #[test]
    fn relist_emits_only_real_changes() {
        let mut state = RelistState::new(vec!["HTTPRoute".into()]);
        list(
            &mut state,
            0,
            vec![
                route("a", "a.example"),
                route("b", "b.example"),
                route("c", "c.example"),
            ],
        );
        // After a desync: a unchanged (but with a status now), b changed, c gone, d new.
        let batch = list(
            &mut state,
            0,
            vec![
                with_status(route("a", "a.example")),
                route("b", "b2.example"),
                route("d", "d.example"),
            ],
        )
        .expect("changes");
        assert_eq!(
            names(&batch),
            ["-HTTPRoute/default/c", "+HTTPRoute/default/b", "+HTTPRoute/default/d"]
        );
        assert!(
            list(
                &mut state,
                0,
                vec![
                    route("a", "a.example"),
                    route("b", "b2.example"),
                    route("d", "d.example")
                ]
            )
            .is_none(),
            "an identical relist sends nothing"
        );
    }

    #[test]
    fn status_only_updates_are_not_changes() {
        let mut state = RelistState::new(vec!["HTTPRoute".into()]);
        list(&mut state, 0, vec![route("a", "a.example")]);
        assert!(
            state
                .observe(0, Observed::Apply(with_status(route("a", "a.example"))))
                .is_none()
        );
    }

    #[test]
    fn a_bad_object_keeps_its_last_good_version_and_is_a_problem() {
        let mut state = RelistState::new(vec!["HTTPRoute".into()]);
        list(&mut state, 0, vec![route("a", "a.example")]);
        let bad = Decoded::Bad(key("a"), "field `spec.hostnames`: invalid type".into());
        let batch = state.observe(0, Observed::Apply(bad.clone())).expect("a new problem");
        assert!(batch.changes.is_empty(), "a keeps serving");
        assert_eq!(batch.problems.len(), 1);
        assert_eq!(batch.problems[0].resource.as_deref(), Some("HTTPRoute/default/a"));
        assert!(batch.problems[0].message.contains("spec.hostnames"));
        assert!(batch.problems[0].message.contains("last good version"));
        // A relist with the same bad object keeps a, and the problem.
        assert!(list(&mut state, 0, vec![bad]).is_none());
        // Fixed: the problem goes.
        let fixed = state
            .observe(0, Observed::Apply(route("a", "a2.example")))
            .expect("fixed");
        assert_eq!(names(&fixed), ["+HTTPRoute/default/a"]);
        assert!(fixed.problems.is_empty());
    }

    #[test]
    fn a_missing_crd_does_not_block_the_initial_batch() {
        let mut state = RelistState::new(vec!["HTTPRoute".into(), "RouteOption".into()]);
        list(&mut state, 0, vec![route("a", "a.example")]);
        let failed = Observed::Failed {
            failure: Failure::Missing,
            message: "404 not found".into(),
        };
        let batch = state.observe(1, failed.clone()).expect("initial");
        assert!(batch.initial);
        assert_eq!(names(&batch), ["+HTTPRoute/default/a"]);
        assert_eq!(batch.problems.len(), 1);
        assert!(batch.problems[0].message.contains("cannot watch RouteOption"));
        assert!(
            state.observe(1, failed).is_none(),
            "the same failure again: nothing new"
        );
        let recovered = list(&mut state, 1, vec![]).expect("the problem clears");
        assert!(recovered.problems.is_empty());
    }

    #[test]
    fn other_failures_hold_the_initial_batch() {
        let mut state = RelistState::new(vec!["HTTPRoute".into()]);
        let failed = Observed::Failed {
            failure: Failure::Transient,
            message: "connection refused".into(),
        };
        assert!(state.observe(0, Observed::Init).is_none());
        assert!(state.observe(0, failed.clone()).is_none());
        let initial = list(&mut state, 0, vec![route("a", "a.example")]).expect("listed");
        assert!(initial.initial);
        assert!(
            initial.problems.is_empty(),
            "a transient failure is not a config problem"
        );
        // Later (an API server restart): nothing to send, what we hold keeps serving.
        assert!(state.observe(0, failed).is_none());
        assert!(list(&mut state, 0, vec![route("a", "a.example")]).is_none());
    }

    #[test]
    fn a_forbidden_kind_is_a_problem() {
        let mut state = RelistState::new(vec!["HTTPRoute".into()]);
        list(&mut state, 0, vec![route("a", "a.example")]);
        let failed = Observed::Failed {
            failure: Failure::Forbidden,
            message: "403 forbidden".into(),
        };
        let batch = state.observe(0, failed).expect("a new problem");
        assert!(batch.changes.is_empty());
        assert!(batch.problems[0].message.contains("403"), "{:?}", batch.problems);
    }
}

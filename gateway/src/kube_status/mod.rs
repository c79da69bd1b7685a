//! Status written back to the API server (Kubernetes source): GatewayClass, Gateway,
//! HTTPRoute and RouteOption status subresources, by server-side apply with our own field
//! manager.
//!
//! Written only when it changed: the writer keeps the last status it wrote per object and,
//! for an object it has not written since it started, compares with the status the object
//! already has (so a restart, or a relist after the API server restarts, rewrites nothing).
//! It wakes on every new index from the actor (the report is sent before it), computes what
//! each object should say ([`desired`]) and applies the differences. (Two watches are read
//! one after the other: rarely, a pass pairs an index with the next report. That costs at
//! most one extra write, corrected by the next pass, never a wrong final state.)
pub(crate) mod desired;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use gateway_api::apis::experimental::{
    gatewayclasses::GatewayClassStatus,
    gateways::GatewayStatus,
    httproutes::{HttpRoute, HttpRouteStatus},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kgw_common::{
    policy::PolicyStatus,
    resources::{Index, Kind, ResourceKey},
    shutdown::Shutdown,
    source::kubernetes::api_resource,
};
use kube::{
    Client,
    api::{Api, DynamicObject, Patch, PatchParams},
};
use tokio::sync::watch;

use crate::translate::{StatusReport, status::RouteParentStatus};

/// The field manager of every status the gateway applies.
pub(crate) const FIELD_MANAGER: &str = "kgateway.dev/gateway";
/// Writes in flight at once (each is one PATCH).
const CONCURRENT_WRITES: usize = 8;
/// A failed write is tried again after this long (or at the next change, if sooner).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Status writes that reached the API server, per kind, and failed attempts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusWriteStats {
    pub gateway_classes: u64,
    pub gateways: u64,
    pub http_routes: u64,
    pub route_options: u64,
    pub errors: u64,
}

impl StatusWriteStats {
    pub fn writes(&self) -> u64 {
        self.gateway_classes + self.gateways + self.http_routes + self.route_options
    }

    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::GatewayClass => self.gateway_classes += 1,
            Kind::Gateway => self.gateways += 1,
            Kind::RouteOption => self.route_options += 1,
            _ => self.http_routes += 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("cannot encode the status of {key}")]
    Encode {
        key: ResourceKey,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the status of {key}")]
    Patch {
        key: ResourceKey,
        #[source]
        source: kube::Error,
    },
}

impl WriteError {
    fn key(&self) -> &ResourceKey {
        match self {
            Self::Encode { key, .. } | Self::Patch { key, .. } => key,
        }
    }
}

/// What need not be looked at again: routes whose object and report entry are those of
/// `last` (the previous pass), unless their write failed.
#[derive(Clone, Copy)]
struct Unchanged<'a> {
    last: Option<(&'a Index, &'a StatusReport)>,
    failed: &'a BTreeSet<ResourceKey>,
}

impl Default for Unchanged<'_> {
    /// Nothing known: look at everything.
    fn default() -> Self {
        static NONE: BTreeSet<ResourceKey> = BTreeSet::new();
        Self {
            last: None,
            failed: &NONE,
        }
    }
}

impl Unchanged<'_> {
    fn route(&self, key: &ResourceKey, route: &Arc<HttpRoute>, ours: Option<&Vec<RouteParentStatus>>) -> bool {
        let Some((index, report)) = self.last else { return false };
        let nn = (key.namespace.clone(), key.name.clone());
        !self.failed.contains(key)
            && index.http_routes.get(&nn).is_some_and(|old| Arc::ptr_eq(old, route))
            && report.http_routes.get(&format!("{}/{}", key.namespace, key.name)) == ours
    }
}

/// A status we write.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    GatewayClass(GatewayClassStatus),
    Gateway(GatewayStatus),
    HttpRoute(HttpRouteStatus),
    RouteOption(PolicyStatus),
}

impl Status {
    /// Whether `current` (an object's status, as JSON) says what this one says, but for
    /// when each condition last changed (this one was computed without the object's
    /// history; the object's times are the true ones).
    fn same_as(&self, current: &serde_json::Value, controller_name: &str) -> bool {
        fn timeless<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Option<T> {
            let mut value = value.clone();
            clear_transition_times(&mut value);
            serde_json::from_value(value).ok()
        }
        let Ok(ours) = self.to_json() else { return false };
        match self {
            Self::GatewayClass(_) => timeless(&ours)
                .zip(timeless(current))
                .is_some_and(|(a, b)| desired::same_gateway_class(&a, &b)),
            Self::Gateway(_) => timeless(&ours)
                .zip(timeless(current))
                .is_some_and(|(a, b)| desired::same_gateway(&a, &b)),
            Self::HttpRoute(_) => timeless(&ours)
                .zip(timeless(current))
                .is_some_and(|(a, b)| desired::same_route(&a, &b, controller_name)),
            Self::RouteOption(_) => timeless(&ours)
                .zip(timeless(current))
                .is_some_and(|(a, b)| desired::same_policy(&a, &b, controller_name)),
        }
    }

    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::GatewayClass(s) => serde_json::to_value(s),
            Self::Gateway(s) => serde_json::to_value(s),
            Self::HttpRoute(s) => serde_json::to_value(s),
            Self::RouteOption(s) => serde_json::to_value(s),
        }
    }
}

/// Starts the writer; its counters are returned.
pub(crate) fn spawn(
    client: Client,
    controller_name: String,
    report: watch::Receiver<Arc<StatusReport>>,
    index: watch::Receiver<Arc<Index>>,
    shutdown: Shutdown,
) -> watch::Receiver<StatusWriteStats> {
    let (stats_tx, stats) = watch::channel(StatusWriteStats::default());
    let writer = Writer {
        client,
        controller_name,
        written: BTreeMap::new(),
        failed: BTreeSet::new(),
        last: None,
        stats: stats_tx,
    };
    tokio::spawn(writer.run(report, index, shutdown));
    stats
}

struct Writer {
    client: Client,
    controller_name: String,
    /// The last status written per object, since this process started.
    written: BTreeMap<ResourceKey, Status>,
    /// Objects whose last write failed (looked at again, whatever changed).
    failed: BTreeSet<ResourceKey>,
    /// The index and report of the last pass: a route whose object and report entry are
    /// the same as then needs no second look (most routes, on any one change).
    last: Option<(Arc<Index>, Arc<StatusReport>)>,
    stats: watch::Sender<StatusWriteStats>,
}

impl Writer {
    async fn run(
        mut self,
        report: watch::Receiver<Arc<StatusReport>>,
        mut index: watch::Receiver<Arc<Index>>,
        shutdown: Shutdown,
    ) {
        // A new writer (a start, or a new leadership term) looks at everything at once.
        index.mark_changed();
        loop {
            let retry = !self.failed.is_empty();
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = index.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RETRY_AFTER), if retry => {}
            }
            let current = index.borrow_and_update().clone();
            let report = report.borrow().clone();
            let last = self
                .last
                .as_ref()
                .map(|(index, report)| (index.as_ref(), report.as_ref()));
            let pending = pending(
                &self.written,
                Unchanged {
                    last,
                    failed: &self.failed,
                },
                &current,
                &report,
                &self.controller_name,
                &now(),
            );
            self.forget_deleted(&current);
            let pending = self.not_yet_there(pending).await;
            self.failed = self.write_all(pending).await;
            self.last = Some((current, report));
        }
    }

    /// Drops what the object already says, for objects this writer has not written yet.
    /// The index may hold an object from before a status write (status-only updates are
    /// not changes to the source), so a new writer (a new leadership term) asks the API
    /// server rather than rewrite what the last term wrote.
    async fn not_yet_there(&mut self, pending: Vec<(ResourceKey, Status)>) -> Vec<(ResourceKey, Status)> {
        let mut out = Vec::new();
        for (key, status) in pending {
            if self.written.contains_key(&key) {
                out.push((key, status));
                continue;
            }
            match current_status(self.client.clone(), &key).await {
                Ok(Some(current)) if status.same_as(&current, &self.controller_name) => {
                    self.written.insert(key, status);
                }
                _ => out.push((key, status)),
            }
        }
        out
    }

    /// Objects gone from the index need no memory of what we wrote them.
    fn forget_deleted(&mut self, index: &Index) {
        self.written.retain(|key, _| {
            let nn = (key.namespace.clone(), key.name.clone());
            match key.kind {
                Kind::GatewayClass => index.gateway_classes.contains_key(&key.name),
                Kind::Gateway => index.gateways.contains_key(&nn),
                Kind::RouteOption => index.route_options.contains_key(&nn),
                _ => index.http_routes.contains_key(&nn),
            }
        });
    }

    /// Applies `pending`, a few at a time; returns the objects whose write failed.
    async fn write_all(&mut self, pending: Vec<(ResourceKey, Status)>) -> BTreeSet<ResourceKey> {
        let mut failed = BTreeSet::new();
        if pending.is_empty() {
            return failed;
        }
        let client = self.client.clone();
        let mut results = futures::stream::iter(pending)
            .map(|(key, status)| {
                let client = client.clone();
                async move {
                    let result = apply(client, &key, &status).await;
                    (key, status, result)
                }
            })
            .buffer_unordered(CONCURRENT_WRITES);
        while let Some((key, status, result)) = results.next().await {
            match result {
                Ok(()) => {
                    tracing::debug!(resource = %key, "status written");
                    self.stats.send_modify(|s| s.count(key.kind));
                    self.written.insert(key, status);
                }
                Err(WriteError::Patch {
                    source: kube::Error::Api(status),
                    key,
                }) if status.code == 404 => {
                    tracing::debug!(resource = %key, "object gone before its status was written");
                }
                Err(error) => {
                    failed.insert(error.key().clone());
                    self.stats.send_modify(|s| s.errors += 1);
                    tracing::warn!(error = %error_chain(&error), "status write failed; retrying");
                }
            }
        }
        failed
    }
}

/// Every status that differs from what the object has (or what we last wrote).
fn pending(
    written: &BTreeMap<ResourceKey, Status>,
    unchanged: Unchanged<'_>,
    index: &Index,
    report: &StatusReport,
    controller_name: &str,
    now: &Time,
) -> Vec<(ResourceKey, Status)> {
    let mut out = Vec::new();
    for (name, conditions) in &report.gateway_classes {
        let Some(class) = index.gateway_classes.get(name) else {
            continue;
        };
        let key = key(Kind::GatewayClass, "", name);
        let previous = match written.get(&key) {
            Some(Status::GatewayClass(s)) => Some(s),
            _ => class.status.as_ref(),
        };
        let desired = desired::gateway_class(conditions, class, previous, now);
        if previous.is_none_or(|p| !desired::same_gateway_class(p, &desired)) {
            out.push((key, Status::GatewayClass(desired)));
        }
    }
    for (name, status) in &report.gateways {
        let Some((namespace, name)) = name.split_once('/') else {
            continue;
        };
        let Some(gateway) = index.gateways.get(&(namespace.to_string(), name.to_string())) else {
            continue;
        };
        let key = key(Kind::Gateway, namespace, name);
        let previous = match written.get(&key) {
            Some(Status::Gateway(s)) => Some(s),
            _ => gateway.status.as_ref(),
        };
        let desired = desired::gateway(status, gateway, previous, now);
        if previous.is_none_or(|p| !desired::same_gateway(p, &desired)) {
            out.push((key, Status::Gateway(desired)));
        }
    }
    // Every route: one that no longer attaches to our Gateways loses our entries.
    for ((namespace, name), route) in &index.http_routes {
        let entry = report.http_routes.get(&format!("{namespace}/{name}"));
        let key = key(Kind::HttpRoute, namespace, name);
        if unchanged.route(&key, route, entry) {
            continue;
        }
        let ours = entry.map(Vec::as_slice).unwrap_or_default();
        let previous = match written.get(&key) {
            Some(Status::HttpRoute(s)) => Some(s),
            _ => route.status.as_ref(),
        };
        let desired = desired::http_route(ours, route, controller_name, previous, now);
        let unchanged = match previous {
            Some(previous) => desired::same_route(previous, &desired, controller_name),
            None => ours.is_empty(),
        };
        if !unchanged {
            out.push((key, Status::HttpRoute(desired)));
        }
    }
    // RouteOptions are few: each is looked at every pass.
    for ((namespace, name), option) in &index.route_options {
        let ours = report.route_options.get(&format!("{namespace}/{name}"));
        let key = key(Kind::RouteOption, namespace, name);
        let previous = match written.get(&key) {
            Some(Status::RouteOption(s)) => Some(s),
            _ => option.status.as_ref(),
        };
        let desired = desired::route_option(ours, option, controller_name, previous, now);
        let unchanged = match previous {
            Some(previous) => desired::same_policy(previous, &desired, controller_name),
            None => ours.is_none_or(BTreeMap::is_empty),
        };
        if !unchanged {
            out.push((key, Status::RouteOption(desired)));
        }
    }
    out
}

/// One server-side apply of `status` to the status subresource of `key`.
async fn apply(client: Client, key: &ResourceKey, status: &Status) -> Result<(), WriteError> {
    let ar = api_resource(key.kind);
    let api: Api<DynamicObject> = if key.namespace.is_empty() {
        Api::all_with(client, &ar)
    } else {
        Api::namespaced_with(client, &key.namespace, &ar)
    };
    let body = serde_json::json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "status": status.to_json().map_err(|source| WriteError::Encode { key: key.clone(), source })?,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&key.name, &params, &Patch::Apply(&body))
        .await
        .map_err(|source| WriteError::Patch {
            key: key.clone(),
            source,
        })?;
    Ok(())
}

/// Every `lastTransitionTime` in `value` set to one and the same time.
fn clear_transition_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (field, inner) in map.iter_mut() {
                if field == "lastTransitionTime" {
                    *inner = serde_json::Value::String("1970-01-01T00:00:00Z".into());
                } else {
                    clear_transition_times(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clear_transition_times),
        _ => {}
    }
}

/// The status the API server holds for `key` now.
async fn current_status(client: Client, key: &ResourceKey) -> Result<Option<serde_json::Value>, kube::Error> {
    let ar = api_resource(key.kind);
    let api: Api<DynamicObject> = if key.namespace.is_empty() {
        Api::all_with(client, &ar)
    } else {
        Api::namespaced_with(client, &key.namespace, &ar)
    };
    let object = api.get_opt(&key.name).await?;
    Ok(object.and_then(|o| o.data.get("status").cloned()))
}

fn key(kind: Kind, namespace: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Now, to the second: the API server keeps no more, and a time it would round would
/// compare unequal to ours.
pub(crate) fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{Options, translate};
    use kgw_common::resources::{Change, Resource, decode};

    const CLASS_AND_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgateway, generation: 1}
spec: {controllerName: kgateway.dev/kgateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default, generation: 1}
spec:
  gatewayClassName: kgateway
  listeners: [{name: http, protocol: HTTP, port: 8080}]
";

    fn route(generation: i64, prefix: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default, generation: {generation}}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]}}]
"
        )
    }

    fn index_of(yaml: &str) -> Index {
        let mut index = Index::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde::Deserialize::deserialize(doc).expect("yaml");
            let (key, resource) = decode(value).expect("valid").expect("known kind");
            index.apply(&Change::Upsert(key, resource));
        }
        index
    }

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("time"))
    }

    /// The index as the API server would list it after `written` was applied.
    fn with_statuses(index: &Index, written: &[(ResourceKey, Status)]) -> Index {
        let mut index = index.clone();
        for (key, status) in written {
            let nn = (key.namespace.clone(), key.name.clone());
            let resource = match status {
                Status::GatewayClass(s) => {
                    let mut class = index.gateway_classes[&key.name].as_ref().clone();
                    class.status = Some(s.clone());
                    Resource::GatewayClass(Arc::new(class))
                }
                Status::Gateway(s) => {
                    let mut gateway = index.gateways[&nn].as_ref().clone();
                    gateway.status = Some(s.clone());
                    Resource::Gateway(Arc::new(gateway))
                }
                Status::HttpRoute(s) => {
                    let mut route = index.http_routes[&nn].as_ref().clone();
                    route.status = Some(s.clone());
                    Resource::HttpRoute(Arc::new(route))
                }
                Status::RouteOption(s) => {
                    let mut option = index.route_options[&nn].as_ref().clone();
                    option.status = Some(s.clone());
                    Resource::RouteOption(Arc::new(option))
                }
            };
            index.apply(&Change::Upsert(key.clone(), resource));
        }
        index
    }

    fn names(pending: &[(ResourceKey, Status)]) -> Vec<String> {
        pending.iter().map(|(key, _)| key.to_string()).collect()
    }

    #[test]
    fn writes_each_status_once_and_nothing_after_a_restart() {
        let controller = Options::default().controller_name;
        let index = index_of(&format!("{CLASS_AND_GATEWAY}---\n{}", route(1, "/a")));
        let report = translate(&index, &Options::default()).status;
        let first = pending(
            &BTreeMap::new(),
            Unchanged::default(),
            &index,
            &report,
            &controller,
            &at(100),
        );
        assert_eq!(
            names(&first),
            ["GatewayClass/kgateway", "Gateway/default/gw", "HTTPRoute/default/r"]
        );
        // The writer remembers what it wrote: the same state again writes nothing.
        let written: BTreeMap<_, _> = first.iter().cloned().collect();
        assert!(pending(&written, Unchanged::default(), &index, &report, &controller, &at(200)).is_empty());
        // A restarted writer (nothing remembered) reads the statuses off the objects.
        let relisted = with_statuses(&index, &first);
        assert!(
            pending(
                &BTreeMap::new(),
                Unchanged::default(),
                &relisted,
                &report,
                &controller,
                &at(300)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_route_option_reports_per_gateway_once_and_keeps_other_controllers_entries() {
        let controller = Options::default().controller_name;
        let option = |timeout: &str| {
            format!(
                "apiVersion: gateway.solo.io/v1
kind: RouteOption
metadata: {{name: opt, namespace: default, generation: 3}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  options: {{timeout: {timeout}}}
"
            )
        };
        let index = index_of(&format!(
            "{CLASS_AND_GATEWAY}---\n{}---\n{}",
            route(1, "/a"),
            option("5s")
        ));
        let report = translate(&index, &Options::default()).status;
        let first = pending(
            &BTreeMap::new(),
            Unchanged::default(),
            &index,
            &report,
            &controller,
            &at(100),
        );
        let Some((_, Status::RouteOption(status))) = first.iter().find(|(k, _)| k.kind == Kind::RouteOption) else {
            panic!("no RouteOption status in {:?}", names(&first));
        };
        let [ancestor] = status.ancestors.as_slice() else {
            panic!("one ancestor: {status:?}")
        };
        assert_eq!(ancestor.ancestor_ref.name, "gw");
        assert_eq!(ancestor.ancestor_ref.kind.as_deref(), Some("Gateway"));
        assert_eq!(ancestor.controller_name, controller);
        assert_eq!(ancestor.conditions[0].type_, "Accepted");
        assert_eq!(ancestor.conditions[0].status, "True");
        assert_eq!(ancestor.conditions[0].observed_generation, Some(3));

        // Another controller's entry on the object is kept, and nothing is rewritten after
        // a restart.
        let mut theirs = status.clone();
        theirs.ancestors[0].controller_name = "example.com/other".into();
        let mut both = status.clone();
        both.ancestors.extend(theirs.ancestors);
        let written: Vec<_> = first
            .iter()
            .cloned()
            .map(|(k, s)| match s {
                Status::RouteOption(_) => (k, Status::RouteOption(both.clone())),
                other => (k, other),
            })
            .collect();
        let relisted = with_statuses(&index, &written);
        assert!(
            pending(
                &BTreeMap::new(),
                Unchanged::default(),
                &relisted,
                &report,
                &controller,
                &at(200)
            )
            .is_empty()
        );

        // An invalid value: Accepted=False, Invalid, the other controller's entry still there.
        let bad = index_of(&format!(
            "{CLASS_AND_GATEWAY}---\n{}---\n{}",
            route(1, "/a"),
            option("soon")
        ));
        let bad_report = translate(&bad, &Options::default()).status;
        let mut relisted_bad = relisted.clone();
        relisted_bad.route_options = bad.route_options.clone();
        let key = key(Kind::RouteOption, "default", "opt");
        if let Some(previous) = relisted.route_options.get(&("default".to_string(), "opt".to_string())) {
            let mut option = relisted_bad.route_options[&("default".to_string(), "opt".to_string())]
                .as_ref()
                .clone();
            option.status = previous.status.clone();
            relisted_bad.apply(&Change::Upsert(key.clone(), Resource::RouteOption(Arc::new(option))));
        }
        let changed = pending(
            &BTreeMap::new(),
            Unchanged::default(),
            &relisted_bad,
            &bad_report,
            &controller,
            &at(300),
        );
        let Some((_, Status::RouteOption(status))) = changed.iter().find(|(k, _)| *k == key) else {
            panic!("the RouteOption's status changes: {:?}", names(&changed));
        };
        assert_eq!(status.ancestors.len(), 2, "{status:?}");
        assert_eq!(status.ancestors[0].conditions[0].reason, "Invalid");
        assert_eq!(status.ancestors[1].controller_name, "example.com/other");
    }

    #[test]
    fn a_route_change_writes_only_that_route_with_its_generation() {
        let controller = Options::default().controller_name;
        let index = index_of(&format!("{CLASS_AND_GATEWAY}---\n{}", route(1, "/a")));
        let report = translate(&index, &Options::default()).status;
        let written: BTreeMap<_, _> = pending(
            &BTreeMap::new(),
            Unchanged::default(),
            &index,
            &report,
            &controller,
            &at(100),
        )
        .into_iter()
        .collect();
        let changed = index_of(&format!("{CLASS_AND_GATEWAY}---\n{}", route(2, "/b")));
        let report = translate(&changed, &Options::default()).status;
        let next = pending(&written, Unchanged::default(), &changed, &report, &controller, &at(200));
        assert_eq!(names(&next), ["HTTPRoute/default/r"]);
        let Status::HttpRoute(status) = &next[0].1 else {
            panic!("a route status")
        };
        let parent = &status.parents[0];
        assert!(parent.conditions.iter().all(|c| c.observed_generation == Some(2)));
        assert!(
            parent.conditions.iter().all(|c| c.last_transition_time == at(100)),
            "no condition changed its status"
        );
    }

    #[test]
    fn routes_unchanged_since_the_last_pass_are_skipped_unless_their_write_failed() {
        let controller = Options::default().controller_name;
        let index = index_of(&format!("{CLASS_AND_GATEWAY}---\n{}", route(1, "/a")));
        let report = translate(&index, &Options::default()).status;
        let route_key = key(Kind::HttpRoute, "default", "r");
        let nothing_failed = BTreeSet::new();
        let unchanged = Unchanged {
            last: Some((&index, &report)),
            failed: &nothing_failed,
        };
        // Nothing remembered as written, but the route is as it was: not looked at.
        let next = pending(&BTreeMap::new(), unchanged, &index, &report, &controller, &at(100));
        assert!(!names(&next).contains(&route_key.to_string()), "{:?}", names(&next));
        let failed = BTreeSet::from([route_key.clone()]);
        let unchanged = Unchanged {
            last: Some((&index, &report)),
            failed: &failed,
        };
        let retry = pending(&BTreeMap::new(), unchanged, &index, &report, &controller, &at(100));
        assert!(
            names(&retry).contains(&route_key.to_string()),
            "a failed write is retried"
        );
    }
}

//! The KV values the actor publishes beside the Proxies: the status values, encoded again
//! only where a translation changed them, and [`Published`], which sends a map of values
//! without copying it whole each time.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kgw_common::{bus::KvState, resources::Index, source::Problem};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::{kube_status::desired, translate::StatusReport, validation::background::Reported};

/// Status per resource, key `<kind>.<namespace>.<name>`: for GatewayClasses, Gateways and
/// HTTPRoutes a YAML document shaped as `kubectl get -o yaml` shows the object's identity
/// and its Gateway API `status` (what the Kubernetes source writes to the API server); for
/// RouteOptions our report. Config problems under `problems.config`, what the validating
/// webhook would deny under `problems.validation`. Kept between batches: route values (most
/// of them) are encoded again only for the routes a translation touched; the few others
/// each time. A condition whose status did not change keeps its `lastTransitionTime`.
#[derive(Default)]
pub(crate) struct StatusValues {
    /// `controllerName` in the routes' parent statuses.
    controller_name: String,
    values: BTreeMap<String, Bytes>,
    /// Keys of the values that are not routes'.
    others: BTreeSet<String>,
    /// What the last `update` put or removed; `None` when it encoded everything anew.
    updates: Option<Vec<(String, Option<Bytes>)>>,
}

fn kv_key(kind: &str, key: &str) -> String {
    format!("{kind}.{}", key.replacen('/', ".", 1))
}

/// One resource's status document.
#[derive(Serialize, Deserialize)]
struct StatusDocument<S> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: DocumentMeta,
    status: S,
}

#[derive(Serialize, Deserialize)]
struct DocumentMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<i64>,
}

impl<S: Serialize + DeserializeOwned> StatusDocument<S> {
    fn new(kind: &str, meta: &ObjectMeta, status: S) -> Self {
        Self {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: kind.into(),
            metadata: DocumentMeta {
                namespace: meta.namespace.clone(),
                name: meta.name.clone().unwrap_or_default(),
                generation: meta.generation,
            },
            status,
        }
    }

    /// The status in a value this writer encoded before.
    fn previous(bytes: Option<&Bytes>) -> Option<S> {
        serde_yaml::from_slice::<Self>(bytes?).ok().map(|doc| doc.status)
    }

    fn encode(&self) -> Bytes {
        let mut text = serde_yaml::to_string(self).unwrap_or_else(|e| format!("error: {e}\n"));
        // Kept for every route: without the room the emitter's buffer grew into.
        text.shrink_to_fit();
        Bytes::from(text)
    }
}

impl StatusValues {
    pub(crate) fn new(controller_name: &str) -> Self {
        Self {
            controller_name: controller_name.into(),
            ..Self::default()
        }
    }

    /// The values for `status` (translated from `index`), in which the routes of `routes`
    /// (every route when `None`) may have changed since the last call.
    pub(crate) fn update(
        &mut self,
        status: &StatusReport,
        index: &Index,
        routes: Option<&BTreeSet<String>>,
        problems: &[Problem],
        validation: &[Reported],
        now: &Time,
    ) {
        let yaml = |value: &dyn erased::Yaml| Bytes::from(value.to_yaml());
        let mut updates = Vec::new();
        let mut previous_others = BTreeMap::new();
        for key in std::mem::take(&mut self.others) {
            if let Some(value) = self.values.remove(&key) {
                previous_others.insert(key.clone(), value);
            }
            updates.push((key, None));
        }
        let mut others = BTreeMap::new();
        for (name, conditions) in &status.gateway_classes {
            let key = format!("gatewayclass.{name}");
            let Some(class) = index.gateway_classes.get(name) else {
                continue;
            };
            let previous = StatusDocument::previous(previous_others.get(&key));
            let api = desired::gateway_class(conditions, class, previous.as_ref(), now);
            others.insert(key, StatusDocument::new("GatewayClass", &class.metadata, api).encode());
        }
        for (key, gateway) in &status.gateways {
            let kv = kv_key("gateway", key);
            let Some(object) = split(key).and_then(|nn| index.gateways.get(&nn)) else {
                continue;
            };
            let previous = StatusDocument::previous(previous_others.get(&kv));
            let api = desired::gateway(gateway, object, previous.as_ref(), now);
            others.insert(kv, StatusDocument::new("Gateway", &object.metadata, api).encode());
        }
        for (key, set) in &status.listener_sets {
            let kv = kv_key("listenerset", key);
            let Some(object) = split(key).and_then(|nn| index.listener_sets.get(&nn)) else {
                continue;
            };
            let previous = StatusDocument::previous(previous_others.get(&kv));
            let api = desired::listener_set(set, object, previous.as_ref(), now);
            others.insert(kv, StatusDocument::new("ListenerSet", &object.metadata, api).encode());
        }
        for (key, ancestors) in &status.route_options {
            others.insert(kv_key("routeoption", key), yaml(ancestors));
        }
        for (key, ancestors) in &status.backend_tls_policies {
            let kv = kv_key("backendtlspolicy", key);
            let Some(object) = split(key).and_then(|nn| index.backend_tls_policies.get(&nn)) else {
                continue;
            };
            let previous = StatusDocument::previous(previous_others.get(&kv));
            let api =
                desired::backend_tls_policy(Some(ancestors), object, &self.controller_name, previous.as_ref(), now);
            others.insert(
                kv,
                StatusDocument::new("BackendTLSPolicy", &object.metadata, api).encode(),
            );
        }
        if !problems.is_empty() {
            others.insert("problems.config".into(), yaml(&problems.to_vec()));
        }
        if !validation.is_empty() {
            others.insert("problems.validation".into(), yaml(&validation.to_vec()));
        }
        self.others = others.keys().cloned().collect();
        updates.extend(others.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        self.values.extend(others);
        match routes {
            Some(routes) => {
                for key in routes {
                    let kv_key = kv_key("httproute", key);
                    let value = self.route_value(status, index, key, self.values.get(&kv_key), now);
                    match &value {
                        Some(bytes) => self.values.insert(kv_key.clone(), bytes.clone()),
                        None => self.values.remove(&kv_key),
                    };
                    updates.push((kv_key, value));
                }
                self.updates = Some(updates);
            }
            None => {
                let previous: BTreeMap<String, Bytes> = self
                    .values
                    .extract_if(.., |key, _| key.starts_with("httproute."))
                    .collect();
                for key in status.http_routes.keys() {
                    let kv_key = kv_key("httproute", key);
                    if let Some(value) = self.route_value(status, index, key, previous.get(&kv_key), now) {
                        self.values.insert(kv_key, value);
                    }
                }
                self.updates = None;
            }
        }
    }

    /// Route `key`'s status document, `None` when the report has none for it.
    fn route_value(
        &self,
        status: &StatusReport,
        index: &Index,
        key: &str,
        previous: Option<&Bytes>,
        now: &Time,
    ) -> Option<Bytes> {
        let ours = status.http_routes.get(key)?;
        let route = index.http_routes.get(&split(key)?)?;
        let previous = StatusDocument::previous(previous);
        let api = desired::http_route(ours, route, &self.controller_name, previous.as_ref(), now);
        Some(StatusDocument::new("HTTPRoute", &route.metadata, api).encode())
    }
}

/// `namespace/name` → (namespace, name).
fn split(key: &str) -> Option<(String, String)> {
    key.split_once('/').map(|(ns, name)| (ns.to_string(), name.to_string()))
}

/// A map of KV values sent on a watch channel without copying it whole each time: the copy
/// sent before the last comes back from the channel on the next send and, once nobody else
/// holds it, is brought up to date by replaying the updates made since.
#[derive(Default)]
pub(crate) struct Published {
    /// The copy sent before the last one.
    spare: Option<Arc<BTreeMap<String, Bytes>>>,
    /// Updates from the spare's content to the last one sent.
    lag: Vec<(String, Option<Bytes>)>,
    /// Updates since the last send; `None`: unknown (the next send copies).
    pending: Option<Vec<(String, Option<Bytes>)>>,
    /// Set after the first send.
    sent: bool,
}

impl Published {
    /// Notes updates made to the live values (`None`: unknown ones).
    pub(crate) fn record(&mut self, updates: Option<&[(String, Option<Bytes>)]>) {
        match (updates, self.pending.as_mut()) {
            (Some(updates), Some(pending)) => pending.extend_from_slice(updates),
            _ => self.pending = None,
        }
    }

    /// Sends `live` (the values after every update recorded).
    pub(crate) fn send(&mut self, channel: &watch::Sender<KvState>, live: &BTreeMap<String, Bytes>) {
        let pending = self.pending.take();
        let caught_up = match (self.spare.take().map(Arc::try_unwrap), &pending) {
            (Some(Ok(mut values)), Some(pending)) => {
                for (key, value) in self.lag.iter().chain(pending) {
                    match value {
                        Some(value) => values.insert(key.clone(), value.clone()),
                        None => values.remove(key),
                    };
                }
                Some(values)
            }
            _ => None,
        };
        // Still read elsewhere, or the updates are not known: a copy of the whole map.
        let values = caught_up.unwrap_or_else(|| live.clone());
        let previous = channel.send_replace(KvState::traced(values));
        // The channel's value before our first send is not ours: nothing to catch up from.
        self.spare = (self.sent && pending.is_some()).then_some(previous.values);
        self.lag = pending.unwrap_or_default();
        self.pending = Some(Vec::new());
        self.sent = true;
    }
}

impl StatusValues {
    pub(crate) fn values(&self) -> &BTreeMap<String, Bytes> {
        &self.values
    }

    /// What the last `update` put or removed; `None` when it encoded everything anew.
    pub(crate) fn updates(&self) -> Option<&[(String, Option<Bytes>)]> {
        self.updates.as_deref()
    }
}

mod erased {
    /// serde_yaml of any Serialize, behind a trait object to keep `StatusValues::update` short.
    pub(super) trait Yaml {
        fn to_yaml(&self) -> String;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn to_yaml(&self) -> String {
            serde_yaml::to_string(self).unwrap_or_else(|e| format!("error: {e}\n"))
        }
    }
}

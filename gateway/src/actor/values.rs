//! The KV values the actor publishes beside the Proxies: the status values, encoded again
//! only where a translation changed them, and [`Published`], which sends a map of values
//! without copying it whole each time.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use bytes::Bytes;
use kgw_common::{bus::KvState, source::Problem};
use tokio::sync::watch;

use crate::{translate::StatusReport, validation::background::Reported};

/// Status as YAML per resource, key `<kind>.<namespace>.<name>`; config problems under
/// `problems.config`, what the validating webhook would deny under `problems.validation`.
/// Kept between batches: route values (most of them) are encoded again only for the routes
/// a translation touched; the few others each time.
#[derive(Default)]
pub(crate) struct StatusValues {
    values: BTreeMap<String, Bytes>,
    /// Keys of the values that are not routes'.
    others: BTreeSet<String>,
    /// What the last `update` put or removed; `None` when it encoded everything anew.
    updates: Option<Vec<(String, Option<Bytes>)>>,
}

fn kv_key(kind: &str, key: &str) -> String {
    format!("{kind}.{}", key.replacen('/', ".", 1))
}

impl StatusValues {
    /// The values for `status`, in which the routes of `routes` (every route when `None`)
    /// may have changed since the last call.
    pub(crate) fn update(
        &mut self,
        status: &StatusReport,
        routes: Option<&BTreeSet<String>>,
        problems: &[Problem],
        validation: &[Reported],
    ) {
        let yaml = |value: &dyn erased::Yaml| Bytes::from(value.to_yaml());
        let mut updates = Vec::new();
        for key in std::mem::take(&mut self.others) {
            self.values.remove(&key);
            updates.push((key, None));
        }
        let mut others = BTreeMap::new();
        for (name, conditions) in &status.gateway_classes {
            others.insert(format!("gatewayclass.{name}"), yaml(conditions));
        }
        for (key, gateway) in &status.gateways {
            others.insert(kv_key("gateway", key), yaml(gateway));
        }
        for (key, ancestors) in &status.route_options {
            others.insert(kv_key("routeoption", key), yaml(ancestors));
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
                    let value = status.http_routes.get(key).map(|route| yaml(route));
                    let kv_key = kv_key("httproute", key);
                    match &value {
                        Some(bytes) => self.values.insert(kv_key.clone(), bytes.clone()),
                        None => self.values.remove(&kv_key),
                    };
                    updates.push((kv_key, value));
                }
                self.updates = Some(updates);
            }
            None => {
                self.values.retain(|key, _| !key.starts_with("httproute."));
                for (key, route) in &status.http_routes {
                    self.values.insert(kv_key("httproute", key), yaml(route));
                }
                self.updates = None;
            }
        }
    }
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

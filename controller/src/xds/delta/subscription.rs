//! What one delta stream knows of one resource type: which names Envoy subscribed to (or
//! the wildcard), which version of each resource Envoy has, the response it has not
//! answered yet and the change it last rejected. From that and a snapshot it computes the
//! [`Change`] the next response carries. No I/O here: [`super::DeltaStream`] does that.
use std::collections::{BTreeMap, BTreeSet};

use crate::xds::snapshot::TypeResources;

/// The explicit wildcard name: every resource of the type.
pub(super) const WILDCARD: &str = "*";

/// What one response carries: resources to send (name → the version sent) and the names
/// of resources that are gone (or, for a name Envoy asked for, never existed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub updated: BTreeMap<String, String>,
    pub removed: BTreeSet<String>,
}

impl Change {
    pub(super) fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty()
    }
}

/// A response Envoy has not answered (ACK or NACK) yet.
#[derive(Debug)]
pub(super) struct InFlight {
    pub nonce: String,
    /// The type's version in the snapshot it was built from (`system_version_info`).
    pub system_version: String,
    pub change: Change,
    /// `xds.push` of the response: open until Envoy answers.
    pub push: tracing::Span,
}

/// The names to subscribe and unsubscribe, and the versions Envoy says it has, of one
/// `DeltaDiscoveryRequest`.
pub(super) struct SubscriptionRequest<'a> {
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    /// Only read on the first request of the type (a reconnecting Envoy's resources).
    pub initial_versions: &'a BTreeMap<String, String>,
}

/// One resource type of one delta stream.
#[derive(Debug, Default)]
pub(super) struct Subscription {
    /// A request of this type was seen (the first one may open a legacy wildcard).
    started: bool,
    /// Every resource of the type, not only [`Subscription::names`].
    wildcard: bool,
    /// The wildcard comes from an empty first request, not from an explicit `*`: naming
    /// resources later ends it (xDS protocol, "legacy wildcard").
    legacy_wildcard: bool,
    /// Names subscribed explicitly.
    names: BTreeSet<String>,
    /// What Envoy has: name → version (acknowledged, or declared on reconnect).
    envoy_has: BTreeMap<String, String>,
    /// Subscribed names Envoy was told (in `removed_resources`) do not exist.
    told_absent: BTreeSet<String>,
    /// At least one response of this type was sent on this stream.
    responded: bool,
    pub in_flight: Option<InFlight>,
    /// The change Envoy rejected last: not sent again until the snapshot makes it differ.
    rejected: Option<Change>,
}

impl Subscription {
    /// Applies the subscription part of a request.
    pub(super) fn update(&mut self, request: SubscriptionRequest<'_>) {
        let first = !self.started;
        self.started = true;
        if first {
            // Versions only count for names the request also subscribes to (or the wildcard).
            self.envoy_has = request
                .initial_versions
                .iter()
                .map(|(name, version)| (name.clone(), version.clone()))
                .collect();
            if request.subscribe.is_empty() {
                self.wildcard = true;
                self.legacy_wildcard = true;
            }
        }
        let names_only = !request.subscribe.is_empty() && !request.subscribe.iter().any(|n| n == WILDCARD);
        if self.legacy_wildcard && names_only {
            self.end_wildcard();
        }
        for name in request.subscribe {
            if name == WILDCARD {
                self.wildcard = true;
                self.legacy_wildcard = false;
                continue;
            }
            // A subscribe is a request for the resource: a name Envoy re-subscribes to is
            // sent again, unless it just declared the version it has.
            if self.names.insert(name.clone()) && !request.initial_versions.contains_key(name) {
                self.envoy_has.remove(name);
            }
            self.told_absent.remove(name);
        }
        for name in request.unsubscribe {
            if name == WILDCARD {
                self.end_wildcard();
                continue;
            }
            self.names.remove(name);
            self.told_absent.remove(name);
            if !self.wildcard {
                // Envoy dropped it: nothing to remove later.
                self.envoy_has.remove(name);
            }
        }
        if first && !self.wildcard {
            let names = &self.names;
            self.envoy_has.retain(|name, _| names.contains(name));
        }
    }

    /// Ends the wildcard; Envoy keeps only what it names.
    fn end_wildcard(&mut self) {
        self.wildcard = false;
        self.legacy_wildcard = false;
        let names = &self.names;
        self.envoy_has.retain(|name, _| names.contains(name));
    }

    /// The change that brings Envoy to `resources` for what it subscribed to; `None` when
    /// there is nothing to send (Envoy is up to date, or the change is the one it rejected).
    /// The first response of a type is sent even when empty: Envoy waits for it.
    pub(super) fn next_change(&self, resources: &TypeResources) -> Option<Change> {
        let versions = &resources.item_versions;
        let mut change = Change::default();
        let mut consider = |name: &String, version: &String| {
            if self.envoy_has.get(name) != Some(version) {
                change.updated.insert(name.clone(), version.clone());
            }
        };
        if self.wildcard {
            versions.iter().for_each(|(name, version)| consider(name, version));
        } else {
            self.names
                .iter()
                .filter_map(|name| versions.get_key_value(name))
                .for_each(|(name, version)| consider(name, version));
        }
        let gone = self.envoy_has.keys().filter(|name| !versions.contains_key(*name));
        let never_existed = self
            .names
            .iter()
            .filter(|name| !versions.contains_key(*name) && !self.told_absent.contains(*name));
        change.removed = gone.chain(never_existed).cloned().collect();
        if self.rejected.as_ref() == Some(&change) || (change.is_empty() && self.responded) {
            return None;
        }
        Some(change)
    }

    /// A response carrying `change` went out.
    pub(super) fn sent(&mut self, in_flight: InFlight) {
        self.responded = true;
        self.in_flight = Some(in_flight);
    }

    /// Envoy applied `change`: it now has those versions, and not the removed names.
    pub(super) fn acknowledged(&mut self, change: Change) {
        self.rejected = None;
        for (name, version) in change.updated {
            if self.wildcard || self.names.contains(&name) {
                self.told_absent.remove(&name);
                self.envoy_has.insert(name, version);
            }
        }
        for name in change.removed {
            self.envoy_has.remove(&name);
            if self.names.contains(&name) {
                self.told_absent.insert(name);
            }
        }
    }

    /// Envoy rejected `change`: it keeps what it had.
    pub(super) fn rejected(&mut self, change: Change) {
        self.rejected = Some(change);
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Any;

    use super::*;

    fn resources(items: &[(&str, u8)]) -> TypeResources {
        let items: BTreeMap<String, Any> = items
            .iter()
            .map(|(name, byte)| {
                let any = Any {
                    type_url: "t".into(),
                    value: vec![*byte],
                };
                (name.to_string(), any)
            })
            .collect();
        TypeResources::new(items)
    }

    fn request<'a>(
        subscribe: &'a [String],
        unsubscribe: &'a [String],
        initial: &'a BTreeMap<String, String>,
    ) -> SubscriptionRequest<'a> {
        SubscriptionRequest {
            subscribe,
            unsubscribe,
            initial_versions: initial,
        }
    }

    /// Sends `change` and takes the response back, as the stream does before an answer.
    fn send(subscription: &mut Subscription, change: &Change) {
        subscription.sent(InFlight {
            nonce: "1".into(),
            system_version: "v".into(),
            change: change.clone(),
            push: tracing::Span::none(),
        });
        subscription.in_flight = None;
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn updated(change: &Change) -> Vec<&str> {
        change.updated.keys().map(String::as_str).collect()
    }

    fn removed(change: &Change) -> Vec<&str> {
        change.removed.iter().map(String::as_str).collect()
    }

    #[test]
    fn wildcard_sends_what_changed_and_removes_what_is_gone() {
        let none = BTreeMap::new();
        let mut clusters = Subscription::default();
        clusters.update(request(&[], &[], &none));
        let first = clusters.next_change(&resources(&[("a", 1), ("b", 1)])).expect("first");
        assert_eq!(updated(&first), ["a", "b"]);
        send(&mut clusters, &first);
        clusters.acknowledged(first);
        assert_eq!(clusters.next_change(&resources(&[("a", 1), ("b", 1)])), None);
        let next = clusters
            .next_change(&resources(&[("a", 2), ("c", 1)]))
            .expect("a change");
        assert_eq!((updated(&next), removed(&next)), (vec!["a", "c"], vec!["b"]));
    }

    #[test]
    fn named_subscriptions_learn_of_missing_names_once() {
        let none = BTreeMap::new();
        let mut routes = Subscription::default();
        routes.update(request(&names(&["r1", "missing"]), &[], &none));
        let first = routes.next_change(&resources(&[("r1", 1), ("r2", 1)])).expect("first");
        assert_eq!((updated(&first), removed(&first)), (vec!["r1"], vec!["missing"]));
        send(&mut routes, &first);
        routes.acknowledged(first);
        assert_eq!(routes.next_change(&resources(&[("r1", 1), ("r2", 1)])), None);
        routes.update(request(&[], &names(&["r1"]), &none));
        assert_eq!(routes.next_change(&resources(&[("r1", 2)])), None, "unsubscribed");
    }

    #[test]
    fn a_reconnecting_envoy_gets_only_what_it_lacks() {
        let versions = resources(&[("a", 1), ("b", 1)]).item_versions;
        let initial: BTreeMap<String, String> = [
            ("a".to_string(), versions["a"].clone()),
            ("old".to_string(), "x".to_string()),
        ]
        .into();
        let mut clusters = Subscription::default();
        clusters.update(request(&names(&["*"]), &[], &initial));
        let change = clusters.next_change(&resources(&[("a", 1), ("b", 1)])).expect("change");
        assert_eq!((updated(&change), removed(&change)), (vec!["b"], vec!["old"]));
    }

    #[test]
    fn a_rejected_change_waits_for_a_new_snapshot() {
        let none = BTreeMap::new();
        let mut endpoints = Subscription::default();
        endpoints.update(request(&names(&["e"]), &[], &none));
        let bad = endpoints.next_change(&resources(&[("e", 1)])).expect("first");
        send(&mut endpoints, &bad);
        endpoints.rejected(bad);
        assert_eq!(endpoints.next_change(&resources(&[("e", 1)])), None);
        assert!(endpoints.next_change(&resources(&[("e", 2)])).is_some());
    }

    #[test]
    fn naming_resources_ends_a_legacy_wildcard_but_not_an_explicit_one() {
        let none = BTreeMap::new();
        let mut legacy = Subscription::default();
        legacy.update(request(&[], &[], &none));
        legacy.update(request(&names(&["a"]), &[], &none));
        let change = legacy.next_change(&resources(&[("a", 1), ("b", 1)])).expect("a");
        assert_eq!(updated(&change), ["a"]);

        let mut explicit = Subscription::default();
        explicit.update(request(&names(&["*"]), &[], &none));
        explicit.update(request(&names(&["a"]), &[], &none));
        let change = explicit.next_change(&resources(&[("a", 1), ("b", 1)])).expect("all");
        assert_eq!(updated(&change), ["a", "b"]);
    }
}

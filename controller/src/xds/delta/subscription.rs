//! What one delta stream knows of one resource type: which names Envoy subscribed to (or
//! the wildcard), which version of each resource Envoy has, the response it has not
//! answered yet and the change it last rejected. From that and a snapshot it computes the
//! [`Change`] the next response carries. No I/O here: [`super::DeltaStream`] does that.
//!
//! A namespaced subscription (VHDS, see `xds::vhds`) differs: a subscribed name is a
//! namespace (every resource named `<name>/...`) or, on demand, a name to resolve once into
//! the resource that answers it (sent with that name in `aliases`) or into nothing.
use std::collections::{BTreeMap, BTreeSet};

use crate::xds::{chunked::ChunkMap, snapshot::TypeResources};

/// The explicit wildcard name: every resource of the type.
pub(super) const WILDCARD: &str = "*";

/// What a stream serves of one type: each resource's version, and for namespaced types
/// what a subscribed name stands for.
pub(crate) trait Served {
    /// Resource name → version, of every resource of the type.
    fn versions(&self) -> &ChunkMap<String>;
    /// What subscribed `name` asks for (namespaced types only).
    fn lookup(&self, _name: &str) -> Lookup<'_> {
        Lookup::Namespace
    }
    /// Namespaces that exist but hold no resource (namespaced types only).
    fn empty_namespaces(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// What a name subscribed to a namespaced type asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// Every resource named `<name>/...`.
    Namespace,
    /// The resource that answers it (on demand), if any.
    Alias(Option<&'a str>),
}

impl Served for TypeResources {
    fn versions(&self) -> &ChunkMap<String> {
        &self.item_versions
    }
}

/// The namespace of resource `name`: what precedes its last `/` (as Envoy reads it).
fn namespace(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(namespace, _)| namespace)
}

/// What one response carries: resources to send (name → the version sent) and the names
/// of resources that are gone (or, for a name Envoy asked for, never existed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub updated: BTreeMap<String, String>,
    pub removed: BTreeSet<String>,
    /// On demand: resource name → the requested names it answers (its `aliases`).
    pub aliases: BTreeMap<String, BTreeSet<String>>,
    /// On demand: requested names answered by a resource without a body: none matches, or
    /// the one that does is the version Envoy has (a route miss in a virtual host Envoy has
    /// asks too: the answer needs no copy of it).
    pub bodiless: BTreeSet<String>,
}

impl Change {
    pub(super) fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty() && self.bodiless.is_empty()
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
    /// Names are namespaces or on-demand requests (VHDS), not resource names.
    namespaced: bool,
    /// Namespaced: names subscribed since the last response, answered once each.
    requested: BTreeSet<String>,
    /// Namespaced: empty namespaces Envoy was told of (see [`Subscription::on_demand`]).
    told_empty: BTreeSet<String>,
}

impl Subscription {
    /// A namespaced subscription (see the module doc).
    pub(super) fn namespaced() -> Self {
        Self {
            namespaced: true,
            ..Self::default()
        }
    }

    /// Whether Envoy asked for resource `name` (by name, namespace or wildcard).
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name) || (self.namespaced && self.names.contains(namespace(name)))
    }

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
        // Envoy's VHDS watch subscribes with no names (its mux does not send namespaces) and
        // keeps wanting every virtual host after asking for hosts on demand: those names are
        // aliases, not resources, so they leave the wildcard on.
        if self.legacy_wildcard && names_only && !self.namespaced {
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
            if self.namespaced {
                // Asked again on demand: answered again.
                self.requested.insert(name.clone());
            }
        }
        for name in request.unsubscribe {
            if name == WILDCARD {
                self.end_wildcard();
                continue;
            }
            self.names.remove(name);
            self.told_absent.remove(name);
            self.requested.remove(name);
            if !self.wildcard {
                // Envoy dropped it (and a namespace's resources): nothing to remove later.
                self.envoy_has.remove(name);
                if self.namespaced {
                    self.envoy_has.retain(|resource, _| namespace(resource) != name);
                }
            }
        }
        if first && !self.wildcard {
            self.retain_covered();
        }
    }

    /// Forgets what Envoy has that it no longer asks for.
    fn retain_covered(&mut self) {
        let has = std::mem::take(&mut self.envoy_has);
        self.envoy_has = has.into_iter().filter(|(name, _)| self.covers(name)).collect();
    }

    /// Ends the wildcard; Envoy keeps only what it names.
    fn end_wildcard(&mut self) {
        self.wildcard = false;
        self.legacy_wildcard = false;
        self.retain_covered();
    }

    /// The change that brings Envoy to `resources` for what it subscribed to; `None` when
    /// there is nothing to send (Envoy is up to date, or the change is the one it rejected).
    /// The first response of a type is sent even when empty: Envoy waits for it.
    pub(super) fn next_change(&self, served: &dyn Served) -> Option<Change> {
        let versions = served.versions();
        let mut change = Change::default();
        let mut consider = |name: &String, version: &String| {
            if self.envoy_has.get(name) != Some(version) {
                change.updated.insert(name.clone(), version.clone());
            }
        };
        if self.wildcard || self.namespaced {
            versions
                .iter()
                .filter(|(name, _)| self.covers(name))
                .for_each(|(name, version)| consider(name, version));
        } else {
            self.names
                .iter()
                .filter_map(|name| versions.get_key_value(name))
                .for_each(|(name, version)| consider(name, version));
        }
        let gone = self.envoy_has.keys().filter(|name| !versions.contains_key(name));
        let never_existed = self
            .names
            .iter()
            .filter(|name| !self.namespaced && !versions.contains_key(name) && !self.told_absent.contains(*name));
        change.removed = gone.chain(never_existed).cloned().collect();
        if self.namespaced {
            self.on_demand(served, &mut change);
        }
        if self.rejected.as_ref() == Some(&change) || (change.is_empty() && self.responded) {
            return None;
        }
        Some(change)
    }

    /// Answers the names requested since the last response (namespaced types), and tells
    /// Envoy of empty namespaces: its watch of a namespace hears only of names in it, and
    /// waits for one before its route table is ready; an absent one, removed, does.
    fn on_demand(&self, served: &dyn Served, change: &mut Change) {
        if self.wildcard {
            for namespace in served.empty_namespaces() {
                if !self.told_empty.contains(namespace) {
                    change.removed.insert(format!("{namespace}/"));
                }
            }
        }
        let versions = served.versions();
        for name in &self.requested {
            match served.lookup(name) {
                Lookup::Alias(Some(resource)) => {
                    let Some(version) = versions.get(resource) else {
                        continue;
                    };
                    let up_to_date = self.envoy_has.get(resource) == Some(version);
                    if up_to_date && !change.updated.contains_key(resource) {
                        change.bodiless.insert(name.clone());
                    } else {
                        change.updated.insert(resource.to_string(), version.clone());
                        change
                            .aliases
                            .entry(resource.to_string())
                            .or_default()
                            .insert(name.clone());
                    }
                }
                Lookup::Alias(None) => {
                    change.bodiless.insert(name.clone());
                }
                Lookup::Namespace => {
                    let prefix = format!("{name}/");
                    let empty = versions
                        .range_from(&prefix)
                        .next()
                        .is_none_or(|(first, _)| !first.starts_with(&prefix));
                    if empty {
                        change.removed.insert(prefix);
                    }
                }
            }
        }
    }

    /// A response carrying `change` went out.
    pub(super) fn sent(&mut self, in_flight: InFlight) {
        self.requested.clear();
        self.responded = true;
        self.in_flight = Some(in_flight);
    }

    /// Envoy applied `change`: it now has those versions, and not the removed names.
    pub(super) fn acknowledged(&mut self, change: Change) {
        self.rejected = None;
        for (name, version) in change.updated {
            if self.covers(&name) {
                self.told_absent.remove(&name);
                self.envoy_has.insert(name, version);
            }
        }
        for name in change.removed {
            if let Some(namespace) = name.strip_suffix('/').filter(|_| self.namespaced) {
                self.told_empty.insert(namespace.to_string());
            }
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
mod tests;

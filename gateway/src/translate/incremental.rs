//! The translation kept up to date per resource: each HTTPRoute is translated per parent
//! listener on its own ([`routes::translate_route`], as the full [`translate`] does) and
//! its Proxy routes are put in their virtual hosts of the output Proxy, where they are kept
//! (once: the cache holds only where each sits); a batch of changes translates again only
//! the routes it touches (the route itself, or what it reads: its Gateways and their class,
//! its Services or Upstreams, its RouteOptions), taking their routes out of the virtual
//! hosts they sat in and putting the new ones in, and patches the status entries they
//! decide. [`translate`] stays the reference: the tests check both agree
//! after every step of random change sequences.
//!
//! [`translate`]: super::translate
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_api::apis::experimental::gateways::Gateway;
use kgw_common::resources::{Index, Kind, ResourceKey};
use kgw_proto::v1 as pb;

use super::{
    GatewayRef, Options, Output, is_http, is_ours, listener_sets, proxy_listener_name, report_gateway,
    report_gateway_classes, route_name, route_option,
    routes::{self, SortKey},
};

mod deps;
mod proxies;
#[cfg(test)]
mod tests;

use deps::Nn;

/// What the last [`Incremental::apply`] changed in its output.
#[derive(Clone, Debug, Default)]
pub struct Changed {
    /// Proxies (KV key) rebuilt, added or removed as a whole (their Gateway changed).
    pub proxies: BTreeSet<String>,
    /// Virtual hosts changed, added or removed in place: (proxy key, listener name,
    /// virtual host name).
    pub virtual_hosts: BTreeSet<(String, String, String)>,
    /// Whether any reported status (route, Gateway, GatewayClass, RouteOption) changed.
    pub status: bool,
    /// The routes (`namespace/name`) whose status entry may have changed (every other is
    /// as before).
    pub route_status: BTreeSet<String>,
    /// How many routes were translated again.
    pub retranslated_routes: usize,
}

/// One route's piece for one listener, as far as needed to take it out again.
#[derive(Debug)]
struct Attachment {
    gateway: Nn,
    listener: usize,
    /// The Proxy listener its virtual hosts sit in.
    proxy_listener: String,
    hosts: Vec<String>,
    keys: Vec<SortKey>,
}

#[derive(Debug, Default)]
struct RouteState {
    deps: deps::RouteDeps,
    attachments: Vec<Attachment>,
}

/// Where one Proxy route of a route's piece sits in its virtual host: its precedence, then
/// the listener index and the host's position among the piece's hosts, which keep every copy
/// the full translation makes of one route (attached through two listeners of one port, or
/// naming a hostname twice).
type Slot = (SortKey, usize, usize);

/// (Proxy listener name, hostname) of a virtual host.
type VhostKey = (String, String);

/// The incremental translator: [`apply`](Self::apply) after every batch of changes.
#[derive(Debug)]
pub struct Incremental {
    options: Options,
    output: Output,
    started: bool,
    /// Gateways of ours, as last translated (with their ListenerSets' listeners).
    gateways: BTreeMap<Nn, Arc<Gateway>>,
    /// The ListenerSets naming each Gateway of ours, and their verdicts.
    set_verdicts: BTreeMap<Nn, Vec<listener_sets::SetVerdict>>,
    /// ListenerSet → the Gateway it named when last seen.
    set_parents: BTreeMap<Nn, Nn>,
    routes: BTreeMap<Nn, RouteState>,
    /// Gateway → virtual host → the slots of its routes, in precedence order. The routes
    /// themselves are kept once, in the output Proxy's virtual host of that name (in the
    /// same order), when the Proxy serves it (not when its listener is left out, or when
    /// it answers 421 for that hostname: then only the slots are kept).
    vhosts: BTreeMap<Nn, BTreeMap<VhostKey, Vec<Slot>>>,
    /// The routes translated for the Gateways whose Proxy this batch builds anew (all of
    /// their routes are translated again), until [`update_proxies`](Self::update_proxies)
    /// takes them.
    staged: BTreeMap<Nn, BTreeMap<VhostKey, Vec<(Slot, pb::Route)>>>,
    /// (Gateway, listener index) → routes attached.
    counts: BTreeMap<(Nn, usize), usize>,
    deps: deps::Deps,
    /// BackendTLSPolicy → the Services it targeted when last seen.
    tls_policy_targets: BTreeMap<Nn, BTreeSet<Nn>>,
    /// Virtual hosts (proxy key, listener name, virtual host name) whose last routes this
    /// batch took out: left in place until the batch ends (`drop_emptied`), so that a route
    /// put back in the same host (an edit) fills it again instead of shifting every host
    /// after it out of the listener's list and back in.
    emptied: BTreeSet<(String, String, String)>,
    changed: Changed,
}

/// What one batch marked for work.
#[derive(Default)]
struct Dirty {
    classes: bool,
    gateways: BTreeSet<Nn>,
    routes: BTreeSet<Nn>,
    /// RouteOptions whose status may change.
    options: BTreeSet<Nn>,
    /// Gateways whose routes' attachments changed (their listener counts).
    touched: BTreeSet<Nn>,
}

fn gateway_ref((namespace, name): &Nn) -> GatewayRef {
    GatewayRef {
        namespace: namespace.clone(),
        name: name.clone(),
    }
}

fn slash((namespace, name): &Nn) -> String {
    format!("{namespace}/{name}")
}

impl Incremental {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            output: Output::default(),
            started: false,
            gateways: BTreeMap::new(),
            set_verdicts: BTreeMap::new(),
            set_parents: BTreeMap::new(),
            routes: BTreeMap::new(),
            vhosts: BTreeMap::new(),
            staged: BTreeMap::new(),
            counts: BTreeMap::new(),
            deps: deps::Deps::default(),
            tls_policy_targets: BTreeMap::new(),
            emptied: BTreeSet::new(),
            changed: Changed::default(),
        }
    }

    /// The output for the index of the last `apply`.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// What the last `apply` changed.
    pub fn changed(&self) -> &Changed {
        &self.changed
    }

    /// Brings the output up to date with `index`, in which the resources `changed` names
    /// (added, edited or deleted) changed since the last call. The first call translates
    /// everything.
    pub fn apply<'a>(&mut self, index: &Index, changed: impl IntoIterator<Item = &'a ResourceKey>) -> &Output {
        self.changed = Changed::default();
        let mut dirty = Dirty::default();
        let mut changed_options = BTreeSet::new();
        if !self.started {
            self.started = true;
            dirty.classes = true;
            dirty.gateways.extend(index.gateways.keys().cloned());
            dirty.routes.extend(index.http_routes.keys().cloned());
            for (set, object) in &index.listener_sets {
                let parent = &object.spec.parent_ref;
                let gateway = (
                    parent.namespace.clone().unwrap_or_else(|| set.0.clone()),
                    parent.name.clone(),
                );
                self.set_parents.insert(set.clone(), gateway);
            }
            changed_options.extend(index.route_options.keys().cloned());
            for (policy, object) in &index.backend_tls_policies {
                let targets = super::backend_tls::targets(&policy.0, object);
                self.tls_policy_targets.insert(policy.clone(), targets);
            }
        }
        for key in changed {
            let nn = (key.namespace.clone(), key.name.clone());
            match key.kind {
                Kind::GatewayClass => {
                    dirty.classes = true;
                    let of_class = index
                        .gateways
                        .iter()
                        .filter(|(_, g)| g.spec.gateway_class_name == key.name);
                    dirty.gateways.extend(of_class.map(|(k, _)| k.clone()));
                }
                Kind::Gateway => {
                    dirty.gateways.insert(nn);
                }
                Kind::HttpRoute => {
                    dirty.routes.insert(nn);
                }
                // A backendRef names a Service or an Upstream: either decides between a
                // destination and a 500.
                Kind::Service | Kind::Upstream => dirty.routes.extend(self.deps.routes_of_backend(&nn).cloned()),
                Kind::RouteOption => {
                    changed_options.insert(nn);
                }
                // Grants decide cross-namespace backendRefs and certificateRefs.
                Kind::ReferenceGrant => {
                    dirty.routes.extend(self.deps.cross_namespace_routes().cloned());
                    let crossing = index.gateways.iter().filter(|(gw, g)| {
                        super::tls::refers_across_namespaces(&gw.0, g)
                            || super::frontend::refers_across_namespaces(&gw.0, g)
                            || super::backend_tls::client_cert::refers_across_namespaces(&gw.0, g)
                    });
                    dirty.gateways.extend(crossing.map(|(k, _)| k.clone()));
                }
                // Not read by the translation yet.
                Kind::EndpointSlice => {}
                // A policy decides the TLS of the routes to the Services it targets, before
                // and after the change.
                Kind::BackendTlsPolicy => {
                    let now = index
                        .backend_tls_policies
                        .get(&nn)
                        .map(|p| super::backend_tls::targets(&nn.0, p))
                        .unwrap_or_default();
                    let before = self.tls_policy_targets.remove(&nn).unwrap_or_default();
                    for service in before.union(&now) {
                        dirty.routes.extend(self.deps.routes_of_backend(service).cloned());
                    }
                    if !now.is_empty() {
                        self.tls_policy_targets.insert(nn, now);
                    }
                }
                // A ConfigMap holds the CA of a Gateway's client validation.
                Kind::ConfigMap => {
                    let referring = index
                        .gateways
                        .iter()
                        .filter(|(gw, g)| super::frontend::references(&gw.0, g, &nn));
                    dirty.gateways.extend(referring.map(|(k, _)| k.clone()));
                    // It may hold the CA of BackendTLSPolicies: their Services' routes.
                    let policies = index
                        .backend_tls_policies
                        .iter()
                        .filter(|(p, policy)| p.0 == nn.0 && super::backend_tls::names_config_map(policy, &nn.1));
                    for (p, policy) in policies {
                        for service in super::backend_tls::targets(&p.0, policy) {
                            dirty.routes.extend(self.deps.routes_of_backend(&service).cloned());
                        }
                    }
                }
                // Gateways are few: scanning them costs less than indexing their references.
                Kind::Secret => {
                    let referring = index.gateways.iter().filter(|(gw, g)| {
                        super::tls::references_secret(&gw.0, g, &nn)
                            || super::frontend::references(&gw.0, g, &nn)
                            || super::backend_tls::client_cert::references_secret(&gw.0, g, &nn)
                    });
                    dirty.gateways.extend(referring.map(|(k, _)| k.clone()));
                }
                // A set's listeners are its Gateway's: that Gateway (before and after the
                // change) is translated again, with the routes naming the set.
                Kind::ListenerSet => {
                    let now = index.listener_sets.get(&nn).map(|set| {
                        let parent = &set.spec.parent_ref;
                        (
                            parent.namespace.clone().unwrap_or_else(|| nn.0.clone()),
                            parent.name.clone(),
                        )
                    });
                    let before = match &now {
                        Some(parent) => self.set_parents.insert(nn.clone(), parent.clone()),
                        None => self.set_parents.remove(&nn),
                    };
                    dirty.gateways.extend(now.into_iter().chain(before));
                    let naming = index
                        .http_routes
                        .iter()
                        .filter(|(_, r)| deps::names_listener_set(r, &nn));
                    dirty.routes.extend(naming.map(|(k, _)| k.clone()));
                }
                Kind::Namespace => {
                    let selecting = index.gateways.iter().filter(|(_, g)| super::selects_namespaces(g));
                    dirty.gateways.extend(selecting.map(|(k, _)| k.clone()));
                }
            }
        }
        for option in &changed_options {
            let targets = index
                .route_options
                .get(option)
                .map(|o| deps::option_targets(&option.0, o))
                .unwrap_or_default();
            dirty.routes.extend(self.deps.set_option_targets(option, targets));
            dirty.routes.extend(self.deps.routes_referencing(option).cloned());
        }
        dirty.options.extend(changed_options);
        let gateways = std::mem::take(&mut dirty.gateways);
        for gateway in &gateways {
            dirty.routes.extend(self.deps.routes_of_gateway(gateway).cloned());
            self.update_gateway(index, gateway);
        }
        dirty.gateways = gateways;
        self.changed.retranslated_routes = dirty.routes.len();
        self.changed.route_status = dirty.routes.iter().map(slash).collect();
        let routes = std::mem::take(&mut dirty.routes);
        let mut old_route_status = Vec::with_capacity(routes.len());
        for route in &routes {
            old_route_status.push(self.output.status.http_routes.get(&slash(route)).cloned());
            self.retranslate(index, route, &mut dirty);
        }
        self.report_gateways(index, &dirty);
        if dirty.classes {
            let old = std::mem::take(&mut self.output.status.gateway_classes);
            report_gateway_classes(index, &self.options, &mut self.output.status);
            self.changed.status |= old != self.output.status.gateway_classes;
        }
        for (route, old) in routes.iter().zip(old_route_status) {
            if let Some(http_route) = index.http_routes.get(route) {
                self.output.status.finish_route(http_route);
            }
            self.changed.status |= old.as_ref() != self.output.status.http_routes.get(&slash(route));
        }
        self.report_route_options(index, &dirty.options);
        self.report_backend_tls_policies(index);
        self.drop_emptied();
        self.update_proxies(index, &dirty);
        &self.output
    }

    /// A Gateway changed (or its class did): forget its Proxy and status; keep it if it is
    /// ours (its Proxy is built again once its routes are).
    fn update_gateway(&mut self, index: &Index, gateway: &Nn) {
        if self.gateways.remove(gateway).is_some() {
            self.output
                .proxies
                .remove(&kgw_proto::nats::key(&gateway.0, &gateway.1));
            // Its status is rebuilt, or dropped, by `report_gateways`.
        }
        self.changed
            .proxies
            .insert(kgw_proto::nats::key(&gateway.0, &gateway.1));
        // Its Proxy is built anew from its routes, every one of which is translated again.
        self.vhosts.remove(gateway);
        match index.gateways.get(gateway) {
            Some(g) if is_ours(g, index, &self.options) => {
                let (effective, verdicts) = listener_sets::effective(&gateway.0, &gateway.1, g, index);
                self.gateways.insert(gateway.clone(), effective);
                self.set_verdicts.insert(gateway.clone(), verdicts);
                // Known as ours before its routes' status is finished.
                self.output.status.gateways.entry(slash(gateway)).or_default();
            }
            _ => {
                let old = self.output.status.gateways.remove(&slash(gateway));
                self.changed.status |= old.is_some();
                self.set_verdicts.remove(gateway);
                let key = slash(gateway);
                self.output.status.listener_sets.retain(|_, set| set.parent != key);
            }
        }
    }

    /// Takes route `key`'s pieces out and, if it still exists, translates it again for each
    /// listener of ours it attaches to.
    fn retranslate(&mut self, index: &Index, key: &Nn, dirty: &mut Dirty) {
        if let Some(old) = self.routes.remove(key) {
            self.deps.remove_route(key, &old.deps);
            dirty.options.extend(old.deps.route_options.iter().cloned());
            for a in old.attachments {
                // A Gateway built anew lost its slots already (`update_gateway`).
                if !dirty.gateways.contains(&a.gateway) {
                    self.take_out(&a);
                }
                let count_key = (a.gateway.clone(), a.listener);
                if let Some(count) = self.counts.get_mut(&count_key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.counts.remove(&count_key);
                    }
                }
                dirty.touched.insert(a.gateway);
            }
        }
        self.output.status.forget_route(&slash(key));
        dirty.options.extend(self.deps.options_targeting(key).cloned());
        let Some(route) = index.http_routes.get(key) else {
            return;
        };
        let route_deps = deps::route_deps(route, index);
        self.deps.add_route(key, &route_deps);
        dirty.options.extend(route_deps.route_options.iter().cloned());
        let (route_ns, route_name) = route_name(route);
        let mut attachments = Vec::new();
        for parent in &route_deps.parents {
            let Some(gateway) = self.gateways.get(parent) else {
                continue;
            };
            for (i, listener) in gateway.spec.listeners.iter().enumerate() {
                if !is_http(listener) || !routes::attaches(route, &parent.0, &parent.1, listener, index) {
                    continue;
                }
                let (owner_ns, owner_name) = routes::listener_parent(listener, &parent.0, &parent.1);
                let parent_ref = GatewayRef {
                    namespace: owner_ns,
                    name: owner_name,
                };
                let mut piece = routes::translate_route(route, listener.hostname.as_deref(), listener.port, index);
                super::hostnames::isolate(&mut piece.hosts, listener, &gateway.spec.listeners);
                self.output
                    .status
                    .route_translated(&route_ns, &route_name, &parent_ref, &piece.unresolved);
                let proxy_listener = proxy_listener_name(listener, &self.options);
                let rebuilt = dirty.gateways.contains(parent);
                for (copy, host) in piece.hosts.iter().enumerate() {
                    let vhost_key = (proxy_listener.clone(), host.clone());
                    let entries = piece.routes.iter().map(|(k, r)| ((k.clone(), i, copy), r.clone()));
                    if rebuilt {
                        let slots = self.vhosts.entry(parent.clone()).or_default();
                        let staged = self.staged.entry(parent.clone()).or_default();
                        let staged = staged.entry(vhost_key.clone()).or_default();
                        let slots = slots.entry(vhost_key).or_default();
                        // Put in order once all are in (`update_proxies`).
                        // Most hosts have one route: no room for four (the others grow
                        // as usual).
                        if slots.is_empty() {
                            slots.reserve_exact(piece.routes.len());
                            staged.reserve_exact(piece.routes.len());
                        }
                        for (slot, route) in entries {
                            slots.push(slot.clone());
                            staged.push((slot, route));
                        }
                    } else {
                        let slots = self.vhosts.entry(parent.clone()).or_default();
                        let slots = slots.entry(vhost_key).or_default();
                        let proxy_key = kgw_proto::nats::key(&parent.0, &parent.1);
                        let name = routes::vhost_name(&proxy_listener, host);
                        let served =
                            proxies::served_hosts(&mut self.output.proxies, &proxy_key, &proxy_listener, &name);
                        if proxies::put(slots, served, &proxy_listener, host, entries) {
                            self.changed
                                .virtual_hosts
                                .insert((proxy_key, proxy_listener.clone(), name));
                        }
                    }
                }
                *self.counts.entry((parent.clone(), i)).or_default() += 1;
                dirty.touched.insert(parent.clone());
                attachments.push(Attachment {
                    gateway: parent.clone(),
                    listener: i,
                    proxy_listener,
                    hosts: piece.hosts,
                    // Not collected in place: that would keep the piece's (key, route) room.
                    keys: piece.routes.iter().map(|(k, _)| k.clone()).collect(),
                });
            }
            for named in routes::named_parents(route, &parent.0, &parent.1, gateway) {
                if let Some(why) = routes::rejection(route, &parent.0, &parent.1, &named, gateway, index) {
                    let parent_ref = gateway_ref(&named);
                    self.output
                        .status
                        .route_rejected(&route_ns, &route_name, &parent_ref, why);
                }
            }
        }
        self.routes.insert(
            key.clone(),
            RouteState {
                deps: route_deps,
                attachments: {
                    attachments.shrink_to_fit();
                    attachments
                },
            },
        );
    }

    /// The status of every Gateway of ours that changed or whose routes did.
    fn report_gateways(&mut self, index: &Index, dirty: &Dirty) {
        for key in dirty.gateways.union(&dirty.touched) {
            let Some(gateway) = self.gateways.get(key) else {
                continue;
            };
            let status_key = slash(key);
            let old = self.output.status.gateways.remove(&status_key);
            let counts = &self.counts;
            report_gateway(
                &mut self.output.status,
                index,
                &gateway_ref(key),
                gateway,
                &self.options,
                |i| counts.get(&(key.clone(), i)).copied().unwrap_or(0),
            );
            let sets_before = self.output.status.listener_sets.clone();
            let verdicts = self.set_verdicts.get(key).map(Vec::as_slice).unwrap_or_default();
            listener_sets::report(&mut self.output.status, &status_key, verdicts);
            self.changed.status |= old.as_ref() != self.output.status.gateways.get(&status_key)
                || sets_before != self.output.status.listener_sets;
        }
    }

    /// Every BackendTLSPolicy's status, afresh: they are few, and their ancestors depend on
    /// the attachments of every route naming a targeted Service.
    fn report_backend_tls_policies(&mut self, index: &Index) {
        let old = std::mem::take(&mut self.output.status.backend_tls_policies);
        let deps = &self.deps;
        let users = |service: &Nn| -> BTreeSet<String> {
            deps.routes_of_backend(service)
                .filter(|route| {
                    index
                        .http_routes
                        .get(*route)
                        .is_some_and(|r| super::backend_tls::report::services_of(r).contains(service))
                })
                .map(slash)
                .collect()
        };
        super::backend_tls::report::report(index, users, &mut self.output.status);
        self.changed.status |= old != self.output.status.backend_tls_policies;
    }

    fn report_route_options(&mut self, index: &Index, options: &BTreeSet<Nn>) {
        for key in options {
            let status_key = slash(key);
            let old = self.output.status.route_options.remove(&status_key);
            if let Some(option) = index.route_options.get(key) {
                let targeted = self
                    .deps
                    .routes_targeted_by(key)
                    .filter(|route| index.http_routes.contains_key(*route));
                let users = targeted
                    .chain(self.deps.routes_referencing(key))
                    .map(|(_, name)| name.as_str());
                route_option::report_route_option(&key.0, &key.1, option, users, &mut self.output.status);
            }
            self.changed.status |= old.as_ref() != self.output.status.route_options.get(&status_key);
        }
    }
}

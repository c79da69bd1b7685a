//! The translation kept up to date per resource: each HTTPRoute is translated per parent
//! listener on its own ([`routes::translate_route`], as the full [`translate`] does) and
//! the pieces are kept; a batch of changes translates again only the routes it touches
//! (the route itself, or what it reads: its Gateways and their class, its Services or
//! Upstreams, its RouteOptions), then patches the virtual hosts those pieces sit in and the status
//! entries they decide. [`translate`] stays the reference: the tests check both agree
//! after every step of random change sequences.
//!
//! [`translate`]: super::translate
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_api::apis::experimental::gateways::Gateway;
use kgw_common::resources::{Index, Kind, ResourceKey};
use kgw_proto::v1 as pb;

use super::{
    GatewayRef, Options, Output, is_http, is_ours, report_gateway, report_gateway_classes, route_name, route_option,
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
    port: u32,
    hosts: Vec<String>,
    keys: Vec<SortKey>,
}

#[derive(Debug, Default)]
struct RouteState {
    deps: deps::RouteDeps,
    attachments: Vec<Attachment>,
}

/// A virtual host's routes in precedence order. The listener index and the host's position
/// among the piece's hosts keep every copy the full translation makes of one route (attached
/// through two listeners of one port, or naming a hostname twice).
type VhostRoutes = BTreeMap<(SortKey, usize, usize), pb::Route>;

/// The incremental translator: [`apply`](Self::apply) after every batch of changes.
#[derive(Debug)]
pub struct Incremental {
    options: Options,
    output: Output,
    started: bool,
    /// Gateways of ours, as last translated.
    gateways: BTreeMap<Nn, Arc<Gateway>>,
    routes: BTreeMap<Nn, RouteState>,
    /// Gateway → (Envoy port, hostname) → routes.
    vhosts: BTreeMap<Nn, BTreeMap<(u32, String), VhostRoutes>>,
    /// (Gateway, listener index) → routes attached.
    counts: BTreeMap<(Nn, usize), usize>,
    deps: deps::Deps,
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
    vhosts: BTreeSet<(Nn, u32, String)>,
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
            routes: BTreeMap::new(),
            vhosts: BTreeMap::new(),
            counts: BTreeMap::new(),
            deps: deps::Deps::default(),
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
            changed_options.extend(index.route_options.keys().cloned());
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
                    let crossing = index
                        .gateways
                        .iter()
                        .filter(|(gw, g)| super::tls::refers_across_namespaces(&gw.0, g));
                    dirty.gateways.extend(crossing.map(|(k, _)| k.clone()));
                }
                Kind::EndpointSlice => {}
                // Gateways are few: scanning them costs less than indexing their references.
                Kind::Secret => {
                    let referring = index
                        .gateways
                        .iter()
                        .filter(|(gw, g)| super::tls::references_secret(&gw.0, g, &nn));
                    dirty.gateways.extend(referring.map(|(k, _)| k.clone()));
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
        self.update_proxies(&dirty);
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
        match index.gateways.get(gateway) {
            Some(g) if is_ours(g, index, &self.options) => {
                self.gateways.insert(gateway.clone(), g.clone());
                // Known as ours before its routes' status is finished.
                self.output.status.gateways.entry(slash(gateway)).or_default();
            }
            _ => {
                let old = self.output.status.gateways.remove(&slash(gateway));
                self.changed.status |= old.is_some();
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
                let vhosts = self.vhosts.entry(a.gateway.clone()).or_default();
                for (copy, host) in a.hosts.into_iter().enumerate() {
                    let vhost_key = (a.port, host);
                    if let Some(routes) = vhosts.get_mut(&vhost_key) {
                        for sort_key in &a.keys {
                            routes.remove(&(sort_key.clone(), a.listener, copy));
                        }
                        if routes.is_empty() {
                            vhosts.remove(&vhost_key);
                        }
                    }
                    dirty.vhosts.insert((a.gateway.clone(), vhost_key.0, vhost_key.1));
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
        let route_deps = deps::route_deps(route);
        self.deps.add_route(key, &route_deps);
        dirty.options.extend(route_deps.route_options.iter().cloned());
        let (route_ns, route_name) = route_name(route);
        let mut attachments = Vec::new();
        for parent in &route_deps.parents {
            let Some(gateway) = self.gateways.get(parent) else {
                continue;
            };
            let parent_ref = gateway_ref(parent);
            for (i, listener) in gateway.spec.listeners.iter().enumerate() {
                if !is_http(listener) || !routes::attaches(route, &parent.0, &parent.1, listener, index) {
                    continue;
                }
                let piece = routes::translate_route(route, listener.hostname.as_deref(), index);
                self.output
                    .status
                    .route_translated(&route_ns, &route_name, &parent_ref, &piece.unresolved);
                let port = self.options.envoy_port(listener.port);
                let vhosts = self.vhosts.entry(parent.clone()).or_default();
                for (copy, host) in piece.hosts.iter().enumerate() {
                    let routes = vhosts.entry((port, host.clone())).or_default();
                    for (sort_key, proxy_route) in &piece.routes {
                        routes.insert((sort_key.clone(), i, copy), proxy_route.clone());
                    }
                    dirty.vhosts.insert((parent.clone(), port, host.clone()));
                }
                *self.counts.entry((parent.clone(), i)).or_default() += 1;
                dirty.touched.insert(parent.clone());
                attachments.push(Attachment {
                    gateway: parent.clone(),
                    listener: i,
                    port,
                    hosts: piece.hosts,
                    keys: piece.routes.into_iter().map(|(k, _)| k).collect(),
                });
            }
        }
        self.routes.insert(
            key.clone(),
            RouteState {
                deps: route_deps,
                attachments,
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
            let address = self.options.bind_address(gateway);
            report_gateway(
                &mut self.output.status,
                index,
                &gateway_ref(key),
                gateway,
                &address,
                |i| counts.get(&(key.clone(), i)).copied().unwrap_or(0),
            );
            self.changed.status |= old.as_ref() != self.output.status.gateways.get(&status_key);
        }
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

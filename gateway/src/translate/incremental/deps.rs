//! What each route's translation reads besides the route itself, indexed backwards: from a
//! changed Gateway, Service, Upstream, RouteOption or ReferenceGrant to the routes to translate again.
//! Every set here is a superset of what the translation reads (a route re-translated for
//! nothing costs a little time; one missed would be a wrong output).
use std::collections::{BTreeMap, BTreeSet};

use gateway_api::apis::experimental::httproutes::HttpRoute;
use kgw_common::{policy::RouteOption, resources::Index};

/// (namespace, name) of a resource.
pub(super) type Nn = (String, String);

/// The resources one route's translation and status depend on. One per route, kept: each
/// set is a sorted vector without duplicates (a one-element `BTreeSet` allocates a whole
/// B-tree node).
#[derive(Clone, Debug, Default)]
pub(super) struct RouteDeps {
    /// Gateways its parentRefs name (attachment, listener hostnames).
    pub(super) parents: Vec<Nn>,
    /// Backends (Services, Upstreams) its backendRefs name, whatever their kind (existence
    /// decides between a cluster and a 500).
    pub(super) backends: Vec<Nn>,
    /// RouteOptions its filters name by ExtensionRef (their options, or BackendNotFound).
    pub(super) route_options: Vec<Nn>,
    /// Whether a backendRef leaves the route's namespace (a ReferenceGrant may decide it).
    pub(super) cross_namespace: bool,
}

/// Whether a parentRef of `route` names ListenerSet `set`.
pub(super) fn names_listener_set(route: &HttpRoute, set: &Nn) -> bool {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    route.spec.parent_refs.iter().flatten().any(|p| {
        p.kind.as_deref() == Some("ListenerSet")
            && p.name == set.1
            && p.namespace.as_deref().unwrap_or(namespace) == set.0
    })
}

/// What `route` depends on. A parentRef naming a ListenerSet depends on the set's Gateway.
pub(super) fn route_deps(route: &HttpRoute, index: &Index) -> RouteDeps {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let parents: BTreeSet<Nn> = route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .filter_map(|p| {
            let nn = (p.namespace.as_deref().unwrap_or(namespace).to_string(), p.name.clone());
            if p.kind.as_deref() != Some("ListenerSet") {
                return Some(nn);
            }
            let set = index.listener_sets.get(&nn)?;
            let parent = &set.spec.parent_ref;
            Some((parent.namespace.clone().unwrap_or(nn.0), parent.name.clone()))
        })
        .collect();
    let (mut backends, mut route_options) = (BTreeSet::new(), BTreeSet::new());
    let mut cross_namespace = false;
    for rule in route.spec.rules.iter().flatten() {
        for backend in rule.backend_refs.iter().flatten() {
            let backend_ns = backend.namespace.as_deref().unwrap_or(namespace);
            cross_namespace |= backend_ns != namespace;
            backends.insert((backend_ns.to_string(), backend.name.clone()));
        }
        for filter in rule.filters.iter().flatten() {
            if let Some(ext) = &filter.extension_ref
                && ext.group == "gateway.solo.io"
                && ext.kind == "RouteOption"
            {
                route_options.insert((namespace.to_string(), ext.name.clone()));
            }
        }
    }
    RouteDeps {
        parents: parents.into_iter().collect(),
        backends: backends.into_iter().collect(),
        route_options: route_options.into_iter().collect(),
        cross_namespace,
    }
}

/// The routes a RouteOption's targetRefs name (any sectionName), in its namespace.
pub(super) fn option_targets(namespace: &str, option: &RouteOption) -> BTreeSet<Nn> {
    option
        .spec
        .target_refs
        .iter()
        .filter(|t| t.group == "gateway.networking.k8s.io" && t.kind == "HTTPRoute")
        .map(|t| (namespace.to_string(), t.name.clone()))
        .collect()
}

/// The reverse indexes.
#[derive(Debug, Default)]
pub(super) struct Deps {
    by_parent: BTreeMap<Nn, BTreeSet<Nn>>,
    by_backend: BTreeMap<Nn, BTreeSet<Nn>>,
    by_ext_ref: BTreeMap<Nn, BTreeSet<Nn>>,
    cross_namespace: BTreeSet<Nn>,
    /// RouteOption → the routes its targetRefs name.
    option_targets: BTreeMap<Nn, BTreeSet<Nn>>,
    /// Route → the RouteOptions whose targetRefs name it.
    targeted_by: BTreeMap<Nn, BTreeSet<Nn>>,
}

fn link(map: &mut BTreeMap<Nn, BTreeSet<Nn>>, from: &Nn, to: &Nn) {
    map.entry(from.clone()).or_default().insert(to.clone());
}

fn unlink(map: &mut BTreeMap<Nn, BTreeSet<Nn>>, from: &Nn, to: &Nn) {
    if let Some(set) = map.get_mut(from) {
        set.remove(to);
        if set.is_empty() {
            map.remove(from);
        }
    }
}

fn get<'a>(map: &'a BTreeMap<Nn, BTreeSet<Nn>>, key: &Nn) -> impl Iterator<Item = &'a Nn> + use<'a> {
    map.get(key).into_iter().flatten()
}

impl Deps {
    pub(super) fn add_route(&mut self, route: &Nn, deps: &RouteDeps) {
        deps.parents.iter().for_each(|p| link(&mut self.by_parent, p, route));
        deps.backends.iter().for_each(|s| link(&mut self.by_backend, s, route));
        deps.route_options
            .iter()
            .for_each(|o| link(&mut self.by_ext_ref, o, route));
        if deps.cross_namespace {
            self.cross_namespace.insert(route.clone());
        }
    }

    pub(super) fn remove_route(&mut self, route: &Nn, deps: &RouteDeps) {
        deps.parents.iter().for_each(|p| unlink(&mut self.by_parent, p, route));
        deps.backends
            .iter()
            .for_each(|s| unlink(&mut self.by_backend, s, route));
        deps.route_options
            .iter()
            .for_each(|o| unlink(&mut self.by_ext_ref, o, route));
        self.cross_namespace.remove(route);
    }

    /// Records the routes RouteOption `option` targets now; returns those it targeted
    /// before or targets now (their filters change).
    pub(super) fn set_option_targets(&mut self, option: &Nn, targets: BTreeSet<Nn>) -> BTreeSet<Nn> {
        let old = self.option_targets.remove(option).unwrap_or_default();
        old.iter().for_each(|r| unlink(&mut self.targeted_by, r, option));
        targets.iter().for_each(|r| link(&mut self.targeted_by, r, option));
        let affected = old.union(&targets).cloned().collect();
        if !targets.is_empty() {
            self.option_targets.insert(option.clone(), targets);
        }
        affected
    }

    /// Routes whose parentRefs name Gateway `gateway`.
    pub(super) fn routes_of_gateway(&self, gateway: &Nn) -> impl Iterator<Item = &Nn> {
        get(&self.by_parent, gateway)
    }

    pub(super) fn routes_of_backend(&self, backend: &Nn) -> impl Iterator<Item = &Nn> {
        get(&self.by_backend, backend)
    }

    /// Routes whose filters name RouteOption `option` by ExtensionRef.
    pub(super) fn routes_referencing(&self, option: &Nn) -> impl Iterator<Item = &Nn> {
        get(&self.by_ext_ref, option)
    }

    pub(super) fn routes_targeted_by(&self, option: &Nn) -> impl Iterator<Item = &Nn> {
        get(&self.option_targets, option)
    }

    pub(super) fn options_targeting(&self, route: &Nn) -> impl Iterator<Item = &Nn> {
        get(&self.targeted_by, route)
    }

    pub(super) fn cross_namespace_routes(&self) -> impl Iterator<Item = &Nn> {
        self.cross_namespace.iter()
    }
}

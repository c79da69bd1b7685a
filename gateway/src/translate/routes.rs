//! HTTPRoute → Proxy routes: attachment to listeners, matchers, backends, and the Gateway
//! API's match precedence.
use std::{cmp::Reverse, collections::BTreeMap};

use gateway_api::apis::experimental::{
    gateways::{Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From},
    httproutes::{
        HttpRoute, HttpRouteRulesBackendRefs, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
        HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
    },
};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, matcher::PathSpecifier, route::Action, route_action::Destination};

use super::{filters, hostnames};

/// How a route relates to one listener of a Gateway it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Attachment {
    /// No parentRef names this listener (name, namespace, sectionName, port).
    NotReferenced,
    /// Named, but the listener's allowedRoutes refuse the route's namespace or kind.
    NotAllowed,
    /// Allowed, but no hostname of the route intersects the listener's.
    NoHostname,
    Attached,
}

/// Whether `route` attaches to `listener` of Gateway `gw_ns/gw_name` (parentRef name,
/// namespace, sectionName and port, and the listener's allowedRoutes namespaces).
pub(super) fn attaches(
    route: &HttpRoute,
    gw_ns: &str,
    gw_name: &str,
    listener: &GatewayListeners,
    index: &Index,
) -> bool {
    attachment(route, gw_ns, gw_name, listener, index) == Attachment::Attached
}

/// The parent a listener of an effective Gateway belongs to, as the status keys parents:
/// the Gateway (`gw_ns`, `gw_name`), or a ListenerSet (`set ns`, `ls:<set name>`).
pub(super) fn listener_parent(listener: &GatewayListeners, gw_ns: &str, gw_name: &str) -> (String, String) {
    match super::listener_sets::parse(&listener.name) {
        Some((set_ns, set_name, _)) => super::listener_sets::parent_key(set_ns, set_name),
        None => (gw_ns.to_string(), gw_name.to_string()),
    }
}

/// Why `route` attaches to no listener `parent` owns in `gateway` (`gw_ns/gw_name`, its
/// effective form), as the condition reason and message of that parent's status; `None`
/// when it attaches to one.
pub(super) fn rejection(
    route: &HttpRoute,
    gw_ns: &str,
    gw_name: &str,
    parent: &(String, String),
    gateway: &Gateway,
    index: &Index,
) -> Option<(&'static str, String)> {
    let best = gateway
        .spec
        .listeners
        .iter()
        .filter(|listener| listener_parent(listener, gw_ns, gw_name) == *parent)
        .map(|listener| attachment(route, gw_ns, gw_name, listener, index))
        .max()
        .unwrap_or(Attachment::NotReferenced);
    match best {
        Attachment::Attached => None,
        Attachment::NoHostname => Some((
            "NoMatchingListenerHostname",
            "no hostname of the route intersects a hostname of the listeners it names".into(),
        )),
        Attachment::NotAllowed => Some((
            "NotAllowedByListeners",
            "the listeners the route names do not allow routes from its namespace or of its kind".into(),
        )),
        Attachment::NotReferenced => Some((
            "NoMatchingParent",
            "no listener of the parent matches the parentRef's sectionName and port".into(),
        )),
    }
}

/// The parents (as [`listener_parent`] keys them) of `gateway` that `route` names: the
/// Gateway itself and the ListenerSets attached to it.
pub(super) fn named_parents(route: &HttpRoute, gw_ns: &str, gw_name: &str, gateway: &Gateway) -> Vec<(String, String)> {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let mut parents: Vec<(String, String)> = Vec::new();
    for parent in route.spec.parent_refs.iter().flatten() {
        if parent
            .group
            .as_deref()
            .is_some_and(|g| g != "gateway.networking.k8s.io")
        {
            continue;
        }
        let ns = parent.namespace.as_deref().unwrap_or(route_ns);
        let key = match parent.kind.as_deref().unwrap_or("Gateway") {
            "Gateway" if ns == gw_ns && parent.name == gw_name => (gw_ns.to_string(), gw_name.to_string()),
            "ListenerSet"
                if gateway.spec.listeners.iter().any(|l| {
                    super::listener_sets::parse(&l.name)
                        .is_some_and(|(s_ns, s_name, _)| s_ns == ns && s_name == parent.name)
                }) =>
            {
                super::listener_sets::parent_key(ns, &parent.name)
            }
            _ => continue,
        };
        if !parents.contains(&key) {
            parents.push(key);
        }
    }
    parents
}

/// Whether the listener's `allowedRoutes.kinds` admit HTTPRoutes (absent: its protocol's
/// kinds, which for HTTP and HTTPS are HTTPRoute).
fn kind_allowed(listener: &GatewayListeners) -> bool {
    let kinds = listener.allowed_routes.as_ref().and_then(|a| a.kinds.as_deref());
    match kinds {
        None | Some([]) => super::is_http(listener),
        Some(kinds) => kinds
            .iter()
            .any(|k| k.kind == "HTTPRoute" && k.group.as_deref().is_none_or(|g| g == "gateway.networking.k8s.io")),
    }
}

pub(super) fn attachment(
    route: &HttpRoute,
    gw_ns: &str,
    gw_name: &str,
    listener: &GatewayListeners,
    index: &Index,
) -> Attachment {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    // A ListenerSet's listener answers to parentRefs naming the set (its own name as the
    // sectionName); the Gateway's own, to parentRefs naming the Gateway. Same-namespace
    // rules are the set's namespace for a set's listener.
    let set = super::listener_sets::parse(&listener.name);
    let (kind, owner_ns, owner_name, section) = match set {
        Some((set_ns, set_name, own)) => ("ListenerSet", set_ns, set_name, own),
        None => ("Gateway", gw_ns, gw_name, listener.name.as_str()),
    };
    let parent_matches = route.spec.parent_refs.iter().flatten().any(|parent| {
        parent.group.as_deref().is_none_or(|g| g == "gateway.networking.k8s.io")
            && parent.kind.as_deref().unwrap_or("Gateway") == kind
            && parent.name == owner_name
            && parent.namespace.as_deref().unwrap_or(route_ns) == owner_ns
            && parent.section_name.as_deref().is_none_or(|s| s == section)
            && parent.port.is_none_or(|p| p == listener.port)
    });
    if !parent_matches {
        return Attachment::NotReferenced;
    }
    let gw_ns = owner_ns;
    let from = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone())
        .unwrap_or(From::Same);
    let namespace_allowed = match from {
        From::All => true,
        From::Same => route_ns == gw_ns,
        From::Selector => {
            let selector = listener
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.selector.as_ref());
            let labels = index.namespaces.get(route_ns).and_then(|n| n.metadata.labels.as_ref());
            selector.is_some_and(|s| super::selectors::matches(s, route_ns, labels))
        }
    };
    if !namespace_allowed || !kind_allowed(listener) {
        return Attachment::NotAllowed;
    }
    let hostnames = route.spec.hostnames.clone().unwrap_or_default();
    match hostnames::intersect(listener.hostname.as_deref(), &hostnames) {
        Some(_) => Attachment::Attached,
        None => Attachment::NoHostname,
    }
}

/// Gateway API precedence, smallest first: exact path, then regex, then longest prefix;
/// then a method match; then more header matches; then more query matches; then the
/// oldest route, then namespace/name; then rule and match order.
pub(super) type SortKey = (
    u8,
    Reverse<usize>,
    bool,
    Reverse<usize>,
    Reverse<usize>,
    String,
    String,
    usize,
    usize,
);

/// One HTTPRoute translated for one listener: the Proxy routes it contributes (one per
/// match, each with its precedence key) on each hostname it serves there, and the reasons
/// its refs did not resolve (for its status). The unit both the full and the incremental
/// translation are made of.
#[derive(Clone, Debug, Default)]
pub(super) struct RoutePiece {
    pub(super) hosts: Vec<String>,
    pub(super) routes: Vec<(SortKey, pb::Route)>,
    pub(super) unresolved: Vec<(String, String)>,
}

/// Translates `route` for a listener with `listener_hostname` and declared `listener_port`
/// (the route attaches to it).
pub(super) fn translate_route(
    route: &HttpRoute,
    listener_hostname: Option<&str>,
    listener_port: i32,
    index: &Index,
) -> RoutePiece {
    let namespace = route.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = route.metadata.name.clone().unwrap_or_default();
    let route_hostnames = route.spec.hostnames.clone().unwrap_or_default();
    let Some(hosts) = hostnames::intersect(listener_hostname, &route_hostnames) else {
        return RoutePiece::default();
    };
    let mut piece = RoutePiece {
        hosts,
        ..RoutePiece::default()
    };
    let created = route
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let source = filters::http_route_ref(&namespace, &name);
    let default_match = [HttpRouteRulesMatches::default()];
    for (rule_index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let mut filters = filters::rule_filters(route, rule_index, rule, index);
        filters::settle_redirect_ports(&mut filters, listener_port);
        for error in filters::errors(&filters) {
            piece.unresolved.push((error.reason.clone(), error.message.clone()));
        }
        piece.unresolved.extend(filters::untranslated(rule_index, rule));
        // A rule that redirects, or whose filters cannot all be applied, forwards nowhere:
        // its filters decide the answer (the controller's precedence), so its backends
        // are not resolved.
        let action = (filters::errors(&filters).next().is_none() && !filters::redirects(&filters)).then(|| {
            let refs = rule.backend_refs.as_deref().unwrap_or_default();
            backend_action(route, rule_index, refs, index, &mut piece.unresolved)
        });
        let matches = match rule.matches.as_deref() {
            Some(m) if !m.is_empty() => m,
            _ => &default_match,
        };
        for (match_index, m) in matches.iter().enumerate() {
            let matcher = matcher(m);
            let key = sort_key(
                &matcher,
                created.clone(),
                format!("{namespace}/{name}"),
                rule_index,
                match_index,
            );
            let proxy_route = pb::Route {
                name: format!("{namespace}/{name}/rule/{rule_index}/match/{match_index}"),
                matchers: vec![matcher],
                action: action.clone(),
                source: Some(source.clone()),
                filters: filters.clone(),
            };
            piece.routes.push((key, proxy_route));
        }
    }
    piece
}

/// Routes collected per hostname for one Envoy listener.
#[derive(Default)]
pub(super) struct VirtualHosts {
    hosts: BTreeMap<String, Vec<(SortKey, pb::Route)>>,
}

impl VirtualHosts {
    pub(super) fn add(&mut self, piece: &RoutePiece) {
        for host in &piece.hosts {
            let routes = self.hosts.entry(host.clone()).or_default();
            // Most hosts have one route: no room for four (the others grow as usual).
            if routes.is_empty() {
                routes.reserve_exact(piece.routes.len());
            }
            routes.extend(piece.routes.iter().cloned());
        }
    }

    /// The virtual hosts of Proxy listener `listener`, in name order.
    pub(super) fn build(self, listener: &str) -> Vec<pb::VirtualHost> {
        self.hosts
            .into_iter()
            .map(|(host, mut routes)| {
                // Stable: one route attached through two listeners keeps both copies.
                routes.sort_by(|a, b| a.0.cmp(&b.0));
                // Collected in place, into room for (key, route) pairs: shrunk to the routes.
                let mut routes: Vec<pb::Route> = routes.into_iter().map(|(_, r)| r).collect();
                routes.shrink_to_fit();
                virtual_host(listener, host, routes)
            })
            .collect()
    }
}

/// The virtual host of `host` on Proxy listener `listener`, its routes in precedence order.
pub(super) fn virtual_host(listener: &str, host: String, routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: vhost_name(listener, &host),
        domains: vec![host],
        routes,
    }
}

/// `<listener>~<host>`: sorted by host within a listener.
pub(super) fn vhost_name(listener: &str, host: &str) -> String {
    format!("{listener}~{host}")
}

fn sort_key(m: &pb::Matcher, created: String, id: String, rule: usize, index: usize) -> SortKey {
    let (kind, len) = match &m.path_specifier {
        Some(PathSpecifier::Exact(p)) => (0, p.len()),
        Some(PathSpecifier::Regex(p)) => (1, p.len()),
        Some(PathSpecifier::Prefix(p)) => (2, p.len()),
        None => (2, 0),
    };
    (
        kind,
        Reverse(len),
        m.methods.is_empty(),
        Reverse(m.headers.len()),
        Reverse(m.query_parameters.len()),
        created,
        id,
        rule,
        index,
    )
}

fn matcher(m: &HttpRouteRulesMatches) -> pb::Matcher {
    let path = m.path.as_ref();
    let value = path.and_then(|p| p.value.clone()).unwrap_or_else(|| "/".into());
    let path_specifier = match path
        .and_then(|p| p.r#type.clone())
        .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix)
    {
        HttpRouteRulesMatchesPathType::Exact => PathSpecifier::Exact(value),
        HttpRouteRulesMatchesPathType::RegularExpression => PathSpecifier::Regex(value),
        HttpRouteRulesMatchesPathType::PathPrefix => PathSpecifier::Prefix(value),
    };
    pb::Matcher {
        path_specifier: Some(path_specifier),
        headers: m
            .headers
            .iter()
            .flatten()
            .map(|h| pb::HeaderMatcher {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
                regex: matches!(h.r#type, Some(HttpRouteRulesMatchesHeadersType::RegularExpression)),
                invert_match: false,
            })
            .collect(),
        query_parameters: m
            .query_params
            .iter()
            .flatten()
            .map(|q| pb::QueryParameterMatcher {
                name: q.name.clone(),
                value: q.value.clone(),
                regex: matches!(q.r#type, Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression)),
            })
            .collect(),
        methods: m
            .method
            .iter()
            .map(|method| format!("{method:?}").to_ascii_uppercase())
            .collect(),
    }
}

/// backendRefs → a route action. Refs that cannot be resolved are reported on the route's
/// status (`unresolved`) and answered 500, as the Gateway API asks; no backendRefs at all
/// answers 500 too. A backendRef's own filters go with its destination (`Destination.filters`)
/// when the rule has several; `rule_filters` took those of a rule's only backendRef.
fn backend_action(
    route: &HttpRoute,
    rule_index: usize,
    refs: &[HttpRouteRulesBackendRefs],
    index: &Index,
    unresolved: &mut Vec<(String, String)>,
) -> Action {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let mut destinations = Vec::new();
    for (backend_index, backend) in refs.iter().enumerate() {
        let weight = backend.weight.unwrap_or(1).max(0) as u32;
        let target = BackendTarget {
            group: backend.group.as_deref().unwrap_or(""),
            kind: backend.kind.as_deref().unwrap_or("Service"),
            name: &backend.name,
            namespace: backend.namespace.as_deref(),
            port: backend.port,
        };
        // An unresolvable ref keeps its share of the traffic, answered 500 by the
        // controller (kind "Invalid" never names a cluster).
        let upstream = resolve_backend(&target, route_ns, index).unwrap_or_else(|(reason, message, invalid)| {
            unresolved.push((reason.to_string(), message));
            invalid
        });
        let (upstream, tls) = super::backend_tls::apply(&target, route_ns, upstream, index);
        if weight == 0 {
            continue;
        }
        let filters = if refs.len() > 1 {
            filters::backend_ref_filters(route, rule_index, backend_index, backend, index)
        } else {
            Vec::new()
        };
        destinations.push(pb::WeightedDestination {
            destination: Some(pb::Destination {
                upstream: Some(upstream),
                filters,
                tls,
            }),
            weight,
        });
    }
    match destinations.len() {
        0 => Action::DirectResponseAction(pb::DirectResponseAction {
            status: 500,
            body: String::new(),
        }),
        1 if refs.len() == 1 => Action::RouteAction(pb::RouteAction {
            destination: Some(Destination::Single(
                destinations.remove(0).destination.unwrap_or_default(),
            )),
        }),
        _ => Action::RouteAction(pb::RouteAction {
            destination: Some(Destination::Multi(pb::MultiDestination { destinations })),
        }),
    }
}

/// A backend a route names (a backendRef, a RequestMirror's backendRef), defaults applied
/// except the namespace (`None`: the route's).
pub(super) struct BackendTarget<'a> {
    pub(super) group: &'a str,
    pub(super) kind: &'a str,
    pub(super) name: &'a str,
    pub(super) namespace: Option<&'a str>,
    pub(super) port: Option<i32>,
}

/// The Upstream a backend of a route in `route_ns` names, or why it cannot be used (reason,
/// message, and the "Invalid" ref that stands for it: the controller answers it 500).
pub(super) fn resolve_backend(
    backend: &BackendTarget<'_>,
    route_ns: &str,
    index: &Index,
) -> Result<pb::ResourceRef, (&'static str, String, pb::ResourceRef)> {
    let BackendTarget {
        group,
        kind,
        name,
        port,
        ..
    } = *backend;
    let namespace = backend.namespace.unwrap_or(route_ns).to_string();
    // Gloo's Upstream, declared by users: sent to as it is, by name (no port).
    let upstream = group == kgw_common::gloo::GROUP && kind == "Upstream";
    let service = group.is_empty() && kind == "Service";
    let problem = if !(service || upstream) {
        Some((
            "InvalidKind",
            format!("backendRef kind {group}/{kind} is not supported"),
        ))
    } else if !super::grants::permitted(
        index,
        &super::grants::From {
            group: "gateway.networking.k8s.io",
            kind: "HTTPRoute",
            namespace: route_ns,
        },
        &super::grants::To {
            group,
            kind,
            namespace: &namespace,
            name,
        },
    ) {
        Some((
            "RefNotPermitted",
            format!("backendRef to {kind} {namespace}/{name} is not allowed by any ReferenceGrant in {namespace}"),
        ))
    } else if upstream {
        (!index.upstreams.contains_key(&(namespace.clone(), name.to_string())))
            .then(|| ("BackendNotFound", format!("Upstream {namespace}/{name} not found")))
    } else if port.is_none() {
        Some((
            "UnsupportedValue",
            format!("backendRef to Service {namespace}/{name} has no port"),
        ))
    } else if !index.services.contains_key(&(namespace.clone(), name.to_string())) {
        Some(("BackendNotFound", format!("Service {namespace}/{name} not found")))
    } else {
        None
    };
    let upstream_name = if upstream {
        name.to_string()
    } else {
        format!("{namespace}-{name}-{}", port.unwrap_or(0))
    };
    let reference = |kind: &str| pb::ResourceRef {
        kind: kind.into(),
        namespace: namespace.clone(),
        name: upstream_name.clone(),
    };
    match problem {
        Some((reason, message)) => Err((reason, message, reference("Invalid"))),
        None => Ok(reference("Upstream")),
    }
}

//! HTTPRoute → Proxy routes: attachment to listeners, matchers, backends, and the Gateway
//! API's match precedence.
use std::{cmp::Reverse, collections::BTreeMap};

use gateway_api::apis::experimental::{
    gateways::{GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From},
    httproutes::{
        HttpRoute, HttpRouteRulesBackendRefs, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType,
        HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType,
    },
};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, matcher::PathSpecifier, route::Action, route_action::Destination};

use super::{filters, hostnames};

/// Whether `route` attaches to `listener` of Gateway `gw_ns/gw_name` (parentRef name,
/// namespace, sectionName and port, and the listener's allowedRoutes namespaces).
pub(super) fn attaches(
    route: &HttpRoute,
    gw_ns: &str,
    gw_name: &str,
    listener: &GatewayListeners,
    index: &Index,
) -> bool {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let parent_matches = route.spec.parent_refs.iter().flatten().any(|parent| {
        parent.group.as_deref().is_none_or(|g| g == "gateway.networking.k8s.io")
            && parent.kind.as_deref().is_none_or(|k| k == "Gateway")
            && parent.name == gw_name
            && parent.namespace.as_deref().unwrap_or(route_ns) == gw_ns
            && parent.section_name.as_deref().is_none_or(|s| s == listener.name)
            && parent.port.is_none_or(|p| p == listener.port)
    });
    if !parent_matches {
        return false;
    }
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
    let hostnames = route.spec.hostnames.clone().unwrap_or_default();
    namespace_allowed && hostnames::intersect(listener.hostname.as_deref(), &hostnames).is_some()
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

/// Translates `route` for a listener with `listener_hostname` (the route attaches to it).
pub(super) fn translate_route(route: &HttpRoute, listener_hostname: Option<&str>, index: &Index) -> RoutePiece {
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
        let filters = filters::rule_filters(route, rule_index, rule, index);
        for error in filters::errors(&filters) {
            piece.unresolved.push((error.reason.clone(), error.message.clone()));
        }
        // A rule that redirects, or whose filters cannot all be applied, forwards nowhere:
        // its filters decide the answer (the controller's precedence), so its backends
        // are not resolved.
        let action = (filters::errors(&filters).next().is_none() && !filters::redirects(&filters)).then(|| {
            let refs = rule.backend_refs.as_deref().unwrap_or_default();
            backend_action(refs, &namespace, index, &mut piece.unresolved)
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
            routes.extend(piece.routes.iter().cloned());
        }
    }

    pub(super) fn build(self, port: u32) -> Vec<pb::VirtualHost> {
        self.hosts
            .into_iter()
            .map(|(host, mut routes)| {
                // Stable: one route attached through two listeners keeps both copies.
                routes.sort_by(|a, b| a.0.cmp(&b.0));
                virtual_host(port, host, routes.into_iter().map(|(_, r)| r).collect())
            })
            .collect()
    }
}

/// The virtual host of `host` on Envoy port `port`, its routes in precedence order.
pub(super) fn virtual_host(port: u32, host: String, routes: Vec<pb::Route>) -> pb::VirtualHost {
    pb::VirtualHost {
        name: vhost_name(port, &host),
        domains: vec![host],
        routes,
    }
}

pub(super) fn vhost_name(port: u32, host: &str) -> String {
    format!("listener~{port}~{host}")
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
/// status (`unresolved`) and answered 500, as the Gateway API asks; no backendRefs at all answers 500 too.
fn backend_action(
    refs: &[HttpRouteRulesBackendRefs],
    route_ns: &str,
    index: &Index,
    unresolved: &mut Vec<(String, String)>,
) -> Action {
    let mut destinations = Vec::new();
    for backend in refs {
        let weight = backend.weight.unwrap_or(1).max(0) as u32;
        let group = backend.group.as_deref().unwrap_or("");
        let kind = backend.kind.as_deref().unwrap_or("Service");
        let namespace = backend.namespace.clone().unwrap_or_else(|| route_ns.to_string());
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
                name: &backend.name,
            },
        ) {
            Some((
                "RefNotPermitted",
                format!(
                    "backendRef to {kind} {namespace}/{} is not allowed by any ReferenceGrant in {namespace}",
                    backend.name
                ),
            ))
        } else if upstream {
            (!index.upstreams.contains_key(&(namespace.clone(), backend.name.clone()))).then(|| {
                (
                    "BackendNotFound",
                    format!("Upstream {namespace}/{} not found", backend.name),
                )
            })
        } else if backend.port.is_none() {
            Some((
                "UnsupportedValue",
                format!("backendRef to Service {namespace}/{} has no port", backend.name),
            ))
        } else if !index.services.contains_key(&(namespace.clone(), backend.name.clone())) {
            Some((
                "BackendNotFound",
                format!("Service {namespace}/{} not found", backend.name),
            ))
        } else {
            None
        };
        // An unresolvable ref keeps its share of the traffic, answered 500 by the
        // controller (kind "Invalid" never names a cluster).
        let kind = match problem {
            Some((reason, message)) => {
                unresolved.push((reason.to_string(), message));
                "Invalid"
            }
            None => "Upstream",
        };
        if weight == 0 {
            continue;
        }
        let port = backend.port.unwrap_or(0);
        let name = if upstream {
            backend.name.clone()
        } else {
            format!("{namespace}-{}-{port}", backend.name)
        };
        destinations.push(pb::WeightedDestination {
            destination: Some(pb::Destination {
                upstream: Some(pb::ResourceRef {
                    kind: kind.into(),
                    namespace: namespace.clone(),
                    name,
                }),
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

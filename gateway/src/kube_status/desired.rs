//! The status each resource should have, in the Gateway API's own types: a pure function of
//! the translation's [`StatusReport`], the object (its generation, its parentRefs and
//! listeners as written) and the status it has now (whose `lastTransitionTime`s are kept for
//! conditions whose status did not change, so an unchanged state compares equal and is not
//! written again).
use gateway_api::apis::experimental::{
    gatewayclasses::{GatewayClass, GatewayClassStatus, GatewayClassStatusSupportedFeatures},
    gateways::{
        Gateway, GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
    },
    httproutes::{HttpRoute, HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef},
    listenersets::{
        ListenerSet, ListenerSetStatus, ListenerSetStatusListeners, ListenerSetStatusListenersSupportedKinds,
    },
};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kgw_common::policy::{AncestorRef, PolicyAncestorStatus, PolicyStatus, RouteOption};

use crate::translate::status::{self, RouteParentStatus};

/// Gateway API features this implementation serves, as conformance names them (sorted, as
/// the API requires).
pub(crate) const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    "HTTPRouteHostRewrite",
    "HTTPRoutePathRewrite",
    "HTTPRouteResponseHeaderModification",
];

const GROUP: &str = "gateway.networking.k8s.io";

/// Our conditions as API conditions: `observedGeneration` from the object,
/// `lastTransitionTime` from `previous` when the condition's status is unchanged, else `now`.
pub(crate) fn conditions(
    ours: &[status::Condition],
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    ours.iter()
        .map(|condition| {
            let since = previous
                .iter()
                .find(|p| p.type_ == condition.type_ && p.status == condition.status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            Condition {
                type_: condition.type_.clone(),
                status: condition.status.clone(),
                reason: condition.reason.clone(),
                message: condition.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

pub(crate) fn gateway_class(
    ours: &[status::Condition],
    class: &GatewayClass,
    previous: Option<&GatewayClassStatus>,
    now: &Time,
) -> GatewayClassStatus {
    let previous_conditions = previous.and_then(|p| p.conditions.as_deref()).unwrap_or_default();
    GatewayClassStatus {
        conditions: Some(conditions(ours, class.metadata.generation, previous_conditions, now)),
        supported_features: Some(
            SUPPORTED_FEATURES
                .iter()
                .map(|name| GatewayClassStatusSupportedFeatures { name: (*name).into() })
                .collect(),
        ),
    }
}

/// Gateway conditions, then one entry per listener of the report, in the Gateway's order.
pub(crate) fn gateway(
    ours: &status::GatewayStatus,
    gateway: &Gateway,
    previous: Option<&GatewayStatus>,
    now: &Time,
) -> GatewayStatus {
    let generation = gateway.metadata.generation;
    let previous_conditions = previous.and_then(|p| p.conditions.as_deref()).unwrap_or_default();
    let previous_listener = |name: &str| {
        previous
            .and_then(|p| p.listeners.as_deref())
            .and_then(|listeners| listeners.iter().find(|l| l.name == name))
            .map(|l| l.conditions.as_slice())
            .unwrap_or_default()
    };
    let listeners = gateway
        .spec
        .listeners
        .iter()
        .filter_map(|listener| {
            let status = ours.listeners.get(&listener.name)?;
            Some(GatewayStatusListeners {
                name: listener.name.clone(),
                attached_routes: i32::try_from(status.attached_routes).unwrap_or(i32::MAX),
                conditions: conditions(&status.conditions, generation, previous_listener(&listener.name), now),
                supported_kinds: Some(match &status.supported_kinds {
                    Some(kinds) => kinds
                        .iter()
                        .map(|kind| GatewayStatusListenersSupportedKinds {
                            group: Some(GROUP.into()),
                            kind: kind.clone(),
                        })
                        .collect(),
                    None => supported_kinds(&listener.protocol),
                }),
            })
        })
        .collect();
    // The address Envoy binds for this Gateway, when it is a specific one.
    let addresses = (!ours.addresses.is_empty()).then(|| {
        ours.addresses
            .iter()
            .map(|ip| GatewayStatusAddresses {
                r#type: Some("IPAddress".into()),
                value: ip.clone(),
            })
            .collect()
    });
    GatewayStatus {
        addresses,
        attached_listener_sets: ours
            .attached_listener_sets
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        conditions: Some(conditions(&ours.conditions, generation, previous_conditions, now)),
        listeners: Some(listeners),
    }
}

/// A ListenerSet's status: its conditions, then one entry per listener of the report, in
/// the set's order.
pub(crate) fn listener_set(
    ours: &status::ListenerSetStatus,
    set: &ListenerSet,
    previous: Option<&ListenerSetStatus>,
    now: &Time,
) -> ListenerSetStatus {
    let generation = set.metadata.generation;
    let previous_conditions = previous.and_then(|p| p.conditions.as_deref()).unwrap_or_default();
    let previous_listener = |name: &str| {
        previous
            .and_then(|p| p.listeners.as_deref())
            .and_then(|listeners| listeners.iter().find(|l| l.name == name))
            .map(|l| l.conditions.as_slice())
            .unwrap_or_default()
    };
    let listeners = set
        .spec
        .listeners
        .iter()
        .filter_map(|listener| {
            let status = ours.listeners.get(&listener.name)?;
            let kinds = status.supported_kinds.clone().unwrap_or_else(|| {
                supported_kinds(&listener.protocol)
                    .into_iter()
                    .map(|k| k.kind)
                    .collect()
            });
            Some(ListenerSetStatusListeners {
                name: listener.name.clone(),
                attached_routes: i32::try_from(status.attached_routes).unwrap_or(i32::MAX),
                conditions: conditions(&status.conditions, generation, previous_listener(&listener.name), now),
                supported_kinds: Some(
                    kinds
                        .into_iter()
                        .map(|kind| ListenerSetStatusListenersSupportedKinds {
                            group: Some(GROUP.into()),
                            kind,
                        })
                        .collect(),
                ),
            })
        })
        .collect();
    ListenerSetStatus {
        conditions: Some(conditions(&ours.conditions, generation, previous_conditions, now)),
        listeners: Some(listeners),
    }
}

/// Route kinds a listener of `protocol` accepts (what the translation serves).
fn supported_kinds(protocol: &str) -> Vec<GatewayStatusListenersSupportedKinds> {
    match protocol {
        "HTTP" | "HTTPS" => vec![GatewayStatusListenersSupportedKinds {
            group: Some(GROUP.into()),
            kind: "HTTPRoute".into(),
        }],
        _ => Vec::new(),
    }
}

/// The route's parent statuses: ours (one per parentRef the report covers, the parentRef as
/// the route wrote it), then the other controllers' entries unchanged (`parents` is one
/// atomic list: applying it without them would drop them).
pub(crate) fn http_route(
    ours: &[RouteParentStatus],
    route: &HttpRoute,
    controller_name: &str,
    previous: Option<&HttpRouteStatus>,
    now: &Time,
) -> HttpRouteStatus {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let mut unused: Vec<&RouteParentStatus> = ours.iter().collect();
    let mut parents = Vec::new();
    for parent in route.spec.parent_refs.iter().flatten() {
        let parent_ns = parent.namespace.as_deref().unwrap_or(namespace);
        let gateway = if parent.kind.as_deref() == Some("ListenerSet") {
            format!("{parent_ns}/ls:{}", parent.name)
        } else {
            format!("{parent_ns}/{}", parent.name)
        };
        let key = match &parent.section_name {
            Some(section) => format!("{gateway}/{section}"),
            None => gateway,
        };
        let Some(position) = unused.iter().position(|s| s.parent_ref == key) else {
            continue;
        };
        let status = unused.remove(position);
        // Group and kind spelled out even where the route left them to their defaults: a
        // reader (and the conformance suite) compares parentRefs field by field.
        let parent_ref = HttpRouteStatusParentsParentRef {
            group: Some(parent.group.clone().unwrap_or_else(|| GROUP.into())),
            kind: Some(parent.kind.clone().unwrap_or_else(|| "Gateway".into())),
            name: parent.name.clone(),
            namespace: parent.namespace.clone(),
            port: parent.port,
            section_name: parent.section_name.clone(),
        };
        let previous_conditions = previous
            .into_iter()
            .flat_map(|p| &p.parents)
            .find(|p| p.controller_name == controller_name && p.parent_ref == parent_ref)
            .map(|p| p.conditions.as_slice())
            .unwrap_or_default();
        parents.push(HttpRouteStatusParents {
            conditions: conditions(&status.conditions, route.metadata.generation, previous_conditions, now),
            controller_name: controller_name.into(),
            parent_ref,
        });
    }
    let others = previous
        .into_iter()
        .flat_map(|p| &p.parents)
        .filter(|p| p.controller_name != controller_name)
        .cloned();
    HttpRouteStatus {
        parents: parents.into_iter().chain(others).collect(),
    }
}

/// A RouteOption's status: one ancestor entry of ours per Gateway the report names (the
/// policy's ancestors, as GEP-713 policies report them), then the other controllers'
/// entries unchanged (`ancestors` is one atomic list).
pub(crate) fn route_option(
    ours: Option<&BTreeMap<String, Vec<status::Condition>>>,
    option: &RouteOption,
    controller_name: &str,
    previous: Option<&PolicyStatus>,
    now: &Time,
) -> PolicyStatus {
    policy(ours, option.metadata.generation, controller_name, previous, now)
}

/// A BackendTLSPolicy's status: as a RouteOption's, one ancestor entry of ours per Gateway.
pub(crate) fn backend_tls_policy(
    ours: Option<&BTreeMap<String, Vec<status::Condition>>>,
    object: &gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy,
    controller_name: &str,
    previous: Option<&PolicyStatus>,
    now: &Time,
) -> PolicyStatus {
    policy(ours, object.metadata.generation, controller_name, previous, now)
}

/// A GEP-713 policy's status at `generation`: our ancestor entries, then the other
/// controllers' unchanged.
fn policy(
    ours: Option<&BTreeMap<String, Vec<status::Condition>>>,
    generation: Option<i64>,
    controller_name: &str,
    previous: Option<&PolicyStatus>,
    now: &Time,
) -> PolicyStatus {
    let mut ancestors = Vec::new();
    for (gateway, ours) in ours.into_iter().flatten() {
        let (namespace, name) = gateway.split_once('/').unwrap_or(("default", gateway.as_str()));
        let ancestor_ref = AncestorRef {
            group: Some(GROUP.into()),
            kind: Some("Gateway".into()),
            namespace: Some(namespace.into()),
            name: name.into(),
            section_name: None,
        };
        let previous_conditions = previous
            .into_iter()
            .flat_map(|p| &p.ancestors)
            .find(|a| a.controller_name == controller_name && a.ancestor_ref == ancestor_ref)
            .map(|a| a.conditions.as_slice())
            .unwrap_or_default();
        ancestors.push(PolicyAncestorStatus {
            conditions: conditions(ours, generation, previous_conditions, now),
            controller_name: controller_name.into(),
            ancestor_ref,
        });
    }
    let others = previous
        .into_iter()
        .flat_map(|p| &p.ancestors)
        .filter(|a| a.controller_name != controller_name)
        .cloned();
    PolicyStatus {
        ancestors: ancestors.into_iter().chain(others).collect(),
    }
}

/// Whether two policy statuses agree on our entries.
pub(crate) fn same_policy(a: &PolicyStatus, b: &PolicyStatus, controller_name: &str) -> bool {
    let ours = |s: &'_ PolicyStatus| {
        s.ancestors
            .iter()
            .filter(|a| a.controller_name == controller_name)
            .cloned()
            .collect::<Vec<_>>()
    };
    ours(a) == ours(b)
}

/// Whether two GatewayClass statuses agree on what we write.
pub(crate) fn same_gateway_class(a: &GatewayClassStatus, b: &GatewayClassStatus) -> bool {
    a.conditions == b.conditions && a.supported_features == b.supported_features
}

/// Whether two Gateway statuses agree on what we write (not addresses).
pub(crate) fn same_gateway(a: &GatewayStatus, b: &GatewayStatus) -> bool {
    a.conditions == b.conditions && a.listeners == b.listeners
}

/// Whether two route statuses agree on our entries.
pub(crate) fn same_route(a: &HttpRouteStatus, b: &HttpRouteStatus, controller_name: &str) -> bool {
    ours(a, controller_name).eq(ours(b, controller_name))
}

/// The entries of `status` that `controller_name` owns.
pub(crate) fn ours<'a>(
    status: &'a HttpRouteStatus,
    controller_name: &'a str,
) -> impl Iterator<Item = &'a HttpRouteStatusParents> {
    status
        .parents
        .iter()
        .filter(move |p| p.controller_name == controller_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_api::apis::experimental::httproutes::{HttpRouteParentRefs, HttpRouteSpec};
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};

    const CONTROLLER: &str = "kgateway.dev/kgateway";

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid time"))
    }

    fn route(generation: i64) -> HttpRoute {
        HttpRoute {
            metadata: ObjectMeta {
                name: Some("r".into()),
                namespace: Some("default".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: HttpRouteSpec {
                parent_refs: Some(vec![HttpRouteParentRefs {
                    name: "gw".into(),
                    section_name: Some("http".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            status: None,
        }
    }

    fn report(resolved: bool) -> Vec<RouteParentStatus> {
        let condition = |type_: &str, ok: bool| status::Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: type_.into(),
            message: String::new(),
        };
        vec![RouteParentStatus {
            parent_ref: "default/gw/http".into(),
            conditions: vec![condition("Accepted", true), condition("ResolvedRefs", resolved)],
        }]
    }

    #[test]
    fn route_parents_carry_the_parent_ref_as_written_and_the_generation() {
        let status = http_route(&report(true), &route(4), CONTROLLER, None, &at(100));
        assert_eq!(status.parents.len(), 1);
        let parent = &status.parents[0];
        assert_eq!(parent.controller_name, CONTROLLER);
        assert_eq!(parent.parent_ref.name, "gw");
        assert_eq!(parent.parent_ref.section_name.as_deref(), Some("http"));
        assert_eq!(parent.parent_ref.namespace, None, "as the route wrote it");
        assert!(parent.conditions.iter().all(|c| c.observed_generation == Some(4)));
    }

    #[test]
    fn unchanged_status_compares_equal_and_keeps_transition_times() {
        let first = http_route(&report(true), &route(1), CONTROLLER, None, &at(100));
        let again = http_route(&report(true), &route(1), CONTROLLER, Some(&first), &at(200));
        assert_eq!(first, again, "nothing to write");
        let flipped = http_route(&report(false), &route(2), CONTROLLER, Some(&first), &at(300));
        let time = |s: &HttpRouteStatus, t: &str| {
            s.parents[0]
                .conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(time(&flipped, "Accepted"), Some(at(100)), "Accepted did not change");
        assert_eq!(time(&flipped, "ResolvedRefs"), Some(at(300)), "ResolvedRefs did");
    }

    #[test]
    fn other_controllers_entries_are_kept() {
        let mut previous = http_route(&report(true), &route(1), CONTROLLER, None, &at(100));
        let mut theirs = previous.parents[0].clone();
        theirs.controller_name = "example.com/other".into();
        previous.parents.push(theirs);
        let status = http_route(&[], &route(2), CONTROLLER, Some(&previous), &at(200));
        assert_eq!(status.parents.len(), 1);
        assert_eq!(status.parents[0].controller_name, "example.com/other");
    }
}

//! ListenerSet: listeners a Gateway takes from outside it. The translation sees one
//! Gateway with its own listeners and those of every ListenerSet it allows appended (the
//! "effective" Gateway); a set's listener is named `ls:<set ns>:<set name>:<listener>`,
//! which no Gateway listener can be (`:` is not allowed in a section name), so routes,
//! status and Envoy names keep the two apart.
use std::sync::Arc;

use gateway_api::apis::experimental::{
    gateways::{Gateway, GatewayAllowedListenersNamespacesFrom as AllowFrom, GatewayListeners},
    listenersets::ListenerSet,
};
use kgw_common::resources::Index;

use super::status::{Condition, StatusReport};

const PREFIX: &str = "ls:";

/// The name of a set's listener in the effective Gateway.
pub(super) fn listener_name(set_ns: &str, set_name: &str, listener: &str) -> String {
    format!("{PREFIX}{set_ns}:{set_name}:{listener}")
}

/// (set namespace, set name, listener name) of a set's listener; `None` for the Gateway's own.
pub(super) fn parse(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.strip_prefix(PREFIX)?.splitn(3, ':');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The key the status uses for a set as a route parent (beside Gateways' `ns/name`).
pub(super) fn parent_key(set_ns: &str, set_name: &str) -> (String, String) {
    (set_ns.to_string(), format!("{PREFIX}{set_name}"))
}

/// Whether a ListenerSet names Gateway `gw_ns/gw_name` as its parent.
fn names_gateway(set_ns: &str, set: &ListenerSet, gw_ns: &str, gw_name: &str) -> bool {
    let parent = &set.spec.parent_ref;
    parent.group.as_deref().is_none_or(|g| g == "gateway.networking.k8s.io")
        && parent.kind.as_deref().is_none_or(|k| k == "Gateway")
        && parent.name == gw_name
        && parent.namespace.as_deref().unwrap_or(set_ns) == gw_ns
}

/// Whether `gateway` (in `gw_ns`) allows listeners from namespace `set_ns`
/// (`spec.allowedListeners`; none allowed when absent).
fn allowed(gw_ns: &str, gateway: &Gateway, set_ns: &str, index: &Index) -> bool {
    let namespaces = gateway
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_ref()) {
        Some(AllowFrom::All) => true,
        Some(AllowFrom::Same) => set_ns == gw_ns,
        Some(AllowFrom::Selector) => {
            let selector = namespaces.and_then(|n| n.selector.as_ref());
            let Some(selector) = selector.and_then(|s| serde_json::to_value(s).ok()) else {
                return false;
            };
            let Ok(selector) = serde_json::from_value(selector) else {
                return false;
            };
            let labels = index.namespaces.get(set_ns).and_then(|n| n.metadata.labels.as_ref());
            super::selectors::matches(&selector, set_ns, labels)
        }
        Some(AllowFrom::None) | None => false,
    }
}

/// A set that names a Gateway of ours, and whether it is allowed.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SetVerdict {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) allowed: bool,
    pub(super) generation: Option<i64>,
    /// Listeners of the set left out for conflicting with an earlier one: (name, protocol,
    /// Conflicted reason).
    pub(super) conflicts: Vec<(String, String, &'static str)>,
}

/// Why `listener` cannot join `taken` (the listeners of higher precedence): another on its
/// port speaks another protocol, or has the same hostname.
fn conflict(listener: &GatewayListeners, taken: &[GatewayListeners]) -> Option<&'static str> {
    let hostname = |l: &GatewayListeners| l.hostname.clone().filter(|h| !h.is_empty());
    let same_port = || taken.iter().filter(|t| t.port == listener.port);
    if same_port().any(|t| t.protocol != listener.protocol) {
        return Some("ProtocolConflict");
    }
    same_port()
        .any(|t| hostname(t) == hostname(listener))
        .then_some("HostnameConflict")
}

/// The Gateway with the listeners of the sets it allows appended, and every set naming it.
pub(super) fn effective(
    gw_ns: &str,
    gw_name: &str,
    gateway: &Arc<Gateway>,
    index: &Index,
) -> (Arc<Gateway>, Vec<SetVerdict>) {
    let mut verdicts = Vec::new();
    let mut extra: Vec<GatewayListeners> = Vec::new();
    // Precedence (GEP-1713): the Gateway's own listeners, then the sets oldest first, then
    // by namespace/name.
    let mut sets: Vec<(&(String, String), &Arc<ListenerSet>)> = index
        .listener_sets
        .iter()
        .filter(|((set_ns, _), set)| names_gateway(set_ns, set, gw_ns, gw_name))
        .collect();
    sets.sort_by_key(|(key, set)| (set.metadata.creation_timestamp.as_ref().map(|t| t.0), *key));
    for ((set_ns, set_name), set) in sets {
        let ok = allowed(gw_ns, gateway, set_ns, index);
        let mut verdict = SetVerdict {
            namespace: set_ns.clone(),
            name: set_name.clone(),
            allowed: ok,
            generation: set.metadata.generation,
            conflicts: Vec::new(),
        };
        if ok {
            for listener in &set.spec.listeners {
                // The two listener types have the same fields; JSON carries one into the other.
                let converted = serde_json::to_value(listener)
                    .ok()
                    .and_then(|v| serde_json::from_value::<GatewayListeners>(v).ok());
                let Some(mut converted) = converted else { continue };
                let taken: Vec<GatewayListeners> = gateway.spec.listeners.iter().chain(&extra).cloned().collect();
                if let Some(reason) = conflict(&converted, &taken) {
                    verdict
                        .conflicts
                        .push((listener.name.clone(), listener.protocol.clone(), reason));
                    continue;
                }
                converted.name = listener_name(set_ns, set_name, &listener.name);
                extra.push(converted);
            }
        }
        verdicts.push(verdict);
    }
    if extra.is_empty() {
        return (gateway.clone(), verdicts);
    }
    let mut effective = Gateway::clone(gateway);
    effective.spec.listeners.extend(extra);
    (Arc::new(effective), verdicts)
}

/// Moves the set listeners' status from the Gateway's report to each set's, and reports
/// the sets: Accepted/Programmed when allowed (NotAllowed otherwise), and the Gateway's
/// count of attached sets.
pub(super) fn report(status: &mut StatusReport, gw_key: &str, verdicts: &[SetVerdict]) {
    let Some(gateway) = status.gateways.get_mut(gw_key) else {
        return;
    };
    let set_listeners: Vec<String> = gateway
        .listeners
        .keys()
        .filter(|name| parse(name).is_some())
        .cloned()
        .collect();
    let mut moved = Vec::new();
    for name in set_listeners {
        if let Some(listener) = gateway.listeners.remove(&name) {
            moved.push((name, listener));
        }
    }
    gateway.attached_listener_sets = Some(verdicts.iter().filter(|v| v.allowed).count());
    status.listener_sets.retain(|_, set| set.parent != gw_key);
    for verdict in verdicts {
        let key = format!("{}/{}", verdict.namespace, verdict.name);
        let entry = status.listener_sets.entry(key).or_default();
        entry.generation = verdict.generation;
        entry.parent = gw_key.to_string();
        entry.listeners.clear();
        if verdict.allowed {
            entry.conditions = vec![
                Condition::new("Accepted", true, "Accepted", ""),
                Condition::new("Programmed", true, "Programmed", ""),
            ];
        } else {
            entry.conditions = vec![
                Condition::new(
                    "Accepted",
                    false,
                    "NotAllowed",
                    "the parent Gateway's allowedListeners do not allow this namespace",
                ),
                Condition::new("Programmed", false, "NotAllowed", "not attached to its parent Gateway"),
            ];
        }
    }
    for (name, listener) in moved {
        let Some((set_ns, set_name, own)) = parse(&name) else {
            continue;
        };
        let key = format!("{set_ns}/{set_name}");
        if let Some(entry) = status.listener_sets.get_mut(&key) {
            entry.listeners.insert(own.to_string(), listener);
        }
    }
    for verdict in verdicts {
        let Some(entry) = status
            .listener_sets
            .get_mut(&format!("{}/{}", verdict.namespace, verdict.name))
        else {
            continue;
        };
        for (name, protocol, reason) in &verdict.conflicts {
            let accepted_reason = if *reason == "HostnameConflict" {
                reason
            } else {
                "Conflicted"
            };
            let message = "a listener of higher precedence on the same port conflicts with it";
            entry.listeners.insert(
                name.clone(),
                super::status::ListenerStatus {
                    attached_routes: 0,
                    conditions: vec![
                        Condition::new("Accepted", false, accepted_reason, message),
                        Condition::new("Programmed", false, reason, message),
                        Condition::new("Conflicted", true, reason, message),
                    ],
                    supported_kinds: Some(match protocol.as_str() {
                        "HTTP" | "HTTPS" => vec!["HTTPRoute".to_string()],
                        _ => Vec::new(),
                    }),
                },
            );
        }
    }
    // A set none of whose listeners is valid (refused, or with refs that do not resolve)
    // is not accepted, as a Gateway would not be.
    for verdict in verdicts.iter().filter(|v| v.allowed) {
        let Some(entry) = status
            .listener_sets
            .get_mut(&format!("{}/{}", verdict.namespace, verdict.name))
        else {
            continue;
        };
        let valid = |l: &super::status::ListenerStatus| {
            !l.conditions
                .iter()
                .any(|c| matches!(c.type_.as_str(), "Accepted" | "ResolvedRefs") && c.status == "False")
        };
        if !entry.listeners.is_empty() && !entry.listeners.values().any(valid) {
            entry.conditions = vec![
                Condition::new(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    "no listener of the set is valid",
                ),
                Condition::new(
                    "Programmed",
                    false,
                    "ListenersNotValid",
                    "no listener of the set is valid",
                ),
            ];
        }
    }
    // The Gateway counts the sets it accepted (allowed, with a valid listener).
    let accepted = verdicts
        .iter()
        .filter(|v| {
            status
                .listener_sets
                .get(&format!("{}/{}", v.namespace, v.name))
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Accepted" && c.status == "True"))
        })
        .count();
    if let Some(gateway) = status.gateways.get_mut(gw_key) {
        gateway.attached_listener_sets = Some(accepted);
    }
}

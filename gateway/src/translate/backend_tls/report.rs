//! BackendTLSPolicy status: per Gateway of ours that a route using a targeted Service is
//! attached to (the policy's ancestors, as GEP-713 policies report them), Accepted (or
//! Conflicted, or NoValidCACertificate) and ResolvedRefs (its CA references).
use std::collections::{BTreeMap, BTreeSet};

use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;
use kgw_common::resources::Index;

use super::{Nn, precedence, validate, winner};
use crate::translate::status::{Condition, StatusReport};

/// The core Services (namespace, name) `route`'s backendRefs name.
pub(in crate::translate) fn services_of(route: &HttpRoute) -> BTreeSet<Nn> {
    let route_ns = route.metadata.namespace.as_deref().unwrap_or("default");
    route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| rule.backend_refs.iter().flatten())
        .filter(|b| b.group.as_deref().unwrap_or("").is_empty() && b.kind.as_deref().unwrap_or("Service") == "Service")
        .map(|b| {
            (
                b.namespace.clone().unwrap_or_else(|| route_ns.to_string()),
                b.name.clone(),
            )
        })
        .collect()
}

/// Service → the routes (`namespace/name`) naming it, for every route.
pub(in crate::translate) fn service_users(routes: &[&HttpRoute]) -> BTreeMap<Nn, BTreeSet<String>> {
    let mut users: BTreeMap<Nn, BTreeSet<String>> = BTreeMap::new();
    for route in routes {
        let key = format!(
            "{}/{}",
            route.metadata.namespace.as_deref().unwrap_or("default"),
            route.metadata.name.as_deref().unwrap_or_default()
        );
        for service in services_of(route) {
            users.entry(service).or_default().insert(key.clone());
        }
    }
    users
}

/// Every policy's status, from scratch; `users(service)` gives the routes naming a
/// Service (their attachments are known to `status` already).
pub(in crate::translate) fn report(index: &Index, users: impl Fn(&Nn) -> BTreeSet<String>, status: &mut StatusReport) {
    status.backend_tls_policies.clear();
    for (key, policy) in &index.backend_tls_policies {
        let mut gateways = BTreeSet::new();
        for service in super::targets(&key.0, policy) {
            for route in users(&service) {
                gateways.extend(
                    status
                        .attached_gateways(&route)
                        .into_iter()
                        .filter(|g| status.gateways.contains_key(g)),
                );
            }
        }
        if gateways.is_empty() {
            continue; // no Gateway of ours uses it: nothing of ours to report
        }
        let conditions = conditions(index, key, policy);
        let entry = status
            .backend_tls_policies
            .entry(format!("{}/{}", key.0, key.1))
            .or_default();
        for gateway in gateways {
            entry.insert(gateway, conditions.clone());
        }
    }
}

/// Whether another policy wins one of the targets `policy` names.
fn conflicted(index: &Index, key: &Nn, policy: &BackendTlsPolicy) -> Option<Nn> {
    policy
        .spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .find_map(|t| {
            let (winner_key, winner_policy) = winner(index, &key.0, &t.name, t.section_name.as_deref())?;
            (precedence(winner_key, winner_policy) < precedence(key, policy)).then(|| winner_key.clone())
        })
}

fn conditions(index: &Index, key: &Nn, policy: &BackendTlsPolicy) -> Vec<Condition> {
    let validation = validate(index, &key.0, policy);
    let accepted = if let Some(other) = conflicted(index, key, policy) {
        Condition::new(
            "Accepted",
            false,
            "Conflicted",
            format!(
                "BackendTLSPolicy {}/{} targets the same Service (port) and takes precedence",
                other.0, other.1
            ),
        )
    } else if !validation.usable() {
        Condition::new(
            "Accepted",
            false,
            "NoValidCACertificate",
            "no CA certificate reference resolves",
        )
    } else {
        Condition::new("Accepted", true, "Accepted", "")
    };
    let resolved = match validation.problem {
        Some((reason, message)) => Condition::new("ResolvedRefs", false, reason, message),
        None => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
    };
    vec![accepted, resolved]
}

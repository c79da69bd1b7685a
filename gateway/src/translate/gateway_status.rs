//! The parts of a Gateway's status that depend on the Gateway as a whole: whether any of
//! its listeners is valid, its `infrastructure.parametersRef`, the route kinds each
//! listener allows and the client validation (`spec.tls.frontend`) of its HTTPS listeners.
//! Applied after the listeners are reported.
use gateway_api::apis::experimental::gateways::{Gateway, GatewayListeners};
use kgw_common::resources::Index;

use super::frontend::{self, Frontend};
use super::status::{Condition, GatewayRef, ListenerStatus, StatusReport};

/// Route kinds a listener of `protocol` can carry here.
fn kinds_of_protocol(protocol: &str) -> &'static [&'static str] {
    match protocol {
        "HTTP" | "HTTPS" => &["HTTPRoute"],
        _ => &[],
    }
}

/// (kinds we support among the ones the listener allows, whether it names one we do not).
fn route_kinds(listener: &GatewayListeners) -> (Vec<String>, bool) {
    let supported = kinds_of_protocol(&listener.protocol);
    match listener.allowed_routes.as_ref().and_then(|a| a.kinds.as_deref()) {
        None | Some([]) => (supported.iter().map(|k| k.to_string()).collect(), false),
        Some(kinds) => {
            let ok = |k: &&gateway_api::apis::experimental::gateways::GatewayListenersAllowedRoutesKinds| {
                k.group.as_deref().is_none_or(|g| g == "gateway.networking.k8s.io")
                    && supported.contains(&k.kind.as_str())
            };
            let valid: Vec<String> = kinds.iter().filter(ok).map(|k| k.kind.clone()).collect();
            let invalid = kinds.iter().any(|k| !ok(&k));
            (valid, invalid)
        }
    }
}

/// Refines the status `report_gateway` wrote for `gateway`.
pub(super) fn refine(status: &mut StatusReport, index: &Index, gateway_ref: &GatewayRef, gateway: &Gateway) {
    let key = format!("{}/{}", gateway_ref.namespace, gateway_ref.name);
    let Some(gw) = status.gateways.get_mut(&key) else {
        return;
    };
    if frontend::insecure_fallback(gateway) {
        set(
            &mut gw.conditions,
            Condition::new(
                "InsecureFrontendValidationMode",
                true,
                "ConfigurationChanged",
                "an HTTPS listener accepts clients without a valid certificate (AllowInsecureFallback)",
            ),
        );
    }
    for listener in &gateway.spec.listeners {
        let Some(ls) = gw.listeners.get_mut(&listener.name) else {
            continue;
        };
        report_frontend(ls, frontend::resolve(index, &gateway_ref.namespace, gateway, listener));
        let (kinds, invalid) = route_kinds(listener);
        if invalid {
            set(
                &mut ls.conditions,
                Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    "allowedRoutes.kinds names a kind this listener cannot carry",
                ),
            );
        }
        ls.supported_kinds = Some(kinds);
    }
    let valid = |c: &Vec<Condition>| {
        c.iter()
            .find(|c| c.type_ == "Accepted")
            .is_none_or(|c| c.status == "True")
    };
    let listeners_valid = gw.listeners.values().filter(|l| valid(&l.conditions)).count();
    let accepted = if let Some(parameters) = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        Condition::new(
            "Accepted",
            false,
            "InvalidParameters",
            format!(
                "infrastructure.parametersRef {}/{} {}: no parameters kind is supported",
                parameters.group, parameters.kind, parameters.name
            ),
        )
    } else if !gateway.spec.listeners.is_empty() && listeners_valid == 0 {
        Condition::new("Accepted", false, "ListenersNotValid", "no listener is valid")
    } else if listeners_valid < gw.listeners.len() {
        Condition::new("Accepted", true, "ListenersNotValid", "some listeners are not valid")
    } else {
        return;
    };
    let rejected = accepted.status == "False";
    set(&mut gw.conditions, accepted);
    if rejected {
        set(
            &mut gw.conditions,
            Condition::new("Programmed", false, "Invalid", "the Gateway is not accepted"),
        );
    }
}

/// A listener's client validation problems: any CA reference that does not resolve makes
/// ResolvedRefs False (unless its certificates already did); none resolving also rejects
/// the listener, which is then not served (see `is_served`).
fn report_frontend(ls: &mut ListenerStatus, frontend: Frontend) {
    let (problem, usable) = match frontend {
        Frontend::Off | Frontend::On { problem: None, .. } => return,
        Frontend::On {
            problem: Some(problem), ..
        } => (problem, true),
        Frontend::NoValidCa(problem) => (problem, false),
    };
    let resolved = ls
        .conditions
        .iter()
        .any(|c| c.type_ == "ResolvedRefs" && c.status == "True");
    let (reason, message) = problem;
    if resolved {
        set(
            &mut ls.conditions,
            Condition::new("ResolvedRefs", false, reason, message),
        );
    }
    if !usable {
        set(
            &mut ls.conditions,
            Condition::new(
                "Accepted",
                false,
                "NoValidCACertificate",
                "no caCertificateRef of the listener's client validation resolves",
            ),
        );
        set(
            &mut ls.conditions,
            Condition::new(
                "Programmed",
                false,
                "Invalid",
                "the listener's client validation has no CA",
            ),
        );
    }
}

/// Replaces the condition of the same type (or adds it).
pub(super) fn set(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

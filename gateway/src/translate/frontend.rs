//! Client certificate validation of HTTPS listeners (a Gateway's `spec.tls.frontend`): the
//! CA bundle a listener's clients must present a certificate from, resolved here so that
//! the controller needs no ConfigMaps (CA certificates are public: they travel in the
//! Proxy, see `ClientValidation` in proxy.proto).
use gateway_api::apis::experimental::gateways::{
    Gateway, GatewayListeners, GatewayTlsFrontendDefaultValidationMode, GatewayTlsFrontendPerPortTlsValidationMode,
};
use kgw_common::resources::Index;
use kgw_proto::v1 as pb;

use super::{grants, tls::Problem};

/// A CA reference, whether from `default` or from a `perPort` entry (distinct generated types).
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// The validation that applies to one port.
struct Effective<'a> {
    refs: Vec<CaRef<'a>>,
    insecure_fallback: bool,
}

/// What the frontend validation of one HTTPS listener comes to.
#[derive(Debug, PartialEq)]
pub(crate) enum Frontend {
    /// No validation applies: no client certificate is asked for.
    Off,
    /// Clients are validated against the CAs that resolved; `problem`: a reference that did
    /// not (the listener is still served with the others).
    On {
        validation: pb::ClientValidation,
        problem: Option<Problem>,
    },
    /// Validation applies but no CA resolved: the listener is not served (serving it without
    /// validation would let in clients it must refuse).
    NoValidCa(Problem),
}

/// The validation for listeners on `port`: the perPort entry of that port replaces the
/// default (even when it has no validation of its own).
fn effective(gateway: &Gateway, port: i32) -> Option<Effective<'_>> {
    let frontend = gateway.spec.tls.as_ref()?.frontend.as_ref()?;
    if let Some(entry) = frontend.per_port.iter().flatten().find(|p| p.port == port) {
        let validation = entry.tls.validation.as_ref()?;
        return Some(Effective {
            refs: validation
                .ca_certificate_refs
                .iter()
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect(),
            insecure_fallback: matches!(
                validation.mode,
                Some(GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback)
            ),
        });
    }
    let validation = frontend.default.validation.as_ref()?;
    Some(Effective {
        refs: validation
            .ca_certificate_refs
            .iter()
            .map(|r| CaRef {
                group: &r.group,
                kind: &r.kind,
                name: &r.name,
                namespace: r.namespace.as_deref(),
            })
            .collect(),
        insecure_fallback: matches!(
            validation.mode,
            Some(GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback)
        ),
    })
}

/// The frontend validation of `listener` of Gateway `gateway` in `gw_ns`. Only HTTPS
/// listeners validate clients (a perPort entry for an HTTP port changes nothing).
pub(crate) fn resolve(index: &Index, gw_ns: &str, gateway: &Gateway, listener: &GatewayListeners) -> Frontend {
    if listener.protocol != "HTTPS" {
        return Frontend::Off;
    }
    let Some(effective) = effective(gateway, listener.port) else {
        return Frontend::Off;
    };
    let mut bundle = String::new();
    let mut problem = None;
    for ca in &effective.refs {
        match ca_pem(index, gw_ns, ca) {
            Ok(pem) => {
                bundle.push_str(pem.trim_end());
                bundle.push('\n');
            }
            Err(why) => {
                problem.get_or_insert(why);
            }
        }
    }
    if bundle.is_empty() {
        return Frontend::NoValidCa(
            problem.unwrap_or_else(|| ("InvalidCACertificateRef", "no caCertificateRefs".to_string())),
        );
    }
    Frontend::On {
        validation: pb::ClientValidation {
            trusted_ca_pem: bundle,
            allow_insecure_fallback: effective.insecure_fallback,
        },
        problem,
    }
}

/// The client validation Envoy applies to `listener` (see [`resolve`]).
pub(crate) fn validation(
    index: &Index,
    gw_ns: &str,
    gateway: &Gateway,
    listener: &GatewayListeners,
) -> Option<pb::ClientValidation> {
    match resolve(index, gw_ns, gateway, listener) {
        Frontend::On { validation, .. } => Some(validation),
        Frontend::Off | Frontend::NoValidCa(_) => None,
    }
}

/// Whether any HTTPS listener of `gateway` falls back to accepting unverified clients.
pub(crate) fn insecure_fallback(gateway: &Gateway) -> bool {
    gateway
        .spec
        .listeners
        .iter()
        .filter(|l| l.protocol == "HTTPS")
        .any(|l| effective(gateway, l.port).is_some_and(|e| e.insecure_fallback))
}

/// The `ca.crt` of a core ConfigMap or Secret that Gateway in `gw_ns` may refer to.
fn ca_pem(index: &Index, gw_ns: &str, ca: &CaRef<'_>) -> Result<String, Problem> {
    let namespace = ca.namespace.unwrap_or(gw_ns);
    let name = ca.name;
    if !ca.group.is_empty() || !matches!(ca.kind, "ConfigMap" | "Secret") {
        return Err((
            "InvalidCACertificateKind",
            format!(
                "caCertificateRef {}/{} {name}: only core ConfigMaps and Secrets are supported",
                ca.group, ca.kind
            ),
        ));
    }
    let from = grants::From {
        group: "gateway.networking.k8s.io",
        kind: "Gateway",
        namespace: gw_ns,
    };
    let to = grants::To {
        group: "",
        kind: ca.kind,
        namespace,
        name,
    };
    if !grants::permitted(index, &from, &to) {
        return Err((
            "RefNotPermitted",
            format!(
                "caCertificateRef to {} {namespace}/{name} is not allowed by any ReferenceGrant",
                ca.kind
            ),
        ));
    }
    let key = (namespace.to_string(), name.to_string());
    let found = if ca.kind == "ConfigMap" {
        index
            .config_maps
            .get(&key)
            .map(|m| m.data.as_ref().and_then(|d| d.get("ca.crt")).cloned())
    } else {
        index.secrets.get(&key).map(|s| {
            let data = s.data.as_ref().and_then(|d| d.get("ca.crt"));
            data.map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .or_else(|| s.string_data.as_ref().and_then(|d| d.get("ca.crt")).cloned())
        })
    };
    let missing = |why: String| {
        (
            "InvalidCACertificateRef",
            format!("{} {namespace}/{name}: {why}", ca.kind),
        )
    };
    let pem = found
        .ok_or_else(|| missing("not found".into()))?
        .ok_or_else(|| missing("no ca.crt".into()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") || !super::tls::pem_has_body(pem.as_bytes()) {
        return Err(missing("ca.crt holds no PEM certificate".into()));
    }
    Ok(pem)
}

/// (namespace, name) of every CA `gateway` in `gw_ns` names, whatever its kind.
fn ca_refs<'a>(gw_ns: &'a str, gateway: &'a Gateway) -> impl Iterator<Item = (&'a str, &'a str)> {
    let frontend = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref());
    let default = frontend
        .and_then(|f| f.default.validation.as_ref())
        .into_iter()
        .flat_map(|v| &v.ca_certificate_refs)
        .map(move |r| (r.namespace.as_deref().unwrap_or(gw_ns), r.name.as_str()));
    let per_port = frontend
        .and_then(|f| f.per_port.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.tls.validation.as_ref())
        .flat_map(|v| &v.ca_certificate_refs)
        .map(move |r| (r.namespace.as_deref().unwrap_or(gw_ns), r.name.as_str()));
    default.chain(per_port)
}

/// Whether `gateway` in `gw_ns` names ConfigMap or Secret `object` as a CA: its listeners
/// depend on that object's content.
pub(crate) fn references(gw_ns: &str, gateway: &Gateway, object: &(String, String)) -> bool {
    ca_refs(gw_ns, gateway).any(|(namespace, name)| namespace == object.0 && name == object.1)
}

/// Whether `gateway` in `gw_ns` names a CA in another namespace (a ReferenceGrant decides).
pub(crate) fn refers_across_namespaces(gw_ns: &str, gateway: &Gateway) -> bool {
    ca_refs(gw_ns, gateway).any(|(namespace, _)| namespace != gw_ns)
}

#[cfg(test)]
mod tests;

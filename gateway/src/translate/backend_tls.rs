//! BackendTLSPolicy → the upstream TLS of the destinations whose Service port it targets.
//! Which policy applies to a Service port: one naming the port (`sectionName` = the port's
//! name) wins over one naming the whole Service; among policies naming the same thing, the
//! oldest, then the first by namespace/name (the others are Conflicted). CA data comes from
//! ConfigMaps (`ca.crt`; not secret, so it travels in the Proxy). A policy whose CA refs all
//! fail to resolve makes its destinations fail (the route answers 500), never plain text.
use std::collections::BTreeSet;

use gateway_api::apis::standard::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidationCaCertificateRefs,
    BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use kgw_common::resources::Index;
use kgw_proto::v1 as pb;
use rustls_pki_types::{CertificateDer, pem::PemObject as _};

pub(super) mod client_cert;
pub(super) mod report;

/// (namespace, name).
type Nn = (String, String);

/// What a backendRef to a Service port gets from the BackendTLSPolicies.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum DestinationTls {
    /// No policy targets the port: plain text.
    None,
    /// The winning policy's TLS.
    Tls(pb::UpstreamTls),
    /// The winning policy has no usable CA: the destination must fail.
    Invalid,
}

/// A policy's CA references checked: the CAs that resolve, and the first problem.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Validation {
    pub(super) ca_certificates: Vec<String>,
    pub(super) system_ca: bool,
    /// (ResolvedRefs reason, message) of the first ref that does not resolve.
    pub(super) problem: Option<(&'static str, String)>,
}

impl Validation {
    /// Whether the policy can verify a backend at all.
    pub(super) fn usable(&self) -> bool {
        self.system_ca || !self.ca_certificates.is_empty()
    }
}

/// The sections (`None`: the whole Service) of core Service `service` the policy's
/// targetRefs name.
fn names_service<'a>(policy: &'a BackendTlsPolicy, service: &'a str) -> impl Iterator<Item = Option<&'a str>> {
    policy
        .spec
        .target_refs
        .iter()
        .filter(move |t| t.group.is_empty() && t.kind == "Service" && t.name == service)
        .map(|t| t.section_name.as_deref())
}

/// Conflict order: oldest first, then namespace/name. (Kubernetes timestamps are whole
/// seconds in one RFC 3339 form, so their text sorts as their time.)
pub(super) fn precedence(key: &Nn, policy: &BackendTlsPolicy) -> (Option<String>, Nn) {
    (
        policy.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        key.clone(),
    )
}

/// The policy (key) that wins Service `ns/service`'s `section` (`None`: the whole Service),
/// among those naming exactly that.
pub(super) fn winner<'a>(
    index: &'a Index,
    ns: &str,
    service: &str,
    section: Option<&str>,
) -> Option<(&'a Nn, &'a BackendTlsPolicy)> {
    let start = (ns.to_string(), String::new());
    index
        .backend_tls_policies
        .range(start..)
        .take_while(|((policy_ns, _), _)| policy_ns == ns)
        .filter(|(_, p)| names_service(p, service).any(|s| s == section))
        .map(|(k, p)| (k, p.as_ref()))
        .min_by_key(|(k, p)| precedence(k, p))
}

/// The policy that applies to port `port` of Service `ns/service`: one naming the port,
/// else one naming the whole Service.
pub(super) fn applying<'a>(
    index: &'a Index,
    ns: &str,
    service: &str,
    port: i32,
) -> Option<(&'a Nn, &'a BackendTlsPolicy)> {
    let port_name = index
        .services
        .get(&(ns.to_string(), service.to_string()))
        .and_then(|s| s.spec.as_ref())
        .and_then(|spec| spec.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == port))
        .and_then(|p| p.name.clone());
    port_name
        .and_then(|name| winner(index, ns, service, Some(&name)))
        .or_else(|| winner(index, ns, service, None))
}

/// The TLS of a destination to port `port` of Service `ns/service`.
pub(super) fn destination_tls(index: &Index, ns: &str, service: &str, port: i32) -> DestinationTls {
    let Some((key, policy)) = applying(index, ns, service, port) else {
        return DestinationTls::None;
    };
    let validation = validate(index, &key.0, policy);
    if !validation.usable() {
        return DestinationTls::Invalid;
    }
    let v = &policy.spec.validation;
    let subject_alt_names = v
        .subject_alt_names
        .iter()
        .flatten()
        .filter_map(|san| {
            let name = match san.r#type {
                SanType::Hostname => pb::subject_alt_name::Name::Hostname(san.hostname.clone()?),
                SanType::Uri => pb::subject_alt_name::Name::Uri(san.uri.clone()?),
            };
            Some(pb::SubjectAltName { name: Some(name) })
        })
        .collect();
    DestinationTls::Tls(pb::UpstreamTls {
        sni: v.hostname.clone(),
        ca_certificates: validation.ca_certificates,
        system_ca: validation.system_ca,
        subject_alt_names,
        policy: Some(pb::ResourceRef {
            kind: "BackendTLSPolicy".into(),
            namespace: key.0.clone(),
            name: key.1.clone(),
        }),
    })
}

/// The destination of a backendRef `target` of a route in `route_ns` that resolved to
/// `upstream`, with its TLS. A resolved Service port whose policy has no usable CA gets the
/// "Invalid" ref (the controller answers 500): it must fail, not go in plain text.
pub(super) fn apply(
    target: &super::routes::BackendTarget<'_>,
    route_ns: &str,
    upstream: pb::ResourceRef,
    index: &Index,
) -> (pb::ResourceRef, Option<pb::UpstreamTls>) {
    let service = target.group.is_empty() && target.kind == "Service";
    let (true, "Upstream", Some(port)) = (service, upstream.kind.as_str(), target.port) else {
        return (upstream, None);
    };
    let ns = target.namespace.unwrap_or(route_ns);
    match destination_tls(index, ns, target.name, port) {
        DestinationTls::None => (upstream, None),
        DestinationTls::Tls(tls) => (upstream, Some(tls)),
        DestinationTls::Invalid => (
            pb::ResourceRef {
                kind: "Invalid".into(),
                ..upstream
            },
            None,
        ),
    }
}

/// Checks the CA references of `policy` (in `ns`) against the ConfigMaps the source holds.
pub(super) fn validate(index: &Index, ns: &str, policy: &BackendTlsPolicy) -> Validation {
    let v = &policy.spec.validation;
    let mut out = Validation {
        system_ca: v.well_known_ca_certificates.as_deref() == Some("System"),
        ..Validation::default()
    };
    if let Some(other) = v.well_known_ca_certificates.as_deref().filter(|w| *w != "System") {
        out.problem = Some((
            "InvalidCACertificateRef",
            format!("wellKnownCACertificates {other:?} is not supported"),
        ));
    }
    for ca in v.ca_certificate_refs.iter().flatten() {
        match ca_certificate(index, ns, ca) {
            Ok(pem) => out.ca_certificates.push(pem),
            Err(problem) => {
                out.problem.get_or_insert(problem);
            }
        }
    }
    if !out.usable() && out.problem.is_none() {
        out.problem = Some(("InvalidCACertificateRef", "no CA certificate is named".into()));
    }
    out
}

/// The PEM CA bundle of one caCertificateRef, or why it cannot be used.
fn ca_certificate(
    index: &Index,
    ns: &str,
    ca: &BackendTlsPolicyValidationCaCertificateRefs,
) -> Result<String, (&'static str, String)> {
    if !ca.group.is_empty() || ca.kind != "ConfigMap" {
        return Err((
            "InvalidKind",
            format!(
                "caCertificateRef {}/{} {}: only core ConfigMaps are supported",
                ca.group, ca.kind, ca.name
            ),
        ));
    }
    let invalid = |why: &str| ("InvalidCACertificateRef", format!("ConfigMap {ns}/{}: {why}", ca.name));
    let config_map = index
        .config_maps
        .get(&(ns.to_string(), ca.name.clone()))
        .ok_or_else(|| invalid("not found"))?;
    let pem = config_map
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .ok_or_else(|| invalid("no ca.crt"))?;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("ca.crt: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid("ca.crt holds no PEM certificate"));
    }
    Ok(pem.clone())
}

/// The Services (namespace, name) a policy's targetRefs name.
pub(super) fn targets(ns: &str, policy: &BackendTlsPolicy) -> BTreeSet<Nn> {
    policy
        .spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .map(|t| (ns.to_string(), t.name.clone()))
        .collect()
}

/// Whether `policy` names ConfigMap `config_map` (in its own namespace).
pub(super) fn names_config_map(policy: &BackendTlsPolicy, config_map: &str) -> bool {
    policy
        .spec
        .validation
        .ca_certificate_refs
        .iter()
        .flatten()
        .any(|c| c.group.is_empty() && c.kind == "ConfigMap" && c.name == config_map)
}

#[cfg(test)]
mod tests;

//! The Gateway's `spec.tls.backend.clientCertificateRef`: the certificate Envoy presents to
//! the backends it reaches over TLS. The gateway checks the Secret (its content never goes
//! anywhere); the Proxy names it and the controller reads it itself.
use gateway_api::apis::experimental::gateways::{Gateway, GatewayTlsBackendClientCertificateRef};
use k8s_openapi::api::core::v1::Secret;
use kgw_common::resources::Index;
use kgw_proto::v1 as pb;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::translate::grants;
use crate::translate::status::{Condition, GatewayRef, StatusReport};

fn reference(gateway: &Gateway) -> Option<&GatewayTlsBackendClientCertificateRef> {
    gateway
        .spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()
}

/// The Secret `gateway` (in `gw_ns`) presents to TLS backends: `None` when it names none,
/// else the Secret or why it cannot be used (Gateway ResolvedRefs reason, message).
pub(in crate::translate) fn check(
    index: &Index,
    gw_ns: &str,
    gateway: &Gateway,
) -> Option<Result<pb::ResourceRef, (&'static str, String)>> {
    let cert = reference(gateway)?;
    let group = cert.group.as_deref().unwrap_or("");
    let kind = cert.kind.as_deref().unwrap_or("Secret");
    let namespace = cert.namespace.as_deref().unwrap_or(gw_ns);
    let name = &cert.name;
    let invalid = |why: String| Some(Err(("InvalidClientCertificateRef", why)));
    if !group.is_empty() || kind != "Secret" {
        return invalid(format!(
            "clientCertificateRef {group}/{kind} {name}: only core Secrets are supported"
        ));
    }
    let from = grants::From {
        group: "gateway.networking.k8s.io",
        kind: "Gateway",
        namespace: gw_ns,
    };
    let to = grants::To {
        group: "",
        kind: "Secret",
        namespace,
        name,
    };
    if !grants::permitted(index, &from, &to) {
        return Some(Err((
            "RefNotPermitted",
            format!("clientCertificateRef to Secret {namespace}/{name} is not allowed by any ReferenceGrant"),
        )));
    }
    // Without the Secrets (Kubernetes: the gateway may not read them) the controller,
    // which reads it, is the one to refuse a bad one.
    if !index.secrets_withheld {
        let Some(secret) = index.secrets.get(&(namespace.to_string(), name.clone())) else {
            return invalid(format!("Secret {namespace}/{name} not found"));
        };
        if let Err(why) = usable(secret) {
            return invalid(format!("Secret {namespace}/{name}: {why}"));
        }
    }
    Some(Ok(pb::ResourceRef {
        kind: "Secret".into(),
        namespace: namespace.to_string(),
        name: name.clone(),
    }))
}

/// A certificate chain in `tls.crt` and a private key in `tls.key`, both PEM.
fn usable(secret: &Secret) -> Result<(), String> {
    let field = |name: &str| -> Option<Vec<u8>> {
        let data = secret.data.as_ref().and_then(|d| d.get(name)).map(|b| b.0.clone());
        data.or_else(|| {
            let string_data = secret.string_data.as_ref()?;
            string_data.get(name).map(|s| s.clone().into_bytes())
        })
    };
    let chain = field("tls.crt").ok_or("no tls.crt")?;
    let key = field("tls.key").ok_or("no tls.key")?;
    let certs = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("tls.key: {e}"))?;
    Ok(())
}

/// The Gateway's ResolvedRefs condition for its client certificate (only when it names one).
pub(in crate::translate) fn report(
    status: &mut StatusReport,
    index: &Index,
    gateway_ref: &GatewayRef,
    gateway: &Gateway,
) {
    let Some(checked) = check(index, &gateway_ref.namespace, gateway) else {
        return;
    };
    let key = format!("{}/{}", gateway_ref.namespace, gateway_ref.name);
    let Some(gw) = status.gateways.get_mut(&key) else {
        return;
    };
    let condition = match checked {
        Ok(_) => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
        Err((reason, message)) => Condition::new("ResolvedRefs", false, reason, message),
    };
    match gw.conditions.iter_mut().find(|c| c.type_ == "ResolvedRefs") {
        // Another check found a problem first: it stays.
        Some(existing) if existing.status == "False" => {}
        Some(existing) => *existing = condition,
        None => gw.conditions.push(condition),
    }
}

/// The Secret the Proxy of `gateway` names for TLS backends, when it resolves.
pub(in crate::translate) fn proxy_ref(index: &Index, gw_ns: &str, gateway: &Gateway) -> Option<pb::ResourceRef> {
    check(index, gw_ns, gateway)?.ok()
}

/// Whether `gateway` (in `gw_ns`) names Secret `secret` as its client certificate.
pub(in crate::translate) fn references_secret(gw_ns: &str, gateway: &Gateway, secret: &(String, String)) -> bool {
    reference(gateway).is_some_and(|c| c.namespace.as_deref().unwrap_or(gw_ns) == secret.0 && c.name == secret.1)
}

/// Whether `gateway`'s client certificate is in another namespace (a grant decides).
pub(in crate::translate) fn refers_across_namespaces(gw_ns: &str, gateway: &Gateway) -> bool {
    reference(gateway).is_some_and(|c| c.namespace.as_deref().is_some_and(|ns| ns != gw_ns))
}

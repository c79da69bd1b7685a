//! HTTPS listeners: their certificate references checked against the Secrets the source
//! holds (the gateway reads them only for that; their content is never sent anywhere).
use gateway_api::apis::experimental::gateways::{Gateway, GatewayListeners};
use kgw_common::resources::Index;
use kgw_proto::v1 as pb;

use super::grants;

/// Why a listener's certificates cannot be used: (condition reason, message).
pub(crate) type Problem = (&'static str, String);

/// Checks every certificateRef of an HTTPS `listener` of a Gateway in `gw_ns`.
/// Without the Secrets in the index (`Index::secrets_withheld`), a reference that passes
/// the other checks counts as resolved.
pub(crate) fn check_certificates(index: &Index, gw_ns: &str, listener: &GatewayListeners) -> Option<Problem> {
    let refs = listener
        .tls
        .as_ref()
        .and_then(|tls| tls.certificate_refs.as_deref())
        .unwrap_or_default();
    if refs.is_empty() {
        return Some((
            "InvalidCertificateRef",
            format!("listener {} has no tls.certificateRefs", listener.name),
        ));
    }
    // A ListenerSet's listener refers from the set (its namespace, its kind).
    let (from_kind, gw_ns) = match super::listener_sets::parse(&listener.name) {
        Some((set_ns, _, _)) => ("ListenerSet", set_ns),
        None => ("Gateway", gw_ns),
    };
    for cert in refs {
        let group = cert.group.as_deref().unwrap_or("");
        let kind = cert.kind.as_deref().unwrap_or("Secret");
        let namespace = cert.namespace.as_deref().unwrap_or(gw_ns);
        let name = &cert.name;
        if !group.is_empty() || kind != "Secret" {
            return Some((
                "InvalidCertificateRef",
                format!("certificateRef {group}/{kind} {name}: only core Secrets are supported"),
            ));
        }
        let from = grants::From {
            group: "gateway.networking.k8s.io",
            kind: from_kind,
            namespace: gw_ns,
        };
        let to = grants::To {
            group: "",
            kind: "Secret",
            namespace,
            name,
        };
        if !grants::permitted(index, &from, &to) {
            return Some((
                "RefNotPermitted",
                format!("certificateRef to Secret {namespace}/{name} is not allowed by any ReferenceGrant"),
            ));
        }
        if index.secrets_withheld {
            continue;
        }
        let Some(secret) = index.secrets.get(&(namespace.to_string(), name.clone())) else {
            return Some(("InvalidCertificateRef", format!("Secret {namespace}/{name} not found")));
        };
        if let Err(why) = valid_tls_secret(secret) {
            return Some(("InvalidCertificateRef", format!("Secret {namespace}/{name}: {why}")));
        }
    }
    None
}

/// The TLS termination of an HTTPS `listener` of a Gateway in `gw_ns` (its certificates
/// resolve): one per certificateRef, in order, served for the listener's hostname (any SNI
/// without one). The controller reads the Secrets themselves.
pub(crate) fn ssl_configurations(gw_ns: &str, listener: &GatewayListeners) -> Vec<pb::SslConfig> {
    let sni_domains: Vec<String> = listener.hostname.iter().cloned().collect();
    listener
        .tls
        .as_ref()
        .and_then(|tls| tls.certificate_refs.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|cert| pb::SslConfig {
            secret_ref: Some(pb::ResourceRef {
                kind: "Secret".into(),
                namespace: cert.namespace.clone().unwrap_or_else(|| gw_ns.to_string()),
                name: cert.name.clone(),
            }),
            sni_domains: sni_domains.clone(),
        })
        .collect()
}

/// A Secret with a PEM certificate in `tls.crt` and a PEM private key in `tls.key`.
fn valid_tls_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Result<(), String> {
    let field = |name: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|s| s.clone().into_bytes())
            })
    };
    let cert = field("tls.crt").ok_or("no tls.crt")?;
    let key = field("tls.key").ok_or("no tls.key")?;
    let pem_blocks = |bytes: &[u8], label: &dyn Fn(&str) -> bool| -> bool {
        let text = String::from_utf8_lossy(bytes);
        text.lines()
            .filter_map(|l| l.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")))
            .any(label)
    };
    if !pem_blocks(&cert, &|label| label == "CERTIFICATE") || !pem_has_body(&cert) {
        return Err("tls.crt holds no PEM certificate".into());
    }
    if !pem_blocks(&key, &|label| label.ends_with("PRIVATE KEY")) || !pem_has_body(&key) {
        return Err("tls.key holds no PEM private key".into());
    }
    Ok(())
}

/// Whether the first PEM block's body is valid base64 of some length.
pub(crate) fn pem_has_body(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    body.len() >= 64
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// Whether Gateway `gateway` in `gw_ns` names Secret `secret` in a listener.
pub(crate) fn references_secret(gw_ns: &str, gateway: &Gateway, secret: &(String, String)) -> bool {
    gateway.spec.listeners.iter().any(|listener| {
        listener
            .tls
            .as_ref()
            .and_then(|tls| tls.certificate_refs.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|cert| cert.namespace.as_deref().unwrap_or(gw_ns) == secret.0 && cert.name == secret.1)
    })
}

/// Whether Gateway `gateway` in `gw_ns` names a Secret in another namespace.
pub(crate) fn refers_across_namespaces(gw_ns: &str, gateway: &Gateway) -> bool {
    gateway.spec.listeners.iter().any(|listener| {
        listener
            .tls
            .as_ref()
            .and_then(|tls| tls.certificate_refs.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|cert| cert.namespace.as_deref().is_some_and(|ns| ns != gw_ns))
    })
}

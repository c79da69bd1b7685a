//! Which validation applies to a listener, and why a CA reference does not resolve.
use gateway_api::apis::experimental::gateways::Gateway;
use kgw_common::resources::{Change, Index, decode};

use super::*;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVGb3JUZXN0czAKBggqhkjOPQQDAjAW\n-----END CERTIFICATE-----\n";

fn gateway(frontend: &str) -> Gateway {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\n\
         spec:\n  gatewayClassName: c\n  tls: {{frontend: {frontend}}}\n  listeners:\n\
         \x20 - {{name: http, protocol: HTTP, port: 80}}\n\
         \x20 - {{name: a, protocol: HTTPS, port: 443}}\n\
         \x20 - {{name: b, protocol: HTTPS, port: 8443}}\n"
    );
    serde_yaml::from_str(&yaml).expect("gateway yaml")
}

/// An index with ConfigMap `default/ca` holding `ca.crt`.
fn index() -> Index {
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: default}}\ndata:\n  ca.crt: {PEM:?}\n"
    );
    let value: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("yaml");
    let (key, resource) = decode(value).expect("valid").expect("a resource");
    let mut index = Index::default();
    index.apply(&Change::Upsert(key, resource));
    index
}

fn listener<'a>(gateway: &'a Gateway, name: &str) -> &'a GatewayListeners {
    gateway
        .spec
        .listeners
        .iter()
        .find(|l| l.name == name)
        .expect("listener")
}

#[test]
fn per_port_entry_replaces_the_default_and_http_is_never_validated() {
    let gw = gateway(
        "{default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}, \
         perPort: [{port: 8443, tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}}, \
         {port: 80, tls: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: missing}]}}}]}",
    );
    let index = index();
    let on = |name| match resolve(&index, "default", &gw, listener(&gw, name)) {
        Frontend::On { validation, problem } => (validation.allow_insecure_fallback, problem),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(on("a"), (false, None));
    assert_eq!(on("b"), (true, None));
    assert_eq!(resolve(&index, "default", &gw, listener(&gw, "http")), Frontend::Off);
    assert!(insecure_fallback(&gw));
}

#[test]
fn unresolved_references_name_their_reason() {
    let index = index();
    let reason = |refs: &str| {
        let gw = gateway(&format!("{{default: {{validation: {{caCertificateRefs: [{refs}]}}}}}}"));
        match resolve(&index, "default", &gw, listener(&gw, "a")) {
            Frontend::NoValidCa((reason, _)) => reason,
            other => panic!("{refs}: {other:?}"),
        }
    };
    assert_eq!(
        reason("{group: '', kind: ConfigMap, name: missing}"),
        "InvalidCACertificateRef"
    );
    assert_eq!(
        reason("{group: '', kind: Service, name: ca}"),
        "InvalidCACertificateKind"
    );
    assert_eq!(
        reason("{group: example.com, kind: ConfigMap, name: ca}"),
        "InvalidCACertificateKind"
    );
    assert_eq!(
        reason("{group: '', kind: ConfigMap, name: ca, namespace: other}"),
        "RefNotPermitted"
    );
}

#[test]
fn one_resolving_reference_keeps_the_listener_served() {
    let gw = gateway(
        "{default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: missing}, {group: '', kind: ConfigMap, name: ca}]}}}",
    );
    let Frontend::On { validation, problem } = resolve(&index(), "default", &gw, listener(&gw, "a")) else {
        panic!("not validated");
    };
    assert_eq!(validation.trusted_ca_pem, PEM);
    assert_eq!(problem.map(|p| p.0), Some("InvalidCACertificateRef"));
    assert!(references("default", &gw, &("default".into(), "missing".into())));
    assert!(!refers_across_namespaces("default", &gw));
}

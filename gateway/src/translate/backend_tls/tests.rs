//! Which policy applies to a Service port, and what a destination gets from it.
use kgw_common::resources::{Change, Index, decode};
use serde_json::{Value, json};

use super::{DestinationTls, destination_tls};

fn index(docs: &[Value]) -> Index {
    let mut index = Index::default();
    for doc in docs {
        let yaml = serde_yaml::to_value(doc).expect("yaml");
        let (key, resource) = decode(yaml).expect("valid").expect("known kind");
        index.apply(&Change::Upsert(key, resource));
    }
    index
}

fn policy(name: &str, section: Option<&str>, hostname: &str, config_map: &str) -> Value {
    let mut target = json!({"group": "", "kind": "Service", "name": "svc"});
    if let Some(section) = section {
        target["sectionName"] = json!(section);
    }
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"targetRefs": [target], "validation": {"hostname": hostname,
            "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": config_map}]}}})
}

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVGb3JUZXN0czAKBggqhkjOPQQDAjAP\n-----END CERTIFICATE-----\n";

fn base() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "default"},
            "spec": {"ports": [{"name": "a", "port": 443}, {"name": "b", "port": 8443}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca", "namespace": "default"},
            "data": {"ca.crt": CA}}),
    ]
}

fn sni(tls: DestinationTls) -> Option<String> {
    match tls {
        DestinationTls::Tls(tls) => Some(tls.sni),
        _ => None,
    }
}

#[test]
fn a_port_policy_wins_its_port_and_the_whole_service_one_the_others() {
    let mut docs = base();
    docs.push(policy("whole", None, "whole.example", "ca"));
    docs.push(policy("port", Some("a"), "port.example", "ca"));
    docs.push(policy("port-later", Some("a"), "later.example", "ca"));
    let index = index(&docs);
    assert_eq!(
        sni(destination_tls(&index, "default", "svc", 443)).as_deref(),
        Some("port.example")
    );
    assert_eq!(
        sni(destination_tls(&index, "default", "svc", 8443)).as_deref(),
        Some("whole.example")
    );
    assert_eq!(destination_tls(&index, "default", "other", 443), DestinationTls::None);
}

#[test]
fn a_policy_without_a_usable_ca_makes_the_destination_invalid() {
    let mut docs = base();
    docs.push(policy("missing", None, "x.example", "no-such-config-map"));
    let index = index(&docs);
    assert_eq!(destination_tls(&index, "default", "svc", 443), DestinationTls::Invalid);
}

//! What a cluster would add to the suite's manifests, made by hand for the directory
//! source: the GatewayClass, an address per Gateway, the echo "pods" of the Deployments and
//! the EndpointSlices of the Services that select them.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context, Result};
use serde_yaml::{Mapping, Value};

/// The GatewayClass every conformance Gateway names, and its controller.
pub const GATEWAY_CLASS: &str = "gateway-conformance";
pub const CONTROLLER_NAME: &str = "kgateway.dev/kgateway";

/// The address GatewayStaticAddresses declares as unusable (TEST-NET-3: never local).
pub const UNUSABLE_ADDRESS: &str = "203.0.113.1";

/// (namespace, name).
pub type Nn = (String, String);

/// The documents of `paths` (relative to the manifests folder), placeholders replaced.
pub fn load_documents(manifests: &Path, paths: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for path in paths {
        let file = manifests.join(path);
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let text = text
            .replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS)
            .replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER_NAME);
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            if !value.is_null() {
                out.push(value);
            }
        }
    }
    Ok(out)
}

fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// (namespace, name) of a document; namespace "default" when absent.
pub fn nn(doc: &Value) -> Nn {
    let meta = doc.get("metadata");
    let text = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (
        text("namespace").unwrap_or_else(|| "default".into()),
        text("name").unwrap_or_default(),
    )
}

/// The Gateways of `docs`.
pub fn gateways(docs: &[Value]) -> Vec<Nn> {
    docs.iter().filter(|d| kind(d) == "Gateway").map(nn).collect()
}

/// One loopback address per Gateway, stable for the whole run: `base` + the Gateway's
/// position among every Gateway of every manifest (sorted).
#[derive(Clone, Debug)]
pub struct AddressPlan {
    by_gateway: BTreeMap<Nn, IpAddr>,
}

impl AddressPlan {
    /// Addresses `127.b.c.d` from `first` (inclusive) on, for `gateways`.
    pub fn new(gateways: BTreeSet<Nn>, block: (u8, u8), first: u8) -> Self {
        let by_gateway = gateways
            .into_iter()
            .enumerate()
            .map(|(i, gw)| {
                let host = first.saturating_add(u8::try_from(i).unwrap_or(u8::MAX));
                (gw, IpAddr::V4(Ipv4Addr::new(127, block.0, block.1, host)))
            })
            .collect();
        Self { by_gateway }
    }

    pub fn address(&self, gateway: &Nn) -> Option<IpAddr> {
        self.by_gateway.get(gateway).copied()
    }
}

/// Gives every Gateway without `spec.addresses` its planned address (the Gateway asks for
/// it, as a static address; our gateway binds Envoy's listeners there).
pub fn assign_addresses(docs: &mut [Value], plan: &AddressPlan) {
    for doc in docs.iter_mut().filter(|d| kind(d) == "Gateway") {
        let Some(ip) = plan.address(&nn(doc)) else { continue };
        let Some(spec) = doc.get_mut("spec").and_then(Value::as_mapping_mut) else {
            continue;
        };
        if let Some(Value::Sequence(addresses)) = spec.get_mut("addresses") {
            // GatewayStaticAddresses' placeholders: the suite's flags name a usable and an
            // unusable address; ours are the Gateway's planned one and TEST-NET-3.
            for address in addresses.iter_mut() {
                let Some(map) = address.as_mapping_mut() else { continue };
                let value = match map.get("value").and_then(Value::as_str) {
                    Some("PLACEHOLDER_USABLE_ADDRS") => ip.to_string(),
                    Some("PLACEHOLDER_UNUSABLE_ADDRS") => UNUSABLE_ADDRESS.to_string(),
                    _ => continue,
                };
                map.insert("type".into(), "IPAddress".into());
                map.insert("value".into(), value.into());
            }
            continue;
        }
        let mut address = Mapping::new();
        address.insert("type".into(), "IPAddress".into());
        address.insert("value".into(), ip.to_string().into());
        spec.insert("addresses".into(), Value::Sequence(vec![Value::Mapping(address)]));
    }
}

/// One echo pod of a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ip: IpAddr,
    /// The Secret (same namespace) of its TLS port, when it serves one.
    pub tls_secret: Option<String>,
    /// The ConfigMap (same namespace) whose `ca.crt` verifies client certificates.
    pub client_ca_config_map: Option<String>,
}

/// The echo-basic pods of the Deployments in `docs` (HTTP echo only: the gRPC, TCP and UDP
/// personalities serve no HTTP case). Addresses come from `next_ip`, remembered by pod name
/// in `known` so a pod keeps its address across tests.
pub fn pods(docs: &[Value], known: &mut BTreeMap<Nn, IpAddr>, next_ip: &mut dyn FnMut() -> IpAddr) -> Vec<PodPlan> {
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| kind(d) == "Deployment") {
        let (namespace, name) = nn(doc);
        let spec = doc.get("spec");
        let template = spec.and_then(|s| s.get("template"));
        let container = template
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(|c| c.get(0));
        let image = container
            .and_then(|c| c.get("image"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let env: BTreeSet<&str> = container
            .and_then(|c| c.get("env"))
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect();
        let other_personality = ["GRPC_ECHO_SERVER", "TCP_ECHO_SERVER", "UDP_ECHO_SERVER"]
            .iter()
            .any(|e| env.contains(e));
        if !image.contains("echo-basic") || other_personality {
            continue;
        }
        let volumes = template
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("volumes"))
            .and_then(Value::as_sequence);
        let volume = |field: &str, key: &str| {
            volumes
                .into_iter()
                .flatten()
                .find_map(|v| v.get(field).and_then(|s| s.get(key)).and_then(Value::as_str))
                .map(str::to_string)
        };
        let tls_secret = env
            .contains("TLS_SERVER_CERT")
            .then(|| volume("secret", "secretName"))
            .flatten();
        let client_ca_config_map = env
            .contains("TLS_CLIENT_CACERTS")
            .then(|| volume("configMap", "name"))
            .flatten();
        let labels: BTreeMap<String, String> = template
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("labels"))
            .and_then(|l| serde_yaml::from_value(l.clone()).ok())
            .unwrap_or_default();
        let replicas = spec
            .and_then(|s| s.get("replicas"))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        for i in 0..replicas as usize {
            let pod = super::echo::pod_name(&name, i);
            let ip = *known
                .entry((namespace.clone(), pod.clone()))
                .or_insert_with(&mut *next_ip);
            out.push(PodPlan {
                namespace: namespace.clone(),
                name: pod,
                labels: labels.clone(),
                ip,
                tls_secret: tls_secret.clone(),
                client_ca_config_map: client_ca_config_map.clone(),
            });
        }
    }
    out
}

/// EndpointSlices a cluster would keep for the Services of `docs` that select pods, and
/// the manifests' own slices that start empty filled (`fill_manual`: the test patches them
/// with the pods of `fill_from` at run time).
pub fn endpoint_slices(docs: &[Value], pods: &[PodPlan], fill_manual: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| kind(d) == "Service") {
        let (namespace, name) = nn(doc);
        let spec = doc.get("spec");
        let selector: BTreeMap<String, String> = spec
            .and_then(|s| s.get("selector"))
            .and_then(|l| serde_yaml::from_value(l.clone()).ok())
            .unwrap_or_default();
        if selector.is_empty() {
            continue;
        }
        let selected: Vec<&PodPlan> = pods
            .iter()
            .filter(|p| p.namespace == namespace && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect();
        let ports: Vec<Value> = spec
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .map(|port| {
                let target = port
                    .get("targetPort")
                    .and_then(Value::as_u64)
                    .or_else(|| port.get("port").and_then(Value::as_u64))
                    .unwrap_or(0);
                let mut m = Mapping::new();
                if let Some(name) = port.get("name") {
                    m.insert("name".into(), name.clone());
                }
                m.insert("port".into(), target.into());
                m.insert("protocol".into(), "TCP".into());
                if let Some(app) = port.get("appProtocol") {
                    m.insert("appProtocol".into(), app.clone());
                }
                Value::Mapping(m)
            })
            .collect();
        out.push(slice(
            &namespace,
            &format!("{name}-conformance"),
            &name,
            ports,
            &selected,
        ));
    }
    if let Some(source_app) = fill_manual {
        for doc in docs.iter().filter(|d| kind(d) == "EndpointSlice") {
            let empty = doc
                .get("endpoints")
                .and_then(Value::as_sequence)
                .is_none_or(|e| e.is_empty());
            let ipv4 = doc.get("addressType").and_then(Value::as_str) == Some("IPv4");
            if !empty || !ipv4 {
                continue;
            }
            let (namespace, _) = nn(doc);
            let selected: Vec<&PodPlan> = pods
                .iter()
                .filter(|p| p.namespace == namespace && p.labels.get("app").map(String::as_str) == Some(source_app))
                .collect();
            let mut filled = doc.clone();
            if let Some(map) = filled.as_mapping_mut() {
                map.insert("endpoints".into(), endpoints(&selected));
            }
            out.push(filled);
        }
    }
    out
}

fn endpoints(pods: &[&PodPlan]) -> Value {
    Value::Sequence(
        pods.iter()
            .map(|p| {
                serde_yaml::to_value(serde_json::json!({
                    "addresses": [p.ip.to_string()],
                    "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "namespace": p.namespace, "name": p.name},
                }))
                .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

fn slice(namespace: &str, name: &str, service: &str, ports: Vec<Value>, pods: &[&PodPlan]) -> Value {
    let mut doc = serde_yaml::to_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
    }))
    .unwrap_or(Value::Null);
    if let Some(map) = doc.as_mapping_mut() {
        map.insert("ports".into(), Value::Sequence(ports));
        map.insert("endpoints".into(), endpoints(pods));
    }
    doc
}

/// The GatewayClass of the run.
pub fn gateway_class() -> Value {
    serde_yaml::to_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": CONTROLLER_NAME},
    }))
    .unwrap_or(Value::Null)
}

/// Documents as one multi-document YAML text.
pub fn to_yaml(docs: &[Value]) -> Result<String> {
    let mut text = String::new();
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(doc)?);
    }
    Ok(text)
}

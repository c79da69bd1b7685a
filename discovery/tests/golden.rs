//! Golden tests: tests/golden/<case>/input.yaml (Services, EndpointSlices, declared
//! Upstreams) → the Upstreams
//! rendered as YAML, compared with expected.yaml. `UPDATE_GOLDEN=1` rewrites the expected
//! files.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, path::Path};

use kgw_common::resources::{Change, Index, decode};
use kgw_proto::v1::{Endpoint, Upstream, function, upstream::UpstreamType};
use serde::{Deserialize as _, Serialize};

/// A serde mirror of the Upstream (the prost types have no serde).
#[derive(Serialize)]
struct UpstreamYaml {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    written_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kube: Option<KubeYaml>,
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    static_: Option<StaticYaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws: Option<AwsYaml>,
    /// `<kind> <name>` (and for Lambda `→ <function>:<qualifier>`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    functions: Vec<String>,
}

#[derive(Serialize)]
struct StaticYaml {
    /// `address:port` (`sni=<name>` when set).
    hosts: Vec<String>,
    use_tls: bool,
    app_protocol: String,
}

#[derive(Serialize)]
struct AwsYaml {
    region: String,
    secret: String,
}

#[derive(Serialize)]
struct KubeYaml {
    service_name: String,
    service_namespace: String,
    service_port: u32,
    selector: BTreeMap<String, String>,
    app_protocol: String,
    endpoints: Vec<EndpointYaml>,
}

#[derive(Serialize)]
struct EndpointYaml {
    address: String,
    port: u32,
    ready: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    zone: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    hostname: String,
}

impl From<&Upstream> for UpstreamYaml {
    fn from(u: &Upstream) -> Self {
        let meta = u.metadata.clone().unwrap_or_default();
        let kube = match &u.upstream_type {
            Some(UpstreamType::Kube(k)) => Some(KubeYaml {
                service_name: k.service_name.clone(),
                service_namespace: k.service_namespace.clone(),
                service_port: k.service_port,
                selector: k.selector.clone(),
                app_protocol: k.app_protocol.clone(),
                endpoints: k.endpoints.iter().map(EndpointYaml::from).collect(),
            }),
            _ => None,
        };
        let static_ = match &u.upstream_type {
            Some(UpstreamType::Static(s)) => Some(StaticYaml {
                hosts: s
                    .hosts
                    .iter()
                    .map(|h| match h.sni.as_str() {
                        "" => format!("{}:{}", h.address, h.port),
                        sni => format!("{}:{} sni={sni}", h.address, h.port),
                    })
                    .collect(),
                use_tls: s.use_tls,
                app_protocol: s.app_protocol.clone(),
            }),
            _ => None,
        };
        let aws = match &u.upstream_type {
            Some(UpstreamType::Aws(a)) => Some(AwsYaml {
                region: a.region.clone(),
                secret: a
                    .secret_ref
                    .as_ref()
                    .map(|r| format!("{}/{}", r.namespace, r.name))
                    .unwrap_or_default(),
            }),
            _ => None,
        };
        let functions = u
            .functions
            .iter()
            .map(|f| match &f.spec {
                Some(function::Spec::Lambda(l)) => {
                    format!("{} {} → {}:{}", f.kind, f.name, l.function_name, l.qualifier)
                }
                _ => format!("{} {}", f.kind, f.name),
            })
            .collect();
        Self {
            namespace: meta.namespace,
            name: meta.name,
            labels: meta.labels,
            written_by: u.written_by.clone(),
            kube,
            static_,
            aws,
            functions,
        }
    }
}

impl From<&Endpoint> for EndpointYaml {
    fn from(e: &Endpoint) -> Self {
        Self {
            address: e.address.clone(),
            port: e.port,
            ready: e.ready,
            zone: e.zone.clone(),
            hostname: e.hostname.clone(),
        }
    }
}

fn index(input: &str, case: &str) -> Index {
    let mut index = Index::default();
    for document in serde_yaml::Deserializer::from_str(input) {
        let value = serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{case}: bad YAML: {e}"));
        let decoded = decode(value).unwrap_or_else(|e| panic!("{case}: {e}"));
        if let Some((key, resource)) = decoded {
            index.apply(&Change::Upsert(key, resource));
        }
    }
    index
}

fn render(upstreams: &BTreeMap<String, Upstream>) -> String {
    let mirror: BTreeMap<&String, UpstreamYaml> = upstreams.iter().map(|(k, u)| (k, u.into())).collect();
    let body = serde_yaml::to_string(&mirror).expect("render YAML");
    format!("# Generated by discovery/tests/golden.rs (UPDATE_GOLDEN=1 rewrites it).\n{body}")
}

#[test]
fn golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/golden")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "golden cases missing in {}", root.display());
    let mut failed = Vec::new();
    for dir in cases {
        let case = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let input = std::fs::read_to_string(dir.join("input.yaml")).expect("input.yaml");
        let actual = render(&kgw_common::upstreams::upstreams(&index(&input, &case)));
        let expected_path = dir.join("expected.yaml");
        if update {
            std::fs::write(&expected_path, &actual).expect("write expected.yaml");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            eprintln!(
                "=== {case}: expected {}\n{expected}\n=== actual\n{actual}",
                expected_path.display()
            );
            failed.push(case);
        }
    }
    assert!(
        failed.is_empty(),
        "golden mismatch in {failed:?} (UPDATE_GOLDEN=1 to accept)"
    );
}

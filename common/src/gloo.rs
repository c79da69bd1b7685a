//! Gloo's Upstream (`gloo.solo.io/v1`), as users declare it: a kube Service port, a static
//! list of hosts, or AWS Lambda functions of one region. Decoded strictly (an unknown field
//! is an error naming it). Discovery passes declared Upstreams to the bus (see
//! [`crate::upstreams`]); the gateway lets HTTPRoutes send to them.
use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{CrdNames, namespaced_crd};

/// The API group of Gloo's Upstream.
pub const GROUP: &str = "gloo.solo.io";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upstream {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: UpstreamSpec,
    /// Written by controllers; never input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// Exactly one of `kube`, `static` and `aws`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamSpec {
    /// A port of a Kubernetes Service; its endpoints come from the Service's EndpointSlices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeSpec>,
    /// Fixed hosts (names are resolved by Envoy, STRICT_DNS).
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_: Option<StaticSpec>,
    /// AWS Lambda functions of one region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSpec>,
    /// The upstream speaks HTTP/2 (h2c or gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_http2: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSpec {
    pub service_name: String,
    /// Defaults to the Upstream's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_namespace: Option<String>,
    pub service_port: u32,
    /// Only endpoints whose pods carry these labels (kept for Envoy's subsets; informative).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticSpec {
    pub hosts: Vec<StaticHost>,
    /// Connect with TLS (SNI: each host's `sniAddr`, else its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_tls: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticHost {
    /// An IP address or a DNS name.
    pub addr: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_addr: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsSpec {
    pub region: String,
    /// The Secret with `aws_access_key_id` and `aws_secret_access_key`.
    pub secret_ref: SecretRef,
    /// Functions declared by hand (discovery adds those `ListFunctions` finds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lambda_functions: Vec<LambdaFunctionSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    /// Defaults to the Upstream's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LambdaFunctionSpec {
    pub lambda_function_name: String,
    /// The name routes use; defaults to the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_name: Option<String>,
    /// A version or alias; defaults to `$LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
}

impl UpstreamSpec {
    /// The one problem that makes the spec unusable, naming the field: `(field, message)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let set = [self.kube.is_some(), self.static_.is_some(), self.aws.is_some()];
        match set.iter().filter(|s| **s).count() {
            0 => return Err(("spec", "one of `kube`, `static` or `aws` is required".into())),
            1 => {}
            _ => return Err(("spec", "only one of `kube`, `static` and `aws` may be set".into())),
        }
        if let Some(kube) = &self.kube
            && !(1..=65535).contains(&kube.service_port)
        {
            return Err(("spec.kube.servicePort", format!("{} is not a port", kube.service_port)));
        }
        if let Some(hosts) = &self.static_ {
            if hosts.hosts.is_empty() {
                return Err(("spec.static.hosts", "at least one host is required".into()));
            }
            if let Some(host) = hosts.hosts.iter().find(|h| !(1..=65535).contains(&h.port)) {
                return Err((
                    "spec.static.hosts.port",
                    format!("{} ({}) is not a port", host.port, host.addr),
                ));
            }
        }
        if let Some(aws) = &self.aws
            && aws.region.is_empty()
        {
            return Err(("spec.aws.region", "a region is required".into()));
        }
        Ok(())
    }
}

/// The Upstream CustomResourceDefinition (`upstreams.gloo.solo.io`), its `spec` schema
/// generated from [`UpstreamSpec`]. The chart ships it beside RouteOption's; a test keeps
/// the two equal (`UPDATE_CRDS=1 cargo test -p kgw-common --test crds`).
pub fn upstream_crd() -> CustomResourceDefinition {
    namespaced_crd::<UpstreamSpec>(CrdNames {
        group: GROUP,
        kind: "Upstream",
        plural: "upstreams",
        // Gloo's short name, so `kubectl get us` works as it does there.
        short_name: "us",
    })
}

#[cfg(test)]
mod tests {
    use crate::resources::{Resource, decode};

    fn decode_text(yaml: &str) -> Result<Option<(crate::resources::ResourceKey, Resource)>, String> {
        decode(serde_yaml::from_str(yaml).expect("test YAML")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_declared_upstream_decodes_with_its_namespace() {
        let (key, resource) = decode_text(
            "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: u}\n\
             spec: {static: {hosts: [{addr: 127.0.0.1, port: 80}]}}\n",
        )
        .expect("valid")
        .expect("a kind we read");
        assert_eq!(key.to_string(), "Upstream/default/u");
        assert!(matches!(resource, Resource::Upstream(_)));
    }

    #[test]
    fn bad_specs_name_the_resource_and_the_field() {
        let cases = [
            (
                "spec: {}",
                "Upstream/default/u: field `spec`: one of `kube`, `static` or `aws` is required",
            ),
            (
                "spec: {kube: {serviceName: s, servicePort: 80}, static: {hosts: [{addr: a, port: 1}]}}",
                "Upstream/default/u: field `spec`: only one of `kube`, `static` and `aws` may be set",
            ),
            (
                "spec: {static: {hosts: [{adress: a, port: 1}]}}",
                "Upstream/default/u: field `spec.static.hosts[0].adress`: unknown field `adress`",
            ),
            (
                "spec: {kube: {serviceName: s, servicePort: 0}}",
                "Upstream/default/u: field `spec.kube.servicePort`: 0 is not a port",
            ),
            (
                "spec: {aws: {region: '', secretRef: {name: s}}}",
                "Upstream/default/u: field `spec.aws.region`: a region is required",
            ),
        ];
        for (spec, want) in cases {
            let text = format!("apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: u}}\n{spec}\n");
            let got = decode_text(&text).expect_err(spec);
            assert!(got.starts_with(want), "{spec}: got {got}");
        }
    }
}

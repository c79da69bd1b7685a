//! kgateway / Gloo policy resources, decoded strictly (unknown fields are errors). Today:
//! RouteOption (`gateway.solo.io/v1`), attached to HTTPRoutes by `spec.targetRefs` or from
//! a rule by an `ExtensionRef` filter, as in Gloo.
use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteOption {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RouteOptionSpec,
    /// Written by controllers, read back so that a status writer compares before writing;
    /// never input to translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PolicyStatus>,
}

/// What controllers report on a policy, as Gateway API policies do (GEP-713): one entry
/// per ancestor (a Gateway whose routes the policy affects) and controller. Not strict:
/// other controllers may write more.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(default)]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: AncestorRef,
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// A Gateway API ParentReference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteOptionSpec {
    /// HTTPRoutes (same namespace) whose every rule gets these options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default)]
    pub options: RouteOptions,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// The subset of Gloo's RouteOptions we translate, plus `wasm` (our extension).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteOptions {
    /// Whole-request timeout, e.g. `5s`, `250ms`, `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_manipulation: Option<HeaderManipulation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmOptions>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderManipulation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValueOption {
    pub header: HeaderValue,
    /// true (Gloo's default): add another value; false: replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmOptions {
    pub filters: Vec<WasmFilterSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmFilterSpec {
    pub name: String,
    /// http://, https:// or file:// location of the module (file:// only under the folder
    /// the controller's `--wasm-file-root` names).
    pub url: String,
    /// Hex sha256 the module must have.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// When the module cannot run: false (default) answers 503 on the routes that use it;
    /// true lets their requests through without the filter.
    #[serde(default)]
    pub fail_open: bool,
}

/// The RouteOption CustomResourceDefinition (`routeoptions.gateway.solo.io`), its `spec`
/// schema generated from [`RouteOptionSpec`], so the API server refuses what our decoder
/// would refuse. The Helm chart ships it as `crds/gateway.solo.io_routeoptions.yaml`; a
/// test keeps the two equal (`UPDATE_CRDS=1 cargo test -p kgw-common --test crds`).
pub fn route_option_crd() -> CustomResourceDefinition {
    namespaced_crd::<RouteOptionSpec>(CrdNames {
        group: "gateway.solo.io",
        kind: "RouteOption",
        plural: "routeoptions",
        // Gloo's short name, so `kubectl get rto` works as it does there.
        short_name: "rto",
    })
}

/// The names of one of our CRDs.
pub(crate) struct CrdNames {
    pub(crate) group: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) short_name: &'static str,
}

/// A namespaced `v1` CRD of Gloo's categories whose `spec` schema is generated from `Spec`
/// and whose `status` (a subresource) keeps whatever is written: the gateway and perhaps
/// other controllers write it in their own shapes.
pub(crate) fn namespaced_crd<Spec: JsonSchema>(names: CrdNames) -> CustomResourceDefinition {
    let status = JSONSchemaProps {
        type_: Some("object".into()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    };
    let root = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([
            ("spec".to_string(), structural_schema::<Spec>()),
            ("status".to_string(), status),
        ])),
        ..Default::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{}.{}", names.plural, names.group)),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: names.group.into(),
            scope: "Namespaced".into(),
            names: CustomResourceDefinitionNames {
                kind: names.kind.into(),
                list_kind: Some(format!("{}List", names.kind)),
                plural: names.plural.into(),
                singular: Some(names.kind.to_lowercase()),
                short_names: Some(vec![names.short_name.into()]),
                categories: Some(vec!["gloo".into(), "solo-io".into()]),
            },
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1".into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(root),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                    scale: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

/// `T`'s JSON schema in the structural form the API server requires: every subschema
/// inlined (no `$ref`), a `type` on each, no `$schema`, as kube-derive generates it.
pub(crate) fn structural_schema<T: JsonSchema>() -> JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a schema is JSON");
    // The root's title is the Rust type's name: noise in a CRD.
    if let Some(map) = schema.as_object_mut() {
        map.remove("title");
    }
    serde_json::from_value(schema).expect("schemars output is a valid JSONSchemaProps")
}

/// `5s`, `250ms`, `1.5s`, `2m`, `1h` → milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u32> {
    let text = text.trim();
    let (number, unit) = text.find(|c: char| c.is_ascii_alphabetic()).map(|i| text.split_at(i))?;
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let ms = number * factor;
    (ms.is_finite() && ms >= 0.0 && ms <= f64::from(u32::MAX)).then_some(ms.round() as u32)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Some(5000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("5"), None);
        assert_eq!(parse_duration_ms("fives"), None);
    }
}

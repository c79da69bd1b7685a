//! The Kubernetes resources the processes read, decoded strictly from YAML documents, and
//! the [`Index`] any config source fills (directory today, the Kubernetes API later).
use std::{collections::BTreeMap, fmt, sync::Arc};

use gateway_api::apis::experimental::{
    gatewayclasses::GatewayClass, gateways::Gateway, httproutes::HttpRoute, listenersets::ListenerSet,
    referencegrants::ReferenceGrant,
};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, Secret, Service},
    discovery::v1::EndpointSlice,
};
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::{gloo, policy::RouteOption};

/// BackendTLSPolicy is in the standard channel only (its experimental form is the same).
pub use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;

/// The kinds we read. Anything else in a manifest is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    ReferenceGrant,
    Service,
    EndpointSlice,
    RouteOption,
    /// Gloo's Upstream (`gloo.solo.io/v1`), declared by users.
    Upstream,
    /// TLS certificates of HTTPS listeners (`kubernetes.io/tls`).
    Secret,
    /// Namespaces, for their labels (allowedRoutes selectors).
    Namespace,
    /// Listeners added to a Gateway from outside it (Gateway API ListenerSet).
    ListenerSet,
    /// CA certificates (`ca.crt`) that TLS validation refers to.
    ConfigMap,
    /// TLS from Envoy to a backend (Gateway API BackendTLSPolicy).
    BackendTlsPolicy,
}

impl Kind {
    /// (apiVersion group, kind) → Kind. Core kinds have group "".
    fn from_type(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("gateway.networking.k8s.io", "GatewayClass") => Some(Self::GatewayClass),
            ("gateway.networking.k8s.io", "Gateway") => Some(Self::Gateway),
            ("gateway.networking.k8s.io", "HTTPRoute") => Some(Self::HttpRoute),
            ("gateway.networking.k8s.io", "ReferenceGrant") => Some(Self::ReferenceGrant),
            ("", "Service") => Some(Self::Service),
            ("discovery.k8s.io", "EndpointSlice") => Some(Self::EndpointSlice),
            ("gateway.solo.io", "RouteOption") => Some(Self::RouteOption),
            (gloo::GROUP, "Upstream") => Some(Self::Upstream),
            ("", "Secret") => Some(Self::Secret),
            ("", "Namespace") => Some(Self::Namespace),
            ("gateway.networking.k8s.io", "ListenerSet") => Some(Self::ListenerSet),
            ("", "ConfigMap") => Some(Self::ConfigMap),
            ("gateway.networking.k8s.io", "BackendTLSPolicy") => Some(Self::BackendTlsPolicy),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GatewayClass => "GatewayClass",
            Self::Gateway => "Gateway",
            Self::HttpRoute => "HTTPRoute",
            Self::ReferenceGrant => "ReferenceGrant",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::RouteOption => "RouteOption",
            Self::Upstream => "Upstream",
            Self::Secret => "Secret",
            Self::Namespace => "Namespace",
            Self::ListenerSet => "ListenerSet",
            Self::ConfigMap => "ConfigMap",
            Self::BackendTlsPolicy => "BackendTLSPolicy",
        }
    }

    /// The API group (`""` for core kinds).
    pub fn group(self) -> &'static str {
        match self {
            Self::GatewayClass
            | Self::Gateway
            | Self::HttpRoute
            | Self::ReferenceGrant
            | Self::ListenerSet
            | Self::BackendTlsPolicy => "gateway.networking.k8s.io",
            Self::Service | Self::Secret | Self::Namespace | Self::ConfigMap => "",
            Self::EndpointSlice => "discovery.k8s.io",
            Self::RouteOption => "gateway.solo.io",
            Self::Upstream => gloo::GROUP,
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Self::GatewayClass | Self::Namespace)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a resource: kind, namespace ("" for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A decoded resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HttpRoute(Arc<HttpRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    RouteOption(Arc<RouteOption>),
    Upstream(Arc<gloo::Upstream>),
    Secret(Arc<Secret>),
    Namespace(Arc<Namespace>),
    ListenerSet(Arc<ListenerSet>),
    ConfigMap(Arc<ConfigMap>),
    BackendTlsPolicy(Arc<BackendTlsPolicy>),
}

impl Resource {
    /// The object's `metadata.generation`.
    pub fn generation(&self) -> Option<i64> {
        self.with_meta(|meta| meta.generation)
    }

    /// A digest of everything but `metadata` and `status`: what a change of generation counts.
    pub fn spec_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut value = self.with_object(|object| object).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("metadata");
            map.remove("status");
        }
        let mut hasher = std::hash::DefaultHasher::new();
        value.to_string().hash(&mut hasher);
        hasher.finish()
    }

    /// The same object with `metadata.generation` set.
    pub fn with_generation(&self, generation: i64) -> Resource {
        fn set<T: Clone + kube::Resource>(object: &Arc<T>, generation: i64) -> Arc<T> {
            let mut object = T::clone(object);
            object.meta_mut().generation = Some(generation);
            Arc::new(object)
        }
        match self {
            Self::GatewayClass(r) => Self::GatewayClass(set(r, generation)),
            Self::Gateway(r) => Self::Gateway(set(r, generation)),
            Self::HttpRoute(r) => Self::HttpRoute(set(r, generation)),
            Self::ReferenceGrant(r) => Self::ReferenceGrant(set(r, generation)),
            Self::Service(r) => Self::Service(set(r, generation)),
            Self::EndpointSlice(r) => Self::EndpointSlice(set(r, generation)),
            Self::RouteOption(r) => {
                let mut object = RouteOption::clone(r);
                object.metadata.generation = Some(generation);
                Self::RouteOption(Arc::new(object))
            }
            Self::Upstream(r) => {
                let mut object = gloo::Upstream::clone(r);
                object.metadata.generation = Some(generation);
                Self::Upstream(Arc::new(object))
            }
            Self::Secret(r) => Self::Secret(set(r, generation)),
            Self::Namespace(r) => Self::Namespace(set(r, generation)),
            Self::ListenerSet(r) => Self::ListenerSet(set(r, generation)),
            Self::ConfigMap(r) => Self::ConfigMap(set(r, generation)),
            Self::BackendTlsPolicy(r) => Self::BackendTlsPolicy(set(r, generation)),
        }
    }

    fn with_meta<R>(&self, f: impl FnOnce(&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> R) -> R {
        use kube::Resource as _;
        match self {
            Self::GatewayClass(r) => f(r.meta()),
            Self::Gateway(r) => f(r.meta()),
            Self::HttpRoute(r) => f(r.meta()),
            Self::ReferenceGrant(r) => f(r.meta()),
            Self::Service(r) => f(r.meta()),
            Self::EndpointSlice(r) => f(r.meta()),
            Self::RouteOption(r) => f(&r.metadata),
            Self::Upstream(r) => f(&r.metadata),
            Self::Secret(r) => f(r.meta()),
            Self::Namespace(r) => f(r.meta()),
            Self::ListenerSet(r) => f(r.meta()),
            Self::ConfigMap(r) => f(r.meta()),
            Self::BackendTlsPolicy(r) => f(r.meta()),
        }
    }

    fn with_object<R>(&self, f: impl FnOnce(serde_json::Value) -> R) -> Option<R> {
        let value = match self {
            Self::GatewayClass(r) => serde_json::to_value(r.as_ref()),
            Self::Gateway(r) => serde_json::to_value(r.as_ref()),
            Self::HttpRoute(r) => serde_json::to_value(r.as_ref()),
            Self::ReferenceGrant(r) => serde_json::to_value(r.as_ref()),
            Self::Service(r) => serde_json::to_value(r.as_ref()),
            Self::EndpointSlice(r) => serde_json::to_value(r.as_ref()),
            Self::RouteOption(r) => serde_json::to_value(r.as_ref()),
            Self::Upstream(r) => serde_json::to_value(r.as_ref()),
            Self::Secret(r) => serde_json::to_value(r.as_ref()),
            Self::Namespace(r) => serde_json::to_value(r.as_ref()),
            Self::ListenerSet(r) => serde_json::to_value(r.as_ref()),
            Self::ConfigMap(r) => serde_json::to_value(r.as_ref()),
            Self::BackendTlsPolicy(r) => serde_json::to_value(r.as_ref()),
        };
        value.ok().map(f)
    }
}

/// Why a document was not accepted. `Display` names the kind/namespace/name (when known)
/// and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind}/{namespace}/{name}: field `{field}`: {message}")]
    Field {
        kind: String,
        namespace: String,
        name: String,
        field: String,
        message: String,
    },
    #[error("document has no {0}")]
    Missing(&'static str),
}

impl DecodeError {
    /// The resource the document declares, when it got that far.
    pub fn key_hint(&self) -> Option<(String, String, String)> {
        match self {
            Self::Field { name, .. } if name.is_empty() => None,
            Self::Field {
                kind, namespace, name, ..
            } => Some((kind.clone(), namespace.clone(), name.clone())),
            Self::Missing(_) => None,
        }
    }
}

/// Decodes one YAML document. `Ok(None)`: a kind we do not read (or an empty document).
/// The namespace defaults to "default", as `kubectl apply` does.
pub fn decode(doc: Value) -> Result<Option<(ResourceKey, Resource)>, DecodeError> {
    if doc.is_null() {
        return Ok(None);
    }
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Missing("apiVersion"))?;
    let kind_name = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Missing("kind"))?;
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let Some(kind) = Kind::from_type(group, kind_name) else {
        tracing::debug!(api_version, kind = kind_name, "skipping a kind we do not read");
        return Ok(None);
    };
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(if kind.namespaced() { "default" } else { "" })
        .to_string();
    if !kind.namespaced() {
        namespace.clear();
    }
    let field_error = |field: String, message: String| DecodeError::Field {
        kind: kind.to_string(),
        namespace: namespace.clone(),
        name: name.clone(),
        field,
        message,
    };
    if name.is_empty() {
        return Err(field_error("metadata.name".into(), "required".into()));
    }
    let mut doc = doc;
    if kind.namespaced()
        && let Some(Value::Mapping(meta)) = doc.get_mut("metadata")
    {
        meta.insert("namespace".into(), namespace.clone().into());
    }
    let resource = match kind {
        Kind::GatewayClass => Resource::GatewayClass(strict(&doc, &field_error)?),
        Kind::Gateway => Resource::Gateway(strict(&doc, &field_error)?),
        Kind::HttpRoute => Resource::HttpRoute(strict(&doc, &field_error)?),
        Kind::ReferenceGrant => Resource::ReferenceGrant(strict(&doc, &field_error)?),
        Kind::Service => Resource::Service(strict(&doc, &field_error)?),
        Kind::EndpointSlice => Resource::EndpointSlice(strict(&doc, &field_error)?),
        Kind::RouteOption => Resource::RouteOption(strict(&doc, &field_error)?),
        Kind::Upstream => {
            let upstream: Arc<gloo::Upstream> = strict(&doc, &field_error)?;
            upstream
                .spec
                .validate()
                .map_err(|(field, message)| field_error(field.into(), message))?;
            Resource::Upstream(upstream)
        }
        Kind::Secret => Resource::Secret(strict(&doc, &field_error)?),
        Kind::Namespace => Resource::Namespace(strict(&doc, &field_error)?),
        Kind::ListenerSet => Resource::ListenerSet(strict(&doc, &field_error)?),
        Kind::ConfigMap => Resource::ConfigMap(strict(&doc, &field_error)?),
        Kind::BackendTlsPolicy => Resource::BackendTlsPolicy(strict(&doc, &field_error)?),
    };
    Ok(Some((ResourceKey { kind, namespace, name }, resource)))
}

/// Decodes an object the API server sent (JSON it has already validated), naming the
/// failing field. Unlike [`decode`], fields the type does not know are dropped (the API
/// server's schema may be newer than ours), except where the type itself denies them (our
/// own CRDs, whose schema is ours).
pub fn decode_api_object(kind: Kind, value: serde_json::Value) -> Result<Resource, DecodeError> {
    let meta = value.get("metadata");
    let text = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (namespace, name) = (text("namespace"), text("name"));
    fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<Arc<T>, (String, String)> {
        serde_path_to_error::deserialize(value).map(Arc::new).map_err(|e| {
            let path = e.path().to_string();
            (
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })
    }
    let resource = match kind {
        Kind::GatewayClass => typed(value).map(Resource::GatewayClass),
        Kind::Gateway => typed(value).map(Resource::Gateway),
        Kind::HttpRoute => typed(value).map(Resource::HttpRoute),
        Kind::ReferenceGrant => typed(value).map(Resource::ReferenceGrant),
        Kind::Service => typed(value).map(Resource::Service),
        Kind::EndpointSlice => typed(value).map(Resource::EndpointSlice),
        Kind::RouteOption => typed(value).map(Resource::RouteOption),
        Kind::Upstream => typed::<gloo::Upstream>(value)
            .and_then(|upstream| {
                upstream
                    .spec
                    .validate()
                    .map_err(|(field, message)| (field.to_string(), message))?;
                Ok(upstream)
            })
            .map(Resource::Upstream),
        Kind::Secret => typed(value).map(Resource::Secret),
        Kind::Namespace => typed(value).map(Resource::Namespace),
        Kind::ListenerSet => typed(value).map(Resource::ListenerSet),
        Kind::ConfigMap => typed(value).map(Resource::ConfigMap),
        Kind::BackendTlsPolicy => typed(value).map(Resource::BackendTlsPolicy),
    };
    resource.map_err(|(field, message)| DecodeError::Field {
        kind: kind.to_string(),
        namespace,
        name,
        field,
        message,
    })
}

/// Typed decoding that names the failing field, then rejects fields the type does not have
/// (a typo such as `hostname:` for `hostnames:` would otherwise be dropped silently).
fn strict<T: DeserializeOwned + serde::Serialize>(
    doc: &Value,
    field_error: &dyn Fn(String, String) -> DecodeError,
) -> Result<Arc<T>, DecodeError> {
    let typed: T = serde_path_to_error::deserialize(doc.clone()).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        field_error(if path == "." { String::new() } else { path }, message)
    })?;
    let round_trip = serde_yaml::to_value(&typed).map_err(|e| field_error(String::new(), e.to_string()))?;
    if let Some(field) = first_unknown_field(doc, &round_trip, String::new()) {
        return Err(field_error(field, "unknown field".into()));
    }
    Ok(Arc::new(typed))
}

/// The first key present in `input` that did not survive decoding.
fn first_unknown_field(input: &Value, decoded: &Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (input, decoded) {
        (Value::Mapping(input), Value::Mapping(decoded)) => input.iter().find_map(|(key, value)| {
            let key_str = key.as_str().map(str::to_string).unwrap_or_else(|| format!("{key:?}"));
            match decoded.get(key) {
                Some(inner) => first_unknown_field(value, inner, join(&key_str)),
                // An explicit null (or empty map/list) decodes to nothing: not a typo.
                None if is_empty(value) => None,
                None => Some(join(&key_str)),
            }
        }),
        (Value::Sequence(input), Value::Sequence(decoded)) => input
            .iter()
            .zip(decoded)
            .enumerate()
            .find_map(|(i, (a, b))| first_unknown_field(a, b, format!("{path}[{i}]"))),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Mapping(m) => m.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        _ => false,
    }
}

/// One change to the set of resources a source holds.
#[derive(Clone, Debug)]
pub enum Change {
    Upsert(ResourceKey, Resource),
    Delete(ResourceKey),
}

impl Change {
    /// The resource this change is about.
    pub fn key(&self) -> &ResourceKey {
        match self {
            Self::Upsert(key, _) | Self::Delete(key) => key,
        }
    }
}

/// Every resource a source holds, by kind. Filled by applying [`Change`]s.
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub gateway_classes: BTreeMap<String, Arc<GatewayClass>>,
    pub gateways: BTreeMap<(String, String), Arc<Gateway>>,
    pub http_routes: BTreeMap<(String, String), Arc<HttpRoute>>,
    /// Read, not used by the translation yet (cross-namespace references are a later step).
    pub reference_grants: BTreeMap<(String, String), Arc<ReferenceGrant>>,
    pub services: BTreeMap<(String, String), Arc<Service>>,
    pub endpoint_slices: BTreeMap<(String, String), Arc<EndpointSlice>>,
    pub route_options: BTreeMap<(String, String), Arc<RouteOption>>,
    /// Upstreams users declared (Gloo's `gloo.solo.io/v1` Upstream).
    pub upstreams: BTreeMap<(String, String), Arc<gloo::Upstream>>,
    /// Secrets (the gateway checks listeners' certificate references; it never sends their
    /// content anywhere).
    pub secrets: BTreeMap<(String, String), Arc<Secret>>,
    /// Namespaces by name (their labels select routes).
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub listener_sets: BTreeMap<(String, String), Arc<ListenerSet>>,
    pub config_maps: BTreeMap<(String, String), Arc<ConfigMap>>,
    /// Set when the source gives this process no Secrets by design (the gateway on
    /// Kubernetes may not read them): a missing Secret then says nothing.
    pub secrets_withheld: bool,
    pub backend_tls_policies: BTreeMap<(String, String), Arc<BackendTlsPolicy>>,
}

impl Index {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert(key, resource) => {
                let nn = (key.namespace.clone(), key.name.clone());
                match resource {
                    Resource::GatewayClass(r) => {
                        self.gateway_classes.insert(key.name.clone(), r.clone());
                    }
                    Resource::Gateway(r) => {
                        self.gateways.insert(nn, r.clone());
                    }
                    Resource::HttpRoute(r) => {
                        self.http_routes.insert(nn, r.clone());
                    }
                    Resource::ReferenceGrant(r) => {
                        self.reference_grants.insert(nn, r.clone());
                    }
                    Resource::Service(r) => {
                        self.services.insert(nn, r.clone());
                    }
                    Resource::EndpointSlice(r) => {
                        self.endpoint_slices.insert(nn, r.clone());
                    }
                    Resource::RouteOption(r) => {
                        self.route_options.insert(nn, r.clone());
                    }
                    Resource::Upstream(r) => {
                        self.upstreams.insert(nn, r.clone());
                    }
                    Resource::Secret(r) => {
                        self.secrets.insert(nn, r.clone());
                    }
                    Resource::Namespace(r) => {
                        self.namespaces.insert(key.name.clone(), r.clone());
                    }
                    Resource::ListenerSet(r) => {
                        self.listener_sets.insert(nn, r.clone());
                    }
                    Resource::ConfigMap(r) => {
                        self.config_maps.insert(nn, r.clone());
                    }
                    Resource::BackendTlsPolicy(r) => {
                        self.backend_tls_policies.insert(nn, r.clone());
                    }
                }
            }
            Change::Delete(key) => {
                let nn = (key.namespace.clone(), key.name.clone());
                match key.kind {
                    Kind::GatewayClass => {
                        self.gateway_classes.remove(&key.name);
                    }
                    Kind::Gateway => {
                        self.gateways.remove(&nn);
                    }
                    Kind::HttpRoute => {
                        self.http_routes.remove(&nn);
                    }
                    Kind::ReferenceGrant => {
                        self.reference_grants.remove(&nn);
                    }
                    Kind::Service => {
                        self.services.remove(&nn);
                    }
                    Kind::EndpointSlice => {
                        self.endpoint_slices.remove(&nn);
                    }
                    Kind::RouteOption => {
                        self.route_options.remove(&nn);
                    }
                    Kind::Upstream => {
                        self.upstreams.remove(&nn);
                    }
                    Kind::Secret => {
                        self.secrets.remove(&nn);
                    }
                    Kind::Namespace => {
                        self.namespaces.remove(&key.name);
                    }
                    Kind::ListenerSet => {
                        self.listener_sets.remove(&nn);
                    }
                    Kind::ConfigMap => {
                        self.config_maps.remove(&nn);
                    }
                    Kind::BackendTlsPolicy => {
                        self.backend_tls_policies.remove(&nn);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).expect("test yaml")
    }

    #[test]
    fn decodes_route_with_default_namespace() {
        let (key, resource) = decode(doc(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  hostnames: [a.example]\n",
        ))
        .expect("valid")
        .expect("known kind");
        assert_eq!(key.to_string(), "HTTPRoute/default/r");
        let Resource::HttpRoute(route) = resource else {
            panic!("kind")
        };
        assert_eq!(route.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn names_the_bad_field() {
        let err = decode(doc(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec:\n  ports:\n  - port: eighty\n",
        ))
        .expect_err("bad port");
        let text = err.to_string();
        assert!(text.starts_with("Service/n/s: field `spec.ports[0].port`"), "{text}");
    }

    #[test]
    fn rejects_unknown_fields() {
        let err = decode(doc(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  hostname: [a]\n",
        ))
        .expect_err("typo");
        assert_eq!(
            err.to_string(),
            "HTTPRoute/default/r: field `spec.hostname`: unknown field"
        );
    }

    #[test]
    fn decodes_reference_grants_of_either_version() {
        for version in ["v1beta1", "v1"] {
            let (key, resource) = decode(doc(&format!(
                "apiVersion: gateway.networking.k8s.io/{version}\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: backends}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}}]\n  to: [{{group: '', kind: Service}}]\n"
            )))
            .expect("valid")
            .expect("known kind");
            assert_eq!(key.to_string(), "ReferenceGrant/backends/g");
            let mut index = Index::default();
            index.apply(&Change::Upsert(key, resource));
            assert_eq!(index.reference_grants.len(), 1);
        }
    }

    #[test]
    fn skips_unknown_kinds_and_requires_names() {
        assert!(
            decode(doc("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\n"))
                .expect("ok")
                .is_none()
        );
        let err = decode(doc("apiVersion: v1\nkind: Service\nmetadata: {}\n")).expect_err("no name");
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }
}

//! The Kubernetes config source: one kube-rs watcher per kind (per namespace with
//! `--namespaces`), each with kube's default backoff, feeding one task that keeps what each
//! watcher holds ([`RelistState`]) and sends [`Batch`]es.
//!
//! Every kind is watched as a `DynamicObject` and decoded through serde into the type the
//! index holds: an object that does not decode is then one [`Problem`] (named by resource and
//! field, its last good version keeps serving) instead of a failed list that would stall the
//! whole kind. `metadata.managedFields` and `metadata.resourceVersion` are stripped on decode:
//! they are not input, and without them a relist compares equal to what we hold.
use std::{path::PathBuf, pin::pin};

use futures::StreamExt as _;
use gateway_api::apis::experimental::{gatewayclasses::GatewayClass, gateways::Gateway, httproutes::HttpRoute};
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Client, Config,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind},
    config::{InClusterError, InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::mpsc;

use super::{
    Batch,
    relist::{Decoded, Failure, Observed, RelistState, WatchId},
};
use crate::{
    config::KubeSpec,
    resources::{self, Kind, ResourceKey},
    shutdown::Shutdown,
};

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("cannot read kubeconfig {path}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot merge kubeconfig {path} into the ones before it")]
    MergeKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot use the kubeconfig")]
    UseKubeconfig(#[source] KubeconfigError),
    #[error("no Kubernetes config: not in a pod ({in_cluster}), and none found by inference")]
    NoConfig {
        in_cluster: Box<InClusterError>,
        #[source]
        source: Box<InferConfigError>,
    },
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client from `--kubeconfig` (files merged in order), else the in-cluster config, else
/// kube's inference (`~/.kube/config`).
pub async fn client(spec: &KubeSpec) -> Result<Client, KubeSourceError> {
    let config = match spec.kubeconfig.split_first() {
        Some((first, rest)) => {
            let mut merged = read_kubeconfig(first)?;
            for path in rest {
                merged = merged
                    .merge(read_kubeconfig(path)?)
                    .map_err(|source| KubeSourceError::MergeKubeconfig {
                        path: path.clone(),
                        source,
                    })?;
            }
            Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default())
                .await
                .map_err(KubeSourceError::UseKubeconfig)?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => Config::infer().await.map_err(|source| KubeSourceError::NoConfig {
                in_cluster: Box::new(in_cluster),
                source: Box::new(source),
            })?,
        },
    };
    tracing::info!(server = %config.cluster_url, "Kubernetes API server");
    Client::try_from(config).map_err(KubeSourceError::Client)
}

fn read_kubeconfig(path: &PathBuf) -> Result<Kubeconfig, KubeSourceError> {
    Kubeconfig::read_from(path).map_err(|source| KubeSourceError::ReadKubeconfig {
        path: path.clone(),
        source,
    })
}

/// Where each kind is served. ReferenceGrant is watched at v1beta1, which every Gateway API
/// release serves (v1 only from 1.5); both versions have the same schema.
pub fn api_resource(kind: Kind) -> ApiResource {
    let custom = |group: &str, version: &str, kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    };
    match kind {
        Kind::GatewayClass => ApiResource::erase::<GatewayClass>(&()),
        Kind::Gateway => ApiResource::erase::<Gateway>(&()),
        Kind::HttpRoute => ApiResource::erase::<HttpRoute>(&()),
        Kind::ReferenceGrant => custom(kind.group(), "v1beta1", "ReferenceGrant", "referencegrants"),
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        Kind::RouteOption => custom(kind.group(), "v1", "RouteOption", "routeoptions"),
        Kind::Upstream => custom(kind.group(), "v1", "Upstream", "upstreams"),
        Kind::Secret => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        Kind::Namespace => ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        Kind::ListenerSet => custom(kind.group(), "v1", "ListenerSet", "listenersets"),
        Kind::ConfigMap => ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        Kind::BackendTlsPolicy => custom(kind.group(), "v1", "BackendTLSPolicy", "backendtlspolicies"),
    }
}

/// One watcher: a kind, in one namespace or in all (`None`).
#[derive(Clone, Debug)]
struct Watch {
    kind: Kind,
    namespace: Option<String>,
}

impl Watch {
    fn label(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} in {namespace}", self.kind),
            None => self.kind.to_string(),
        }
    }
}

/// The watchers `kinds` need: cluster-scoped kinds once, namespaced kinds once per
/// namespace of `spec` (once in all when it names none).
fn watches(spec: &KubeSpec, kinds: &[Kind]) -> Vec<Watch> {
    let mut out = Vec::new();
    for &kind in kinds {
        if !kind.namespaced() || spec.namespaces.is_empty() {
            out.push(Watch { kind, namespace: None });
            continue;
        }
        for namespace in &spec.namespaces {
            out.push(Watch {
                kind,
                namespace: Some(namespace.clone()),
            });
        }
    }
    out
}

/// Starts the watchers and the task that turns their events into batches. Runs until
/// shutdown or until the receiver is dropped.
pub fn spawn_kube_source(
    client: Client,
    spec: &KubeSpec,
    kinds: &[Kind],
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) {
    let watches = watches(spec, kinds);
    let (events_tx, events) = mpsc::channel(1024);
    let mut config = watcher::Config::default();
    if let Some(selector) = &spec.label_selector {
        config = config.labels(selector);
    }
    for (id, watch) in watches.iter().enumerate() {
        let ar = api_resource(watch.kind);
        let api = match &watch.namespace {
            Some(namespace) => Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        };
        tokio::spawn(run_watcher(
            api,
            ar,
            watch.clone(),
            config.clone(),
            id,
            events_tx.clone(),
            shutdown.clone(),
        ));
    }
    let labels = watches.iter().map(Watch::label).collect();
    tokio::spawn(relay_batches(RelistState::new(labels), events, batches, shutdown));
}

/// Watcher events → batches, in order.
async fn relay_batches(
    mut state: RelistState,
    mut events: mpsc::Receiver<(WatchId, Observed)>,
    batches: mpsc::Sender<Batch>,
    shutdown: Shutdown,
) {
    loop {
        let (id, observed) = tokio::select! {
            _ = shutdown.wait() => return,
            event = events.recv() => match event { Some(event) => event, None => return },
        };
        let Some(mut batch) = state.observe(id, observed) else {
            continue;
        };
        // Events already queued (a burst of creates, a relist) go out in the same batch.
        while let Ok((id, observed)) = events.try_recv() {
            if let Some(more) = state.observe(id, observed) {
                batch.changes.extend(more.changes);
                batch.problems = more.problems;
                batch.initial |= more.initial;
            }
        }
        if batch.initial {
            tracing::info!(
                resources = batch.changes.len(),
                problems = batch.problems.len(),
                "listed every watched kind"
            );
        } else {
            tracing::debug!(
                changes = batch.changes.len(),
                problems = batch.problems.len(),
                "cluster changed"
            );
        }
        for problem in batch.problems.iter() {
            tracing::debug!(resource = ?problem.resource, error = %problem.message, "config problem");
        }
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

/// One kube watcher, its events decoded and sent to the relay. A failure is logged once
/// (until it changes or the watcher recovers); kube's backoff paces the retries.
async fn run_watcher(
    api: Api<DynamicObject>,
    ar: ApiResource,
    watch: Watch,
    config: watcher::Config,
    id: WatchId,
    events: mpsc::Sender<(WatchId, Observed)>,
    shutdown: Shutdown,
) {
    let mut stream = pin!(watcher(api, config).default_backoff());
    let mut failing: Option<String> = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.wait() => return,
            next = stream.next() => next,
        };
        let Some(next) = next else { return };
        let observed = match next {
            Ok(event) => {
                // `Init` comes before the list that may fail again: not yet a recovery.
                if !matches!(event, watcher::Event::Init) && failing.take().is_some() {
                    tracing::info!(watch = %watch.label(), "watch recovered");
                }
                observe(&ar, watch.kind, event)
            }
            Err(error) => {
                let failure = classify(&error);
                let message = crate::telemetry::error_chain(&error);
                if failing.as_ref() != Some(&message) {
                    tracing::warn!(watch = %watch.label(), ?failure, error = %message, "watch failed; retrying with backoff");
                } else {
                    tracing::debug!(watch = %watch.label(), error = %message, "watch failed again");
                }
                failing = Some(message.clone());
                Observed::Failed { failure, message }
            }
        };
        if events.send((id, observed)).await.is_err() {
            return;
        }
    }
}

fn observe(ar: &ApiResource, kind: Kind, event: watcher::Event<DynamicObject>) -> Observed {
    match event {
        watcher::Event::Init => Observed::Init,
        watcher::Event::InitApply(object) => Observed::InitApply(decode_object(ar, kind, object)),
        watcher::Event::InitDone => Observed::InitDone,
        watcher::Event::Apply(object) => Observed::Apply(decode_object(ar, kind, object)),
        watcher::Event::Delete(object) => Observed::Delete(key_of(kind, &object.metadata)),
    }
}

/// A 404 on the list: the API server does not serve this resource type (no CRD); a 403:
/// RBAC does not let us read it; anything else passes. By code: a 404 for an unknown
/// resource type comes as plain text (`404 page not found`), with no Status reason.
fn classify(error: &watcher::Error) -> Failure {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => match status.code {
            404 => Failure::Missing,
            403 => Failure::Forbidden,
            _ => Failure::Transient,
        },
        _ => Failure::Transient,
    }
}

pub fn key_of(kind: Kind, metadata: &ObjectMeta) -> ResourceKey {
    let namespace = if kind.namespaced() {
        metadata.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    ResourceKey {
        kind,
        namespace,
        name: metadata.name.clone().unwrap_or_default(),
    }
}

/// An object from the API server → the resource the index holds, or why not.
pub fn decode_object(ar: &ApiResource, kind: Kind, object: DynamicObject) -> Decoded {
    let key = key_of(kind, &object.metadata);
    let mut value = match serde_json::to_value(&object) {
        Ok(value) => value,
        Err(error) => return Decoded::Bad(key, format!("cannot re-encode the object: {error}")),
    };
    normalize(ar, kind, &mut value);
    match resources::decode_api_object(kind, value) {
        Ok(resource) => Decoded::Good(key, resource),
        Err(error) => Decoded::Bad(key, error.to_string()),
    }
}

/// Drops what is not input (managedFields, resourceVersion) and fills `apiVersion`/`kind`,
/// which list items may omit.
fn normalize(ar: &ApiResource, kind: Kind, value: &mut serde_json::Value) {
    let Some(object) = value.as_object_mut() else { return };
    if let Some(metadata) = object.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
        metadata.remove("managedFields");
        metadata.remove("resourceVersion");
    }
    let api_version = match kind {
        // Decoded into the v1 type (same schema).
        Kind::ReferenceGrant => format!("{}/v1", kind.group()),
        _ => ar.api_version.clone(),
    };
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), ar.kind.clone().into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resource;

    fn object(kind: Kind, json: serde_json::Value) -> Decoded {
        let object: DynamicObject = serde_json::from_value(json).expect("test object");
        decode_object(&api_resource(kind), kind, object)
    }

    #[test]
    fn decodes_a_route_option_without_volatile_fields() {
        let decoded = object(
            Kind::RouteOption,
            serde_json::json!({
                "apiVersion": "gateway.solo.io/v1", "kind": "RouteOption",
                "metadata": {"name": "opt", "namespace": "team", "resourceVersion": "42", "generation": 3,
                             "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
                "spec": {"options": {"timeout": "5s"}},
                "status": {"statuses": {}}
            }),
        );
        let Decoded::Good(key, Resource::RouteOption(option)) = decoded else {
            panic!("decoded: {decoded:?}")
        };
        assert_eq!(key.to_string(), "RouteOption/team/opt");
        assert_eq!(option.spec.options.timeout.as_deref(), Some("5s"));
        assert!(option.metadata.managed_fields.is_none());
        assert!(option.metadata.resource_version.is_none());
        assert_eq!(option.metadata.generation, Some(3));
    }

    #[test]
    fn a_bad_route_option_names_resource_and_field() {
        let decoded = object(
            Kind::RouteOption,
            serde_json::json!({
                "apiVersion": "gateway.solo.io/v1", "kind": "RouteOption",
                "metadata": {"name": "opt", "namespace": "team"},
                "spec": {"options": {"timeoutt": "5s"}}
            }),
        );
        let Decoded::Bad(key, message) = decoded else {
            panic!("decoded: {decoded:?}")
        };
        assert_eq!(key.to_string(), "RouteOption/team/opt");
        assert!(message.contains("spec.options"), "{message}");
        assert!(message.contains("timeoutt"), "{message}");
    }

    #[test]
    fn list_items_without_type_fields_decode() {
        let decoded = object(
            Kind::Service,
            serde_json::json!({
                "metadata": {"name": "echo", "namespace": "default"},
                "spec": {"ports": [{"port": 80}]}
            }),
        );
        assert!(matches!(decoded, Decoded::Good(_, Resource::Service(_))), "{decoded:?}");
        let grant = object(
            Kind::ReferenceGrant,
            serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "g", "namespace": "default"},
                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "a"}],
                         "to": [{"group": "", "kind": "Service"}]}
            }),
        );
        assert!(
            matches!(grant, Decoded::Good(_, Resource::ReferenceGrant(_))),
            "{grant:?}"
        );
    }

    #[test]
    fn watchers_per_namespace_for_namespaced_kinds_only() {
        let spec = KubeSpec {
            namespaces: vec!["a".into(), "b".into()],
            ..KubeSpec::default()
        };
        let labels: Vec<String> = watches(&spec, &[Kind::GatewayClass, Kind::HttpRoute])
            .iter()
            .map(Watch::label)
            .collect();
        assert_eq!(labels, ["GatewayClass", "HTTPRoute in a", "HTTPRoute in b"]);
        let all: Vec<String> = watches(&KubeSpec::default(), &[Kind::HttpRoute])
            .iter()
            .map(Watch::label)
            .collect();
        assert_eq!(all, ["HTTPRoute"]);
    }

    #[test]
    fn failures_by_status_code() {
        let list_failed = |code: u16, reason: &str| {
            let status = kube::core::Status::failure("x", reason).with_code(code).boxed();
            watcher::Error::InitialListFailed(kube::Error::Api(status))
        };
        // An unknown resource type answers plain text: no reason, only the code.
        assert_eq!(classify(&list_failed(404, "")), Failure::Missing);
        assert_eq!(classify(&list_failed(403, "Forbidden")), Failure::Forbidden);
        assert_eq!(classify(&list_failed(500, "InternalError")), Failure::Transient);
        assert_eq!(classify(&watcher::Error::NoResourceVersion), Failure::Transient);
    }
}

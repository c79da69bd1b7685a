//! Validation of configuration changes, shared by the 8443 admission webhook, the
//! directory-mode check after every batch and `gateway validate`.
//!
//! A change is applied to a copy of the index and translated with the gateway's own
//! translation; each Proxy it changes is dry-run by the controller's ValidationService
//! (port 9988) through a [`Validator`]. What the gateway sees itself is added: unresolved
//! references and unsupported listeners (warnings, from the status computed beside the
//! translation) and references a deletion would break (errors). Findings that were already
//! there before the change are not held against it.
pub mod background;
mod digests;
pub mod grpc;
#[cfg(test)]
pub mod testing;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    future::Future,
    sync::Arc,
};

use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, route::Action, route_action::Destination};
use serde::Serialize;

use crate::translate::{self, Options, Output, StatusReport};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `Kind/namespace/name` (`Kind/name` when cluster-scoped) of the resource it is about;
    /// empty when unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Where in the Proxy (`listener/<l>/vhost/<v>/route/<r>`), for the controller's findings.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn error(resource: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            resource: resource.into(),
            path: String::new(),
            message: message.into(),
        }
    }

    pub fn warning(resource: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(resource, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.resource.is_empty(), self.path.is_empty()) {
            (true, true) => f.write_str(&self.message),
            (true, false) => write!(f, "{}: {}", self.path, self.message),
            (false, true) => write!(f, "{}: {}", self.resource, self.message),
            (false, false) => write!(f, "{} ({}): {}", self.resource, self.path, self.message),
        }
    }
}

/// `Kind/namespace/name`, or `Kind/name` without a namespace.
pub fn resource_id(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    }
}

/// Gloo's validation options: what findings deny a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Report problems but allow every change (Gloo's `alwaysAccept`, default true).
    pub always_accept: bool,
    /// Warnings alone do not deny (Gloo's `allowWarnings`, default true).
    pub allow_warnings: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            always_accept: true,
            allow_warnings: true,
        }
    }
}

impl Policy {
    /// Whether these findings would deny a change if `always_accept` were false.
    pub fn would_deny(&self, findings: &[Finding]) -> bool {
        findings.iter().any(|f| f.is_error() || !self.allow_warnings)
    }

    /// Whether these findings deny a change.
    pub fn denies(&self, findings: &[Finding]) -> bool {
        !self.always_accept && self.would_deny(findings)
    }
}

/// A dry run: the Proxy as it would be and the Upstreams it would use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DryRun {
    pub proxy: pb::Proxy,
    /// Upstreams to add or replace in the controller's current set for this dry run.
    pub upstreams: Vec<pb::Upstream>,
    /// (namespace, name) of Upstreams the change removes.
    pub deleted_upstreams: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("invalid validation service address {addr:?} (--validation-addr)")]
    Address {
        addr: String,
        #[source]
        source: kgw_common::tls::client::ClientError,
    },
    #[error("the controller's validation service at {addr} is unreachable: {detail}")]
    Unreachable {
        addr: String,
        /// The root cause, e.g. `Connection refused (os error 111)`.
        detail: String,
        #[source]
        source: tonic::Status,
    },
    #[error("the controller's validation service at {addr} failed ({:?}): {}", source.code(), source.message())]
    Failed {
        addr: String,
        #[source]
        source: tonic::Status,
    },
}

/// What the controller says of the Proxy it serves ([`Validator::served`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// It serves the state asked about: its translation found these.
    Findings(Vec<Finding>),
    /// It holds another state, or has not translated it yet.
    NotYet,
    /// It cannot say (a controller without `ServedProblems`): dry-run the Proxy instead.
    Unsupported,
}

/// Dry-runs a Proxy. The real one is [`grpc::GrpcValidator`] (the controller's 9988); tests
/// use fakes.
pub trait Validator: Send + Sync + 'static {
    fn validate(&self, dry_run: DryRun) -> impl Future<Output = Result<Vec<Finding>, ValidatorError>> + Send;

    /// The controller's findings on the Proxy it serves under `key` (a `kgw_proxies` key),
    /// if what it holds is `digest` (`kgw_common::proxy_parts::digest`): no Proxy is sent.
    fn served(&self, key: &str, digest: &str) -> impl Future<Output = Result<Served, ValidatorError>> + Send {
        let _ = (key, digest);
        async { Ok(Served::Unsupported) }
    }
}

/// The state a change is checked against, translated once (a burst of reviews shares it).
#[derive(Debug)]
pub struct Base {
    pub index: Arc<Index>,
    pub output: Output,
}

impl Base {
    pub fn new(index: Arc<Index>, options: &Options) -> Self {
        let output = translate::translate(&index, options);
        Self { index, output }
    }
}

/// The findings `candidate` (the base index with a change applied) introduces: the
/// gateway's own warnings that are new, and the controller's findings on every Proxy the
/// change touches, minus those that Proxy already had.
pub async fn check_change<V: Validator>(
    validator: &V,
    options: &Options,
    base: &Base,
    candidate: &Index,
) -> Result<Vec<Finding>, ValidatorError> {
    let output = translate::translate(candidate, options);
    let before = status_findings(&base.output.status);
    let mut findings: BTreeSet<Finding> = status_findings(&output.status)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    let changed: Vec<(&String, &pb::Proxy)> = output
        .proxies
        .iter()
        .filter(|(key, proxy)| base.output.proxies.get(*key) != Some(*proxy))
        .collect();
    if !changed.is_empty() {
        let upstreams_after = kgw_common::upstreams::upstreams(candidate);
        let upstreams_before = kgw_common::upstreams::upstreams(&base.index);
        let deleted: Vec<(String, String)> = upstreams_before
            .iter()
            .filter(|(key, _)| !upstreams_after.contains_key(*key))
            .filter_map(|(_, u)| u.metadata.as_ref().map(|m| (m.namespace.clone(), m.name.clone())))
            .collect();
        let runs = changed.into_iter().map(|(key, proxy)| {
            let after = DryRun {
                proxy: proxy.clone(),
                upstreams: referenced_upstreams(proxy, &upstreams_after),
                deleted_upstreams: deleted.clone(),
            };
            let before = base.output.proxies.get(key).map(|proxy| DryRun {
                proxy: proxy.clone(),
                upstreams: referenced_upstreams(proxy, &upstreams_before),
                deleted_upstreams: Vec::new(),
            });
            new_findings(validator, after, before)
        });
        for result in futures::future::join_all(runs).await {
            findings.extend(result?);
        }
    }
    Ok(findings.into_iter().collect())
}

/// Everything wrong with `index` as it is (directory mode and the CLI): the gateway's own
/// warnings and the controller's findings on every Proxy.
pub async fn check_all<V: Validator>(
    validator: &V,
    options: &Options,
    index: &Index,
) -> Result<(Output, Vec<Finding>), ValidatorError> {
    let output = translate::translate(index, options);
    let own = status_findings(&output.status);
    let findings = findings_of(validator, index, own, output.proxies.values().cloned()).await?;
    Ok((output, findings))
}

/// [`check_all`]'s findings alone, for the background validation (beside the actor's
/// state, so it holds as little as it can while it waits for the controller): the status
/// is let go once its findings are taken, and the Proxies are sent as they are, not copied.
pub async fn check_all_findings<V: Validator>(
    validator: &V,
    options: &Options,
    index: &Index,
) -> Result<Vec<Finding>, ValidatorError> {
    let Output { proxies, status } = translate::translate(index, options);
    let own = status_findings(&status);
    drop(status);
    findings_of(validator, index, own, proxies.into_values()).await
}

/// [`check_all_findings`]'s findings without translating or sending a Proxy: the gateway's
/// `own` (from the status of its last translation) and the controller's on each Proxy it
/// serves, named by `digests` (of the values the gateway wrote, by key). When the
/// controller does not serve one of them as written (yet), or cannot say, that answer.
pub async fn served_findings<V: Validator>(
    validator: &V,
    own: BTreeSet<Finding>,
    digests: &BTreeMap<String, String>,
) -> Result<Served, ValidatorError> {
    let mut findings = own;
    let asked = digests.iter().map(|(key, digest)| validator.served(key, digest));
    for answer in futures::future::join_all(asked).await {
        match answer? {
            Served::Findings(found) => findings.extend(found),
            other => return Ok(other),
        }
    }
    Ok(Served::Findings(findings.into_iter().collect()))
}

/// `own` findings and the controller's on each of `proxies`.
async fn findings_of<V: Validator>(
    validator: &V,
    index: &Index,
    mut own: BTreeSet<Finding>,
    proxies: impl Iterator<Item = pb::Proxy>,
) -> Result<Vec<Finding>, ValidatorError> {
    let upstreams = kgw_common::upstreams::upstreams(index);
    let dry_runs: Vec<DryRun> = proxies
        .map(|proxy| DryRun {
            upstreams: referenced_upstreams(&proxy, &upstreams),
            proxy,
            deleted_upstreams: Vec::new(),
        })
        .collect();
    drop(upstreams);
    let runs = dry_runs.into_iter().map(|dry_run| validator.validate(dry_run));
    for result in futures::future::join_all(runs).await {
        own.extend(result?);
    }
    Ok(own.into_iter().collect())
}

/// The controller's findings on `after` that `before` (the Proxy as it is) does not have.
async fn new_findings<V: Validator>(
    validator: &V,
    after: DryRun,
    before: Option<DryRun>,
) -> Result<Vec<Finding>, ValidatorError> {
    let found = validator.validate(after).await?;
    let Some(before) = before.filter(|_| !found.is_empty()) else {
        return Ok(found);
    };
    let existing: BTreeSet<Finding> = validator.validate(before).await?.into_iter().collect();
    Ok(found.into_iter().filter(|f| !existing.contains(f)).collect())
}

/// The Upstreams (from `all`, by KV key) that `proxy`'s routes send to.
fn referenced_upstreams(proxy: &pb::Proxy, all: &BTreeMap<String, pb::Upstream>) -> Vec<pb::Upstream> {
    let mut keys = BTreeSet::new();
    let http = proxy.listeners.iter().filter_map(|l| match &l.listener_type {
        Some(pb::listener::ListenerType::HttpListener(http)) => Some(http),
        _ => None,
    });
    for route in http.flat_map(|h| &h.virtual_hosts).flat_map(|v| &v.routes) {
        let Some(Action::RouteAction(action)) = &route.action else {
            continue;
        };
        let destinations: Vec<&pb::Destination> = match &action.destination {
            Some(Destination::Single(d)) => vec![d],
            Some(Destination::Multi(m)) => m.destinations.iter().filter_map(|w| w.destination.as_ref()).collect(),
            None => Vec::new(),
        };
        for upstream in destinations.into_iter().filter_map(|d| d.upstream.as_ref()) {
            if upstream.kind == "Upstream" {
                keys.insert(kgw_proto::nats::key(&upstream.namespace, &upstream.name));
            }
        }
    }
    keys.iter().filter_map(|key| all.get(key).cloned()).collect()
}

/// The gateway's own findings: every condition of the translation's status that is False
/// (an unresolved backend, a route no listener accepts, an unsupported listener), as
/// warnings on the resource it is about.
pub fn status_findings(status: &StatusReport) -> BTreeSet<Finding> {
    let mut out = BTreeSet::new();
    let id = |kind: &str, key: &str| {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        resource_id(kind, namespace, name)
    };
    for (key, parents) in &status.http_routes {
        for parent in parents {
            for c in parent.conditions.iter().filter(|c| c.status == "False") {
                out.insert(Finding::warning(
                    id("HTTPRoute", key),
                    format!(
                        "parent Gateway {}: {} is False ({}): {}",
                        parent.parent_ref, c.type_, c.reason, c.message
                    ),
                ));
            }
        }
    }
    for (key, gateway) in &status.gateways {
        for c in gateway.conditions.iter().filter(|c| c.status == "False") {
            out.insert(Finding::warning(
                id("Gateway", key),
                format!("{} is False ({}): {}", c.type_, c.reason, c.message),
            ));
        }
        for (listener, status) in &gateway.listeners {
            // Programmed=False follows from any other False condition: say only the cause.
            let failed: Vec<_> = status.conditions.iter().filter(|c| c.status == "False").collect();
            let causes = failed.iter().filter(|c| c.type_ != "Programmed").count();
            for c in failed.into_iter().filter(|c| causes == 0 || c.type_ != "Programmed") {
                let message = if c.message.is_empty() {
                    format!("listener {listener}: {} is False ({})", c.type_, c.reason)
                } else {
                    format!(
                        "listener {listener}: {} is False ({}): {}",
                        c.type_, c.reason, c.message
                    )
                };
                out.insert(Finding::warning(id("Gateway", key), message));
            }
        }
    }
    for (name, conditions) in &status.gateway_classes {
        for c in conditions.iter().filter(|c| c.status == "False") {
            out.insert(Finding::warning(
                resource_id("GatewayClass", "", name),
                format!("{} is False ({}): {}", c.type_, c.reason, c.message),
            ));
        }
    }
    out
}

/// Errors for deleting `kind` `namespace/name` (API group `group`) while routes or Gateways
/// in `index` still use it: Services (backendRefs and mirror backendRefs), Upstreams
/// (backendRefs of kind Upstream) and Secrets (Gateway listeners' certificateRefs).
pub fn deletion_findings(index: &Index, group: &str, kind: &str, namespace: &str, name: &str) -> Vec<Finding> {
    let target = resource_id(kind, namespace, name);
    let mut users = BTreeSet::new();
    let core = |g: Option<&str>| g.is_none_or(str::is_empty);
    match (group, kind) {
        ("", "Service") | (_, "Upstream") => {
            let wanted = |ref_group: Option<&str>, ref_kind: Option<&str>| match kind {
                "Service" => core(ref_group) && ref_kind.is_none_or(|k| k == "Service"),
                _ => ref_kind == Some("Upstream"),
            };
            for ((route_ns, route_name), route) in &index.http_routes {
                for rule in route.spec.rules.iter().flatten() {
                    let backends = rule
                        .backend_refs
                        .iter()
                        .flatten()
                        .map(|b| (b.group.as_deref(), b.kind.as_deref(), b.namespace.as_deref(), &b.name));
                    let mirrors = rule
                        .filters
                        .iter()
                        .flatten()
                        .filter_map(|f| f.request_mirror.as_ref())
                        .map(|m| &m.backend_ref)
                        .map(|b| (b.group.as_deref(), b.kind.as_deref(), b.namespace.as_deref(), &b.name));
                    let uses = backends
                        .chain(mirrors)
                        .any(|(g, k, ns, n)| wanted(g, k) && n == name && ns.unwrap_or(route_ns) == namespace);
                    if uses {
                        users.insert(format!("HTTPRoute {route_ns}/{route_name}"));
                    }
                }
            }
        }
        ("", "Secret") => {
            for ((gw_ns, gw_name), gateway) in &index.gateways {
                for listener in &gateway.spec.listeners {
                    let refs = listener.tls.iter().flat_map(|t| t.certificate_refs.iter().flatten());
                    let uses = refs.into_iter().any(|r| {
                        core(r.group.as_deref())
                            && r.kind.as_deref().is_none_or(|k| k == "Secret")
                            && r.name == name
                            && r.namespace.as_deref().unwrap_or(gw_ns) == namespace
                    });
                    if uses {
                        users.insert(format!("Gateway {gw_ns}/{gw_name} (listener {})", listener.name));
                    }
                }
            }
        }
        _ => {}
    }
    users
        .into_iter()
        .map(|user| {
            Finding::error(
                target.clone(),
                format!("{kind} {namespace}/{name} is still referenced by {user}"),
            )
        })
        .collect()
}

/// Removes the resource `group`/`kind` `namespace/name` from `index`. False for kinds the
/// index does not hold.
pub fn remove(index: &mut Index, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
    let nn = (namespace.to_string(), name.to_string());
    match (group, kind) {
        ("gateway.networking.k8s.io", "GatewayClass") => drop(index.gateway_classes.remove(name)),
        ("gateway.networking.k8s.io", "Gateway") => drop(index.gateways.remove(&nn)),
        ("gateway.networking.k8s.io", "HTTPRoute") => drop(index.http_routes.remove(&nn)),
        ("", "Service") => drop(index.services.remove(&nn)),
        ("discovery.k8s.io", "EndpointSlice") => drop(index.endpoint_slices.remove(&nn)),
        ("gateway.solo.io", "RouteOption") => drop(index.route_options.remove(&nn)),
        ("gloo.solo.io", "Upstream") => drop(index.upstreams.remove(&nn)),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests;

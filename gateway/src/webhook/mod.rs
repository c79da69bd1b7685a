//! The validating admission webhook (port 8443, as Gloo's `gateway` pod): answers
//! `admission.k8s.io/v1` AdmissionReviews by applying the change to a copy of the
//! gateway's current index, translating, and asking the controller to dry-run every Proxy
//! the change touches (see [`crate::validation`]). Served over HTTPS by [`server`].
pub mod args;
pub mod review;
pub mod server;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use kgw_common::{
    resources::{self, Change, DecodeError, Index},
    shutdown::Shutdown,
    tls::TlsMode,
};
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    translate::Options,
    validation::{
        self, Base, Finding, Policy, Validator, ValidatorError,
        background::{self, Reported},
        grpc::GrpcValidator,
        resource_id,
    },
};
use review::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation, ResponseStatus};

/// Annotations that exempt a resource from validation (kgateway's and Gloo's).
pub const SKIP_ANNOTATIONS: [&str; 2] = [
    "gateway.kgateway.dev/skip-validation",
    "gateway.solo.io/skip-validation",
];

/// How long a review waits for the gateway's first full read of its config.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// The gateway process's validation settings.
#[derive(Clone, Debug)]
pub struct ValidationConfig {
    /// The controller's ValidationService (`host:port`).
    pub validation_addr: String,
    pub policy: Policy,
    /// Where the webhook listens; `None`: no webhook.
    pub webhook_addr: Option<SocketAddr>,
    /// PEM certificate chain and key; without them a self-signed certificate is generated.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Validate the whole state after every config change, in the background.
    pub background: bool,
    /// How the validation client reaches the controller (mTLS, or plain text).
    pub tls: TlsMode,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            validation_addr: validation::grpc::DEFAULT_ADDR.into(),
            policy: Policy::default(),
            webhook_addr: None,
            cert: None,
            key: None,
            background: true,
            tls: TlsMode::Insecure,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the validation client")]
    Validator(#[from] ValidatorError),
    #[error("cannot start the admission webhook")]
    Server(#[from] server::WebhookError),
}

/// The webhook as started.
#[derive(Clone, Debug, Default)]
pub struct Started {
    /// The address it listens on.
    pub addr: Option<SocketAddr>,
    /// The certificate it presents.
    pub certificate: Option<CertificateDer<'static>>,
}

/// Starts the webhook (when configured) and the background validation (when asked), both
/// over the actor's `outputs` (its index, status and written Proxies). `report` receives
/// the background validation's findings.
pub async fn start(
    config: &ValidationConfig,
    options: Options,
    outputs: background::Outputs,
    synced: watch::Receiver<bool>,
    report: impl Fn(Vec<Reported>) + Send + 'static,
    shutdown: Shutdown,
) -> Result<Started, StartError> {
    let validator = GrpcValidator::new(&config.validation_addr, REVIEW_TIMEOUT, &config.tls)?;
    let mut started = Started::default();
    if let Some(addr) = config.webhook_addr {
        let tls = server::Tls::load(config.cert.as_deref(), config.key.as_deref(), addr)?;
        let listener = server::bind(addr, &tls).await?;
        let bound = listener.local_addr().unwrap_or(addr);
        let webhook = Webhook::new(
            validator.clone(),
            options.clone(),
            config.policy,
            outputs.index.clone(),
            synced.clone(),
        );
        server::spawn(listener, Arc::new(webhook), shutdown.clone());
        tracing::info!(
            addr = %bound,
            validation_addr = %config.validation_addr,
            always_accept = config.policy.always_accept,
            allow_warnings = config.policy.allow_warnings,
            generated_certificate = config.cert.is_none(),
            "admission webhook listening (POST /validation)"
        );
        started.addr = Some(bound);
        started.certificate = Some(tls.certificate);
    }
    if config.background {
        background::spawn(validator, options, config.policy, outputs, synced, report, shutdown);
    }
    Ok(started)
}

/// How long one dry run may take (the API server gives a webhook 10 s by default, and a
/// review may need two dry runs).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(4);

/// What a review found, before the policy decides.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    /// Said to the client as warnings; never deny (skips, kinds not validated).
    pub notes: Vec<String>,
    /// The controller could not be asked: deny with 503 rather than 422.
    pub unavailable: bool,
}

/// The webhook's state: the validator, options, and the actor's current index.
pub struct Webhook<V> {
    validator: V,
    options: Options,
    policy: Policy,
    index: watch::Receiver<Arc<Index>>,
    synced: watch::Receiver<bool>,
    /// The current index translated once, shared by a burst of reviews.
    base: std::sync::Mutex<Option<Arc<Base>>>,
}

impl<V: Validator> Webhook<V> {
    pub fn new(
        validator: V,
        options: Options,
        policy: Policy,
        index: watch::Receiver<Arc<Index>>,
        synced: watch::Receiver<bool>,
    ) -> Self {
        Self {
            validator,
            options,
            policy,
            index,
            synced,
            base: std::sync::Mutex::new(None),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Answers one AdmissionReview: the response carries the request's uid.
    pub async fn review(&self, review: AdmissionReview) -> AdmissionReview {
        let Some(request) = review.request else {
            return AdmissionReview::answer(AdmissionResponse {
                allowed: false,
                status: Some(ResponseStatus::invalid(400, "AdmissionReview has no request")),
                ..Default::default()
            });
        };
        let verdict = self.decide(&request).await;
        let response = self.respond(&request, verdict);
        AdmissionReview::answer(response)
    }

    /// Applies the policy to a verdict.
    pub fn respond(&self, request: &AdmissionRequest, verdict: Verdict) -> AdmissionResponse {
        let denied = self.policy.denies(&verdict.findings);
        let what = request.describe();
        let errors = verdict.findings.iter().filter(|f| f.is_error()).count();
        let warnings = verdict.findings.len() - errors;
        tracing::info!(
            uid = %request.uid,
            operation = ?request.operation,
            resource = %what,
            dry_run = request.dry_run.unwrap_or(false),
            allowed = !denied,
            errors,
            warnings,
            "admission review"
        );
        for finding in &verdict.findings {
            tracing::debug!(uid = %request.uid, severity = ?finding.severity, %finding, "admission finding");
        }
        let mut messages: Vec<String> = verdict.notes;
        let status = if denied {
            let shown: Vec<String> = verdict.findings.iter().map(ToString::to_string).collect();
            messages.extend(
                verdict
                    .findings
                    .iter()
                    .filter(|f| !f.is_error())
                    .map(|f| format!("warning: {f}")),
            );
            let counted = match (errors, warnings) {
                (0, w) => format!("{w} warning(s) (allowWarnings is false)"),
                (e, 0) => format!("{e} error(s)"),
                (e, w) => format!("{e} error(s), {w} warning(s)"),
            };
            let message = format!("{what} denied by kgw validation: {counted}: {}", shown.join("; "));
            Some(if verdict.unavailable {
                ResponseStatus::new(503, "ServiceUnavailable", message)
            } else {
                ResponseStatus::invalid(422, message)
            })
        } else {
            messages.extend(verdict.findings.iter().map(|f| match f.severity {
                validation::Severity::Error => format!("error (allowed: alwaysAccept is true): {f}"),
                validation::Severity::Warning => format!("warning: {f}"),
            }));
            None
        };
        AdmissionResponse {
            uid: request.uid.clone(),
            allowed: !denied,
            status,
            warnings: messages,
        }
    }

    /// Everything the change in `request` would introduce.
    pub async fn decide(&self, request: &AdmissionRequest) -> Verdict {
        let mut verdict = Verdict::default();
        if request.operation == Operation::Connect {
            verdict.notes.push("CONNECT requests are not validated".into());
            return verdict;
        }
        if request.sub_resource.as_deref() == Some("status") {
            return verdict;
        }
        let object = request.object.as_ref().filter(|o| !o.is_null());
        let old = request.old_object.as_ref().filter(|o| !o.is_null());
        if request.operation == Operation::Delete {
            if old.is_some_and(skipped) {
                verdict.notes.push(skip_note(&request.describe()));
                return verdict;
            }
        } else {
            let Some(object) = object else {
                verdict
                    .findings
                    .push(Finding::error(request.describe(), "the request carries no object"));
                return verdict;
            };
            if skipped(object) {
                verdict.notes.push(skip_note(&request.describe()));
                return verdict;
            }
            if request.operation == Operation::Update && old.is_some_and(|old| status_only(object, old)) {
                return verdict;
            }
        }
        let base = match self.base().await {
            Ok(base) => base,
            Err(finding) => {
                verdict.unavailable = true;
                verdict.findings.push(finding);
                return verdict;
            }
        };
        let mut candidate = (*base.index).clone();
        let changed = match (request.operation, object) {
            (Operation::Delete, _) => self.apply_delete(request, &base.index, &mut candidate, &mut verdict),
            (_, Some(object)) => apply_objects(request, object, &mut candidate, &mut verdict),
            (_, None) => false,
        };
        if changed {
            match validation::check_change(&self.validator, &self.options, &base, &candidate).await {
                Ok(findings) => verdict.findings.extend(findings),
                Err(error) => {
                    verdict.unavailable = matches!(error, ValidatorError::Unreachable { .. });
                    tracing::warn!(uid = %request.uid, %error, "cannot validate against the controller");
                    verdict
                        .findings
                        .push(Finding::error(request.describe(), error.to_string()));
                }
            }
        }
        verdict.findings.sort();
        verdict.findings.dedup();
        verdict
    }

    /// The deleted resource comes out of `candidate`; deleting what routes or Gateways
    /// still use is an error. True when the index changed.
    fn apply_delete(
        &self,
        request: &AdmissionRequest,
        base: &Index,
        candidate: &mut Index,
        verdict: &mut Verdict,
    ) -> bool {
        let (group, kind) = (request.kind.group.as_str(), request.kind.kind.as_str());
        let namespace = request.namespace.as_str();
        let name = request.name.as_str();
        verdict
            .findings
            .extend(validation::deletion_findings(base, group, kind, namespace, name));
        let held = validation::remove(candidate, group, kind, namespace, name);
        if !held && !matches!(kind, "Upstream" | "Secret") {
            verdict.notes.push(not_validated(kind));
        }
        held
    }

    /// The index as of now, translated (cached per published index).
    async fn base(&self) -> Result<Arc<Base>, Finding> {
        let mut synced = self.synced.clone();
        let ready = tokio::time::timeout(SYNC_WAIT, synced.wait_for(|s| *s)).await;
        if !matches!(ready, Ok(Ok(_))) {
            return Err(Finding::error(
                "",
                "the gateway has not read its configuration yet; try again in a few seconds",
            ));
        }
        let index = self.index.borrow().clone();
        let mut cached = self.base.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(base) = cached.as_ref().filter(|b| Arc::ptr_eq(&b.index, &index)) {
            return Ok(base.clone());
        }
        let base = Arc::new(Base::new(index, &self.options));
        *cached = Some(base.clone());
        Ok(base)
    }
}

/// Decodes the object (each item of a List) and applies it to `candidate`. Decode errors
/// name the resource and the field. True when the index changed. Public for the fuzz
/// target `admission_review`: this is the decoding of what the API server sends.
pub fn apply_objects(request: &AdmissionRequest, object: &Value, candidate: &mut Index, verdict: &mut Verdict) -> bool {
    let items: Vec<&Value> = match list_items(object) {
        Some(items) => items.iter().collect(),
        None => vec![object],
    };
    let mut changed = false;
    for item in items {
        let id = describe(item);
        if skipped(item) {
            verdict.notes.push(skip_note(&id));
            continue;
        }
        match decode(item, &request.namespace) {
            Ok(Some((key, resource))) => {
                candidate.apply(&Change::Upsert(key, resource));
                changed = true;
            }
            Ok(None) => verdict
                .notes
                .push(not_validated(item.get("kind").and_then(Value::as_str).unwrap_or("?"))),
            Err(error) => verdict.findings.push(decode_finding(&error)),
        }
    }
    changed
}

/// The items of a `*List` object.
fn list_items(object: &Value) -> Option<&Vec<Value>> {
    let kind = object.get("kind").and_then(Value::as_str)?;
    if !kind.ends_with("List") {
        return None;
    }
    object.get("items").and_then(Value::as_array)
}

/// Decodes one object as the config source does. `status` and `managedFields` are left
/// out: the API server owns them and they are not ours to validate. The namespace
/// defaults to the request's.
fn decode(
    object: &Value,
    namespace: &str,
) -> Result<Option<(resources::ResourceKey, resources::Resource)>, DecodeError> {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            if !namespace.is_empty() && !meta.contains_key("namespace") {
                meta.insert("namespace".into(), namespace.into());
            }
            // CREATE with generateName: the API server names the object after admission.
            if !meta.contains_key("name")
                && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
            {
                let name = format!("{prefix}generated");
                meta.insert("name".into(), name.into());
            }
        }
    }
    let value = serde_yaml::to_value(&object).map_err(|e| DecodeError::Field {
        kind: object.get("kind").and_then(Value::as_str).unwrap_or_default().into(),
        namespace: namespace.into(),
        name: String::new(),
        field: String::new(),
        message: e.to_string(),
    })?;
    resources::decode(value)
}

/// A decode error as a finding on the resource it names.
pub fn decode_finding(error: &DecodeError) -> Finding {
    match error {
        DecodeError::Field {
            kind,
            namespace,
            name,
            field,
            message,
        } if field.is_empty() => Finding::error(resource_id(kind, namespace, name), message.clone()),
        DecodeError::Field {
            kind,
            namespace,
            name,
            field,
            message,
        } => Finding::error(
            resource_id(kind, namespace, name),
            format!("field `{field}`: {message}"),
        ),
        DecodeError::Missing(_) => Finding::error("", error.to_string()),
    }
}

/// Whether the object carries a skip-validation annotation set to "true".
fn skipped(object: &Value) -> bool {
    let annotations = object.get("metadata").and_then(|m| m.get("annotations"));
    SKIP_ANNOTATIONS
        .iter()
        .any(|key| annotations.and_then(|a| a.get(key)).and_then(Value::as_str) == Some("true"))
}

fn skip_note(what: &str) -> String {
    format!("{what}: validation skipped ({} is \"true\")", SKIP_ANNOTATIONS[0])
}

fn not_validated(kind: &str) -> String {
    format!("kind {kind} is not validated by kgw yet; allowed")
}

/// True when `new` and `old` differ only in status and bookkeeping metadata
/// (resourceVersion, managedFields, generation).
fn status_only(new: &Value, old: &Value) -> bool {
    fn strip(value: &Value) -> Value {
        let mut value = value.clone();
        if let Some(map) = value.as_object_mut() {
            map.remove("status");
            if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                for key in ["resourceVersion", "managedFields", "generation"] {
                    meta.remove(key);
                }
            }
        }
        value
    }
    strip(new) == strip(old)
}

/// `Kind/namespace/name` of an object, from its own fields.
fn describe(object: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let meta = object.get("metadata");
    resource_id(
        &text(object.get("kind")),
        &text(meta.and_then(|m| m.get("namespace"))),
        &text(meta.and_then(|m| m.get("name"))),
    )
}

#[cfg(test)]
mod tests;

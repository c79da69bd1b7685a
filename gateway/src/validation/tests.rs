use std::sync::Arc;

use kgw_common::resources::{Change, Index, decode};

use super::{
    testing::{BASE, FakeValidator, ServingValidator, index},
    *,
};

fn with(base: &Index, yaml: &str) -> Index {
    let mut candidate = base.clone();
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    let (key, resource) = decode(value).expect("valid").expect("known kind");
    candidate.apply(&Change::Upsert(key, resource));
    candidate
}

fn route(name: &str, path: &str, kind: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  rules:
  - matches: [{{path: {{type: {kind}, value: '{path}'}}}}]
    backendRefs: [{{name: {service}, port: 80}}]
"
    )
}

#[tokio::test]
async fn a_valid_route_has_no_findings_and_carries_its_upstreams() {
    let base = Base::new(Arc::new(index(BASE)), &Options::default());
    let candidate = with(&base.index, &route("new", "/new", "PathPrefix", "echo"));
    let fake = FakeValidator::default();
    let findings = check_change(&fake, &Options::default(), &base, &candidate)
        .await
        .expect("validated");
    assert_eq!(findings, []);
    assert_eq!(fake.calls(), 1, "one changed Proxy, no findings: no second dry run");
}

#[tokio::test]
async fn controller_errors_name_the_route_and_path() {
    let base = Base::new(Arc::new(index(BASE)), &Options::default());
    let candidate = with(&base.index, &route("bad", "/([", "RegularExpression", "echo"));
    let findings = check_change(&FakeValidator::default(), &Options::default(), &base, &candidate)
        .await
        .expect("validated");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Error);
    assert_eq!(findings[0].resource, "HTTPRoute/default/bad");
    assert!(
        findings[0].path.contains("route/default/bad/rule/0/match/0"),
        "{}",
        findings[0].path
    );
    assert!(findings[0].message.contains("invalid regex"), "{}", findings[0].message);
}

#[tokio::test]
async fn a_missing_backend_is_a_gateway_warning() {
    let base = Base::new(Arc::new(index(BASE)), &Options::default());
    let candidate = with(&base.index, &route("lost", "/lost", "PathPrefix", "nope"));
    let findings = check_change(&FakeValidator::default(), &Options::default(), &base, &candidate)
        .await
        .expect("validated");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Warning);
    assert_eq!(findings[0].resource, "HTTPRoute/default/lost");
    assert!(
        findings[0].message.contains("BackendNotFound")
            && findings[0].message.contains("Service default/nope not found"),
        "{}",
        findings[0].message
    );
}

#[tokio::test]
async fn problems_that_were_already_there_are_not_held_against_a_change() {
    let broken = format!("{BASE}---\n{}", route("old-bad", "/([", "RegularExpression", "echo"));
    let base = Base::new(Arc::new(index(&broken)), &Options::default());
    let fake = FakeValidator::default();
    let candidate = with(&base.index, &route("new", "/new", "PathPrefix", "echo"));
    let findings = check_change(&fake, &Options::default(), &base, &candidate)
        .await
        .expect("validated");
    assert_eq!(findings, [], "the old route's error is not the new route's");
    assert_eq!(fake.calls(), 2, "after, then before");
    // check_all reports everything.
    let (_, all) = check_all(&fake, &Options::default(), &base.index)
        .await
        .expect("validated");
    assert!(
        all.iter()
            .any(|f| f.is_error() && f.resource == "HTTPRoute/default/old-bad"),
        "{all:?}"
    );
}

#[tokio::test]
async fn an_unchanged_proxy_is_not_dry_run() {
    let base = Base::new(Arc::new(index(BASE)), &Options::default());
    // A route for another Gateway: no Proxy of ours changes.
    let other = route("elsewhere", "/x", "PathPrefix", "echo").replace("name: gw,", "name: other-gw,");
    let candidate = with(&base.index, &other);
    let fake = FakeValidator::default();
    let findings = check_change(&fake, &Options::default(), &base, &candidate)
        .await
        .expect("validated");
    assert_eq!(findings, []);
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn an_unreachable_controller_is_an_error() {
    let base = Base::new(Arc::new(index(BASE)), &Options::default());
    let candidate = with(&base.index, &route("new", "/new", "PathPrefix", "echo"));
    let error = check_change(&FakeValidator::down(), &Options::default(), &base, &candidate)
        .await
        .expect_err("down");
    assert!(error.to_string().contains("unreachable"), "{error}");
}

#[test]
fn deleting_what_is_used_is_an_error() {
    let index = index(BASE);
    let used = deletion_findings(&index, "", "Service", "default", "echo");
    assert_eq!(used.len(), 1);
    assert_eq!(
        used[0].to_string(),
        "Service/default/echo: Service default/echo is still referenced by HTTPRoute default/existing"
    );
    assert_eq!(deletion_findings(&index, "", "Service", "default", "unused"), []);
    assert_eq!(deletion_findings(&index, "", "Service", "other", "echo"), []);
    let secret = deletion_findings(&index, "", "Secret", "default", "tls");
    assert_eq!(secret.len(), 1);
    assert!(
        secret[0]
            .message
            .contains("referenced by Gateway default/gw (listener https)"),
        "{}",
        secret[0].message
    );
}

#[test]
fn policy() {
    let error = [Finding::error("x", "e")];
    let warning = [Finding::warning("x", "w")];
    let strict = Policy {
        always_accept: false,
        allow_warnings: false,
    };
    let lenient = Policy {
        always_accept: false,
        allow_warnings: true,
    };
    assert!(strict.denies(&error) && strict.denies(&warning) && !strict.denies(&[]));
    assert!(lenient.denies(&error) && !lenient.denies(&warning));
    assert!(!Policy::default().denies(&error), "alwaysAccept allows everything");
    assert!(Policy::default().would_deny(&error));
}

#[tokio::test]
async fn background_validation_reports_on_every_change() {
    let actor = ActorOutputs::new(&index(BASE));
    // The fake cannot say what it serves: each check dry-runs the index.
    let (mut reports, stop) = start_checks(FakeValidator::default(), &actor);
    let first = reports.recv().await.expect("first report");
    assert_eq!(first.len(), 1, "the HTTPS listener warning: {first:?}");
    assert!(!first[0].would_deny, "a warning, and allowWarnings");
    let broken = with(&index(BASE), &route("bad", "/([", "RegularExpression", "echo"));
    actor.send(&broken);
    let second = reports.recv().await.expect("second report");
    let bad: Vec<_> = second.iter().filter(|r| r.would_deny).collect();
    assert_eq!(bad.len(), 1, "{second:?}");
    assert_eq!(bad[0].finding.resource, "HTTPRoute/default/bad");
    let yaml = serde_yaml::to_string(&second).expect("yaml");
    assert!(
        yaml.contains("wouldDeny: true") && yaml.contains("severity: error"),
        "{yaml}"
    );
    stop.trigger();
}

/// What the actor publishes for a state: the index, its translation's status and the
/// Proxies' values.
struct ActorOutputs {
    index: tokio::sync::watch::Sender<Arc<Index>>,
    status: tokio::sync::watch::Sender<Arc<crate::translate::StatusReport>>,
    proxies: tokio::sync::watch::Sender<kgw_common::bus::KvState>,
}

impl ActorOutputs {
    fn new(state: &Index) -> Self {
        let actor = Self {
            index: tokio::sync::watch::channel(Arc::default()).0,
            status: tokio::sync::watch::channel(Arc::default()).0,
            proxies: tokio::sync::watch::channel(Default::default()).0,
        };
        actor.send(state);
        actor
    }

    /// Publishes `state`; the digest of Proxy `default.gw`'s values.
    fn send(&self, state: &Index) -> String {
        let output = crate::translate::translate(state, &Options::default());
        let values = crate::translate::encode_proxies(&output);
        let digest = kgw_common::proxy_parts::digests(&values)["default.gw"].clone();
        self.status.send_replace(Arc::new(output.status));
        self.proxies.send_replace(kgw_common::bus::KvState {
            values: Arc::new(values),
            ..Default::default()
        });
        self.index.send_replace(Arc::new(state.clone()));
        digest
    }

    fn outputs(&self) -> background::Outputs {
        let status = self.status.subscribe();
        background::Outputs {
            index: self.index.subscribe(),
            own: Arc::new(move || {
                let own = status_findings(&status.borrow());
                Box::pin(async move { Some(own) })
            }),
            proxies: self.proxies.subscribe(),
        }
    }
}

/// Starts the background validation (default policy) with `controller` on `actor`'s
/// outputs: its reports, and the handle that stops it.
fn start_checks(
    controller: impl Validator,
    actor: &ActorOutputs,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Vec<background::Reported>>,
    kgw_common::shutdown::Shutdown,
) {
    let (_synced_tx, synced_rx) = tokio::sync::watch::channel(true);
    let (report_tx, reports) = tokio::sync::mpsc::unbounded_channel();
    let stop = kgw_common::shutdown::Shutdown::new();
    background::spawn(
        controller,
        Options::default(),
        Policy::default(),
        actor.outputs(),
        synced_rx,
        move |r| {
            let _ = report_tx.send(r);
        },
        stop.clone(),
    );
    (reports, stop)
}

/// [`start_checks`]' first report, and the handle that stops the checks.
async fn first_report(
    controller: ServingValidator,
    actor: &ActorOutputs,
) -> (Vec<background::Reported>, kgw_common::shutdown::Shutdown) {
    let (mut reports, stop) = start_checks(controller, actor);
    (reports.recv().await.expect("a report"), stop)
}

#[tokio::test(start_paused = true)]
async fn background_validation_asks_what_the_controller_serves_without_sending_a_proxy() {
    let actor = ActorOutputs::new(&index(BASE));
    let digest = actor.send(&index(BASE));
    let served = Finding {
        path: "listener/listener~8080/vhost/x".into(),
        ..Finding::warning("HTTPRoute/default/existing", "found by the controller")
    };
    let controller = ServingValidator {
        // Behind at first: asked again until it serves what was written.
        not_yet: 2,
        digests: vec![digest],
        findings: vec![served.clone()],
        ..Default::default()
    };
    let (report, stop) = first_report(controller.clone(), &actor).await;
    let findings: Vec<&Finding> = report.iter().map(|r| &r.finding).collect();
    assert!(findings.contains(&&served), "the controller's finding: {report:?}");
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("8443") || f.resource.starts_with("Gateway/")),
        "and the gateway's own (the HTTPS listener's Secret): {report:?}"
    );
    assert_eq!(controller.asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(
        controller.dry_runs.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no Proxy sent"
    );
    stop.trigger();
}

#[tokio::test(start_paused = true)]
async fn background_validation_dry_runs_when_the_controller_never_serves_what_was_written() {
    let actor = ActorOutputs::new(&index(BASE));
    let controller = ServingValidator {
        digests: vec!["another state".into()],
        ..Default::default()
    };
    let (report, stop) = first_report(controller.clone(), &actor).await;
    assert_eq!(report.len(), 1, "the HTTPS listener warning: {report:?}");
    assert!(
        controller.asked.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "asked until its patience ran out"
    );
    assert_eq!(
        controller.dry_runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "then the Proxy dry-run"
    );
    stop.trigger();
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_controller_is_no_work_to_rest_after() {
    let actor = ActorOutputs::new(&index(BASE));
    // A backend that does not exist: a finding of the gateway's own, so the report changes.
    let broken = with(&index(BASE), &route("lost", "/lost", "PathPrefix", "nowhere"));
    let controller = ServingValidator {
        // Two seconds behind: a rest of four times the check would put the next off 8 s.
        not_yet: 20,
        digests: vec![actor.send(&index(BASE)), ActorOutputs::new(&broken).send(&broken)],
        ..Default::default()
    };
    let (mut reports, stop) = start_checks(controller.clone(), &actor);
    reports.recv().await.expect("first report");
    let changed = tokio::time::Instant::now();
    actor.send(&broken);
    let second = reports.recv().await.expect("second report");
    assert!(
        second.iter().any(|r| r.finding.resource == "HTTPRoute/default/lost"),
        "{second:?}"
    );
    assert!(
        changed.elapsed() < std::time::Duration::from_secs(1),
        "the second report came {:?} after the change",
        changed.elapsed()
    );
    assert_eq!(controller.dry_runs.load(std::sync::atomic::Ordering::SeqCst), 0);
    stop.trigger();
}

use std::sync::Arc;

use kgw_common::resources::{Change, Index, decode};

use super::{
    testing::{BASE, FakeValidator, index},
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
    let (index_tx, index_rx) = tokio::sync::watch::channel(Arc::new(index(BASE)));
    let (_synced_tx, synced_rx) = tokio::sync::watch::channel(true);
    let (report_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let stop = kgw_common::shutdown::Shutdown::new();
    let policy = Policy {
        always_accept: true,
        allow_warnings: true,
    };
    background::spawn(
        FakeValidator::default(),
        Options::default(),
        policy,
        index_rx,
        synced_rx,
        move |r| {
            let _ = report_tx.send(r);
        },
        stop.clone(),
    );
    let first = reports.recv().await.expect("first report");
    assert_eq!(first.len(), 1, "the HTTPS listener warning: {first:?}");
    assert!(!first[0].would_deny, "a warning, and allowWarnings");
    let broken = with(&index(BASE), &route("bad", "/([", "RegularExpression", "echo"));
    index_tx.send_replace(Arc::new(broken));
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

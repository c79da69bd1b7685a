//! HTTPRoute filters and a RouteOption policy through the whole system and a real Envoy:
//! the rule's filters override the policy on the same route (header set, prefix rewrite),
//! a RequestRedirect answers instead of the backends, and an unsupported filter (ExternalAuth)
//! answers 500 while the route's other rules keep serving.
use kgw_harness::{get, wait_status, write_manifest_atomically};

use crate::support::{WAIT, config_dir, start};

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filtered, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /filtered}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-who, value: rule}]
        add: [{name: x-rule-only, value: \"1\"}]
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /from-rule}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: new.example}
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: ExternalAuth
      externalAuth: {protocol: HTTP, backendRef: {name: authz, port: 9000}}
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: gateway.solo.io/v1
kind: RouteOption
metadata: {name: policy, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: filtered}]
  options:
    prefixRewrite: /from-policy
    headerManipulation:
      requestHeadersToAdd: [{header: {key: x-who, value: policy}, append: false}, {header: {key: x-policy-only, value: \"1\"}}]
";

#[tokio::test(flavor = "multi_thread")]
async fn rule_filters_override_policy_redirect_answers_and_unsupported_filter_is_500() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    write_manifest_atomically(config_dir(system), "route.yaml", ROUTE)?;

    let ok = wait_status(&system.url("/filtered/x"), None, 200, WAIT).await?;
    let seen = ok.json()?;
    assert_eq!(seen["path"], "/from-rule/x", "{seen}");
    assert_eq!(seen["host"], "internal.example", "{seen}");
    assert_eq!(seen["headers"]["x-who"], "rule", "{seen}");
    assert_eq!(seen["headers"]["x-rule-only"], "1", "{seen}");
    assert_eq!(seen["headers"]["x-policy-only"], "1", "{seen}");

    let redirect = get(&system.url("/redirect/y"), None).await?;
    assert_eq!(redirect.status.as_u16(), 302, "{}", redirect.text());
    assert!(
        redirect.header("location").starts_with("http://new.example"),
        "{}",
        redirect.header("location")
    );

    let unsupported = get(&system.url("/cors"), None).await?;
    assert_eq!(unsupported.status.as_u16(), 500, "{}", unsupported.text());
    Ok(())
}

//! Test support: a fake controller validator and a small configuration.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use kgw_common::resources::{Change, Index, decode};
use kgw_proto::v1::{self as pb, matcher::PathSpecifier, route::Action, route_action::Destination};
use serde::Deserialize as _;

use super::{DryRun, Finding, Served, Severity, Validator, ValidatorError, resource_id};

/// Stands in for the controller: an error for every regex path match that does not
/// compile (here: contains `([`), a warning for every Upstream a route uses that the dry
/// run does not carry; or, when `unreachable`, the error of a controller that is down.
#[derive(Clone, Default)]
pub struct FakeValidator {
    pub calls: Arc<AtomicUsize>,
    pub unreachable: bool,
}

impl FakeValidator {
    pub fn down() -> Self {
        Self {
            unreachable: true,
            ..Self::default()
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Validator for FakeValidator {
    async fn validate(&self, dry_run: DryRun) -> Result<Vec<Finding>, ValidatorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.unreachable {
            return Err(ValidatorError::Unreachable {
                addr: "127.0.0.1:9988".into(),
                detail: "tcp connect error: Connection refused (os error 111)".into(),
                source: tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)"),
            });
        }
        let mut out = Vec::new();
        for listener in &dry_run.proxy.listeners {
            let Some(pb::listener::ListenerType::HttpListener(http)) = &listener.listener_type else {
                continue;
            };
            for vhost in &http.virtual_hosts {
                for route in &vhost.routes {
                    let source = route.source.clone().unwrap_or_default();
                    let finding = |severity, message: String| Finding {
                        severity,
                        resource: resource_id(&source.kind, &source.namespace, &source.name),
                        path: format!("listener/{}/vhost/{}/route/{}", listener.name, vhost.name, route.name),
                        message,
                    };
                    for matcher in &route.matchers {
                        if let Some(PathSpecifier::Regex(regex)) = &matcher.path_specifier
                            && regex.contains("([")
                        {
                            out.push(finding(
                                Severity::Error,
                                format!("invalid regex {regex:?}: unclosed character class"),
                            ));
                        }
                    }
                    let Some(Action::RouteAction(action)) = &route.action else {
                        continue;
                    };
                    let Some(Destination::Single(destination)) = &action.destination else {
                        continue;
                    };
                    let Some(upstream) = destination.upstream.as_ref().filter(|u| u.kind == "Upstream") else {
                        continue;
                    };
                    let carried = dry_run.upstreams.iter().any(|u| {
                        u.metadata
                            .as_ref()
                            .is_some_and(|m| m.namespace == upstream.namespace && m.name == upstream.name)
                    });
                    if !carried {
                        out.push(finding(
                            Severity::Warning,
                            format!("Upstream {}/{} not found (yet)", upstream.namespace, upstream.name),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A controller that serves every Proxy: `served` answers `NotYet` the first `not_yet`
/// times, then `findings` when the digest is one of `digests` (else `NotYet`); dry runs
/// are counted (they should not be needed).
#[derive(Clone, Default)]
pub struct ServingValidator {
    pub dry_runs: Arc<AtomicUsize>,
    pub asked: Arc<AtomicUsize>,
    pub not_yet: usize,
    pub digests: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Validator for ServingValidator {
    async fn validate(&self, dry_run: DryRun) -> Result<Vec<Finding>, ValidatorError> {
        self.dry_runs.fetch_add(1, Ordering::SeqCst);
        FakeValidator::default().validate(dry_run).await
    }

    async fn served(&self, _key: &str, digest: &str) -> Result<Served, ValidatorError> {
        let asked = self.asked.fetch_add(1, Ordering::SeqCst);
        if asked < self.not_yet || !self.digests.iter().any(|d| d == digest) {
            return Ok(Served::NotYet);
        }
        Ok(Served::Findings(self.findings.clone()))
    }
}

/// GatewayClass, Gateway `default/gw` (HTTP on 8080, HTTPS on 8443 with Secret `tls`),
/// Service `default/echo` with its EndpointSlice, HTTPRoute `default/existing` → echo.
pub const BASE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgateway}
spec: {controllerName: kgateway.dev/kgateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: kgateway
  listeners:
  - {name: http, protocol: HTTP, port: 8080}
  - name: https
    protocol: HTTPS
    port: 8443
    tls: {certificateRefs: [{name: tls}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 9001}]}
---
apiVersion: v1
kind: Service
metadata: {name: unused, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: http, port: 9001}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: existing, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /echo}}]
    backendRefs: [{name: echo, port: 80}]
";

/// An index of the documents in `yaml`; panics on anything invalid.
pub fn index(yaml: &str) -> Index {
    let mut index = Index::default();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document).expect("yaml");
        if let Some((key, resource)) = decode(value).expect("valid resource") {
            index.apply(&Change::Upsert(key, resource));
        }
    }
    index
}

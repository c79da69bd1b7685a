//! The runner: our processes, one Envoy per Gateway and the echo pods on loopback; for each
//! test the base manifests plus the test's written to the config directory, the status
//! checks waited for, every request case sent and judged.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt as _;
use serde_yaml::Value;

use super::cases::{self, Case, Cases, Test};
use super::certs::ConformancePki;
use super::client::{ClientTls, Endpoint};
use super::compare::{self, CaseOutcome, RetryOptions};
use super::echo::{self, EchoFleet, EchoPodSpec, EchoTls};
use super::report::{CaseResult, CheckResult, Report, TestResult};
use super::status::{self, StatusView};
use super::world::{self, AddressPlan, Nn, PodPlan};
use crate::addr::{self, Lease};
use crate::envoy::{self, BootstrapParams, XdsProtocol};
use crate::process::Process;
use crate::system::{Component, System, SystemConfig};
use crate::{bins, tools};

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The folder with `cases.json` and `manifests/`.
    pub conformance_dir: PathBuf,
    /// Tests to run, by name (traffic and status-only); empty: all of them.
    pub tests: Vec<String>,
    /// How long one case may take to converge (the suite allows 30 s).
    pub case_timeout: Duration,
    /// How long the status checks of one test may take to pass.
    pub status_timeout: Duration,
    /// Cases of one test sent at once.
    pub concurrency: usize,
    /// The ADS protocol of the Envoys.
    pub xds_protocol: XdsProtocol,
    /// Where logs and the config directory go; `None`: a temporary directory.
    pub run_dir: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            conformance_dir: default_conformance_dir(),
            tests: Vec::new(),
            case_timeout: Duration::from_secs(15),
            status_timeout: Duration::from_secs(20),
            concurrency: 6,
            xds_protocol: XdsProtocol::StateOfTheWorld,
            run_dir: None,
        }
    }
}

/// `../shared/conformance` beside the workspace, else the copy in `harness/conformance-data`.
pub fn default_conformance_dir() -> PathBuf {
    cases::default_path()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/conformance"))
}

/// Features the suite would skip here, as an implementation that does not declare them:
/// route kinds other than HTTPRoute.
const UNSUPPORTED_FEATURES: &[&str] = &["TLSRoute", "TCPRoute", "UDPRoute", "GRPCRoute"];

/// First host of the Gateways' addresses and of the pods' in the runner's own block.
const FIRST_GATEWAY_HOST: u8 = 10;
const FIRST_POD_HOST: u8 = 160;
const ENVOY_ADMIN_PORT: u16 = 19000;

/// Files of the config directory.
const CLASS_FILE: &str = "00-gatewayclass.yaml";
const SECRETS_FILE: &str = "01-secrets.yaml";
const BASE_FILE: &str = "10-base.yaml";
const TEST_FILE: &str = "20-test.yaml";
const ENDPOINTS_FILE: &str = "30-endpoints.yaml";

/// Runs the selected tests and reports.
pub async fn run(opts: &RunOptions) -> Result<Report> {
    let started = Instant::now();
    let all = cases::load(&opts.conformance_dir.join("cases.json"))?;
    let selected = select(&all, &opts.tests)?;
    let mut runner = Runner::start(opts, &selected).await?;
    let mut report = Report::default();
    for item in &selected {
        if let Some(feature) = item
            .features()
            .iter()
            .find(|f| UNSUPPORTED_FEATURES.contains(&f.as_str()))
        {
            let result = TestResult::skipped(item.name(), item.features(), &format!("needs {feature}"));
            eprintln!("{}", result.line());
            report.tests.push(result);
            continue;
        }
        let result = match item {
            Selected::Traffic(test) => runner.traffic_test(test).await,
            Selected::StatusOnly(test) => {
                runner
                    .status_only_test(
                        &test.name,
                        &test.features,
                        &test.profiles,
                        &test.manifests,
                        &test.status_checks,
                    )
                    .await
            }
        };
        let result = result.with_context(|| format!("running {}", item.name()))?;
        eprintln!("{}", result.line());
        report.tests.push(result);
    }
    runner.stop().await;
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

enum Selected<'a> {
    Traffic(&'a Test),
    StatusOnly(&'a cases::StatusOnlyTest),
}

impl Selected<'_> {
    fn name(&self) -> &str {
        match self {
            Selected::Traffic(t) => &t.name,
            Selected::StatusOnly(t) => &t.name,
        }
    }

    fn features(&self) -> &[String] {
        match self {
            Selected::Traffic(t) => &t.features,
            Selected::StatusOnly(t) => &t.features,
        }
    }

    fn manifests(&self) -> &[String] {
        match self {
            Selected::Traffic(t) => &t.manifests,
            Selected::StatusOnly(t) => &t.manifests,
        }
    }
}

fn select<'a>(all: &'a Cases, names: &[String]) -> Result<Vec<Selected<'a>>> {
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    let mut out: Vec<Selected<'a>> = all
        .tests
        .iter()
        .filter(|t| wanted(&t.name))
        .map(Selected::Traffic)
        .collect();
    out.extend(
        all.status_only_tests
            .iter()
            .filter(|t| wanted(&t.name))
            .map(Selected::StatusOnly),
    );
    let known: BTreeSet<&str> = out.iter().map(Selected::name).collect();
    if let Some(unknown) = names.iter().find(|n| !known.contains(n.as_str())) {
        anyhow::bail!("no test named {unknown} in cases.json");
    }
    Ok(out)
}

struct Runner {
    opts: RunOptions,
    system: System,
    manifests_dir: PathBuf,
    pki: ConformancePki,
    plan: AddressPlan,
    /// The runner's own address block (Gateways and pods).
    _block: Lease,
    block: (u8, u8),
    fleet: EchoFleet,
    started_pods: BTreeSet<Nn>,
    pod_ips: BTreeMap<Nn, IpAddr>,
    next_pod_host: u8,
    envoys: BTreeMap<Nn, Process>,
    /// Routes of the test that ran last (their status must be gone before the next).
    last_routes: Vec<String>,
    retry: RetryOptions,
}

impl Runner {
    async fn start(opts: &RunOptions, selected: &[Selected<'_>]) -> Result<Self> {
        let manifests_dir = opts.conformance_dir.join("manifests");
        let mut gateways = BTreeSet::new();
        let files: BTreeSet<&String> = selected.iter().flat_map(|s| s.manifests()).collect();
        let files: Vec<String> = files.into_iter().cloned().collect();
        gateways.extend(world::gateways(&world::load_documents(&manifests_dir, &files)?));
        let block = addr::allocate()?;
        let (b, c) = block.layout.block.unwrap_or((0, 0));
        let plan = AddressPlan::new(gateways, (b, c), FIRST_GATEWAY_HOST);
        let pki = ConformancePki::generate()?;
        tools::ensure_envoy()?;
        let system = System::start(SystemConfig {
            components: vec![
                Component::Nats,
                Component::Controller,
                Component::Gateway,
                Component::Discovery,
                Component::AccessLog,
            ],
            run_dir: opts.run_dir.clone(),
            // Envoy binds the declared ports (80, 443) on each Gateway's own address.
            env: vec![("KGW_LOW_PORT_OFFSET".into(), "0".into())],
            mtls: false,
            ..SystemConfig::default()
        })
        .await?;
        let config = system.config_dir().to_path_buf();
        crate::write_manifest_atomically(&config, CLASS_FILE, &world::to_yaml(&[world::gateway_class()])?)?;
        crate::write_manifest_atomically(&config, SECRETS_FILE, &pki.manifests_yaml())?;
        let mut base = world::load_documents(&manifests_dir, &["base/manifests.yaml".to_string()])?;
        world::assign_addresses(&mut base, &plan);
        crate::write_manifest_atomically(&config, BASE_FILE, &world::to_yaml(&base)?)?;
        let secret_certs = pki
            .secret_names()
            .filter_map(|(ns, name)| Some((format!("{ns}/{name}"), pki.secret(ns, name)?.cert_pem.clone())))
            .collect();
        Ok(Self {
            retry: RetryOptions {
                timeout: opts.case_timeout,
                secret_certs,
                ..RetryOptions::default()
            },
            opts: opts.clone(),
            system,
            manifests_dir,
            pki,
            plan,
            _block: block,
            block: (b, c),
            fleet: EchoFleet::new(),
            started_pods: BTreeSet::new(),
            pod_ips: BTreeMap::new(),
            next_pod_host: FIRST_POD_HOST,
            envoys: BTreeMap::new(),
            last_routes: Vec::new(),
        })
    }

    async fn stop(&mut self) {
        for envoy in self.envoys.values_mut() {
            let _ = envoy.stop(Duration::from_secs(5)).await;
        }
    }

    /// Puts the state of a test in place: the test's documents (base ones stay), the
    /// pods and EndpointSlices, one Envoy per Gateway. Returns the test's documents.
    async fn apply(&mut self, name: &str, manifests: &[String]) -> Result<Vec<Value>> {
        let config = self.system.config_dir().to_path_buf();
        // The last test's routes gone from status first: a route of the same name in this
        // test must not be judged by the last one's status.
        crate::remove_manifest(&config, TEST_FILE)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.last_routes.is_empty() && Instant::now() < deadline {
            let view = self.status_view().await.unwrap_or_default();
            if self.last_routes.iter().all(|r| !view.has_route(r)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let test_files: Vec<String> = manifests.iter().filter(|m| !m.starts_with("base/")).cloned().collect();
        let mut docs = world::load_documents(&self.manifests_dir, &test_files)?;
        world::assign_addresses(&mut docs, &self.plan);
        let base = world::load_documents(&self.manifests_dir, &["base/manifests.yaml".to_string()])?;
        let all: Vec<Value> = base.iter().chain(docs.iter()).cloned().collect();
        let pods = self.pods(&all).await?;
        // HTTPRouteServiceTypes patches its empty, selector-less slices with the pods of
        // infra-backend-v1 before its cases; the filled copies replace the manifests'.
        let fill = (name == "HTTPRouteServiceTypes").then_some("infra-backend-v1");
        let slices = world::endpoint_slices(&all, &pods, fill);
        if fill.is_some() {
            docs.retain(|d| {
                !(d.get("kind").and_then(Value::as_str) == Some("EndpointSlice")
                    && d.get("endpoints")
                        .and_then(Value::as_sequence)
                        .is_none_or(|e| e.is_empty())
                    && d.get("addressType").and_then(Value::as_str) == Some("IPv4"))
            });
        }
        crate::write_manifest_atomically(&config, ENDPOINTS_FILE, &world::to_yaml(&slices)?)?;
        crate::write_manifest_atomically(&config, TEST_FILE, &world::to_yaml(&docs)?)?;
        self.envoys_for(&world::gateways(&all)).await?;
        self.last_routes = docs
            .iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some("HTTPRoute"))
            .map(|d| {
                let (ns, n) = world::nn(d);
                format!("{ns}/{n}")
            })
            .collect();
        Ok(docs)
    }

    /// Starts the echo pods of `docs` not running yet; returns every pod of `docs`.
    async fn pods(&mut self, docs: &[Value]) -> Result<Vec<PodPlan>> {
        let (b, c) = self.block;
        let mut next = self.next_pod_host;
        let plans = world::pods(docs, &mut self.pod_ips, &mut || {
            let ip = IpAddr::V4(Ipv4Addr::new(127, b, c, next));
            next = next.saturating_add(1);
            ip
        });
        self.next_pod_host = next;
        for plan in &plans {
            let key = (plan.namespace.clone(), plan.name.clone());
            if self.started_pods.contains(&key) {
                continue;
            }
            let tls = match &plan.tls_secret {
                Some(secret) => {
                    let server = self
                        .pki
                        .secret(&plan.namespace, secret)
                        .with_context(|| format!("no generated Secret {}/{secret}", plan.namespace))?
                        .clone();
                    let client_ca_pem = plan
                        .client_ca_config_map
                        .as_ref()
                        .and_then(|cm| self.pki.config_map_ca(&plan.namespace, cm))
                        .map(str::to_string);
                    Some(EchoTls { server, client_ca_pem })
                }
                None => None,
            };
            let pod = echo::start(EchoPodSpec {
                ip: plan.ip,
                pod_name: plan.name.clone(),
                namespace: plan.namespace.clone(),
                tls,
            })
            .await
            .with_context(|| format!("starting echo pod {}/{}", plan.namespace, plan.name))?;
            self.fleet.add(pod);
            self.started_pods.insert(key);
        }
        Ok(plans)
    }

    /// One Envoy per Gateway, serving role `<ns>~<name>`, its admin on the Gateway's
    /// address; Envoys of Gateways no longer declared are stopped.
    async fn envoys_for(&mut self, gateways: &[Nn]) -> Result<()> {
        let wanted: BTreeSet<Nn> = gateways.iter().cloned().collect();
        let gone: Vec<Nn> = self.envoys.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for key in gone {
            if let Some(mut envoy) = self.envoys.remove(&key) {
                let _ = envoy.stop(Duration::from_secs(5)).await;
            }
        }
        for gw in wanted {
            if self.envoys.contains_key(&gw) {
                continue;
            }
            let Some(ip) = self.plan.address(&gw) else { continue };
            let role = format!("{}~{}", gw.0, gw.1);
            let run_dir = self.system.run_dir().join("envoys");
            std::fs::create_dir_all(&run_dir)?;
            // By address: Gateway names may be 253 characters, too long for a file name.
            let bootstrap = run_dir.join(format!("envoy-{ip}.yaml"));
            let params = BootstrapParams {
                node_id: format!("conformance-{}-{}", gw.0, gw.1),
                role: role.clone(),
                xds: self.system.layout().xds_addr(),
                admin: SocketAddr::new(ip, ENVOY_ADMIN_PORT),
                tls_dir: None,
                xds_protocol: self.opts.xds_protocol,
            };
            envoy::write_bootstrap(&bins::bin(bins::CONTROLLER)?, &params, &bootstrap)?;
            let log = run_dir.join(format!("envoy-{ip}.log"));
            let mut process = Process::new(
                &format!("envoy-{role}"),
                tools::ensure_envoy()?,
                envoy::args(&bootstrap, "warn"),
                &log,
            );
            process.start()?;
            self.envoys.insert(gw, process);
        }
        Ok(())
    }

    async fn status_view(&self) -> Result<StatusView> {
        let entries = self.system.kv_entries(kgw_proto::nats::STATUS_BUCKET).await?;
        Ok(StatusView::new(&entries))
    }

    /// The checks in order: each run of checks polled until it passes or the time is up;
    /// a `mutation` edits the test's documents and waits for the edited object's status
    /// to show its new generation before the checks after it.
    async fn status_checks(&self, test: &str, checks: &[serde_json::Value]) -> Vec<CheckResult> {
        let transcribed = super::go_checks::replacement(test);
        let checks = transcribed.as_deref().unwrap_or(checks);
        let mut results = Vec::new();
        let mut segment = Vec::new();
        let mut mutations = 0;
        for check in checks.iter().chain([&serde_json::Value::Null]) {
            if check["check"] != "mutation" && !check.is_null() {
                segment.push(check.clone());
                continue;
            }
            results.extend(self.poll_checks(&segment).await);
            segment.clear();
            if check.is_null() {
                break;
            }
            let outcome = self.mutate(test, mutations).await;
            mutations += 1;
            results.push(CheckResult {
                check: format!("mutation: {}", check["action"].as_str().unwrap_or("")),
                error: outcome.err().map(|e| format!("{e:#}")),
            });
        }
        results
    }

    async fn poll_checks(&self, checks: &[serde_json::Value]) -> Vec<CheckResult> {
        let deadline = Instant::now() + self.opts.status_timeout;
        loop {
            let view = self.status_view().await.unwrap_or_default();
            let results: Vec<CheckResult> = checks
                .iter()
                .map(|c| CheckResult {
                    check: c["check"].as_str().unwrap_or("").to_string(),
                    error: status::check(&view, c).err(),
                })
                .collect();
            if results.iter().all(|r| r.error.is_none()) || Instant::now() >= deadline {
                return results;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The `nth` mutation of `test`, applied to its file; waits for the new generation.
    async fn mutate(&self, test: &str, nth: usize) -> Result<()> {
        let config = self.system.config_dir();
        let path = config.join(TEST_FILE);
        let text = std::fs::read_to_string(&path)?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc)?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        let before = self.status_view().await?;
        let mutated = super::mutations::apply(test, nth, &mut docs)?;
        let generation_before = before.generation(mutated.kind, &mutated.name);
        crate::write_manifest_atomically(config, TEST_FILE, &world::to_yaml(&docs)?)?;
        let deadline = Instant::now() + self.opts.status_timeout;
        loop {
            let now = self.status_view().await?.generation(mutated.kind, &mutated.name);
            if now.is_some() && now != generation_before {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} {}: status still at generation {generation_before:?} after the edit",
                    mutated.kind,
                    mutated.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn status_only_test(
        &mut self,
        name: &str,
        features: &[String],
        profiles: &BTreeMap<String, String>,
        manifests: &[String],
        checks: &[serde_json::Value],
    ) -> Result<TestResult> {
        let started = Instant::now();
        self.apply(name, manifests).await?;
        let checks = self.status_checks(name, checks).await;
        Ok(TestResult {
            name: name.into(),
            feature: feature_of(features),
            level: level_of(profiles),
            status_only: true,
            checks,
            cases: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
            skipped: None,
        })
    }

    async fn traffic_test(&mut self, test: &Test) -> Result<TestResult> {
        let started = Instant::now();
        self.apply(&test.name, &test.manifests).await?;
        self.fleet.clear_logs();
        let checks = self.status_checks(&test.name, &test.status_checks).await;
        let mut results: Vec<Option<CaseResult>> = vec![None; test.cases.len()];
        // Steps that change the state after a case: cases run one by one up to each.
        let mut boundaries: Vec<(usize, String)> = test
            .steps
            .iter()
            .filter_map(|s| Some((s["after_case"].as_u64()? as usize, s["action"].as_str()?.to_string())))
            .collect();
        boundaries.sort();
        let mut start = 0;
        for (after, action) in boundaries
            .iter()
            .cloned()
            .chain([(test.cases.len().saturating_sub(1), String::new())])
        {
            let end = (after + 1).min(test.cases.len());
            if start < end {
                let outcomes = self.run_cases(&test.cases[start..end]).await;
                for (i, outcome) in outcomes.into_iter().enumerate() {
                    results[start + i] = Some(CaseResult::new(&test.cases[start + i], outcome));
                }
            }
            start = end;
            if !action.is_empty() {
                self.step(&action)?;
            }
        }
        let mut cases: Vec<CaseResult> = results.into_iter().flatten().collect();
        // The suite's distribution loops follow a passing warm-up; after a failing one they
        // would only spend their minutes confirming it.
        if test.distribution_check.is_some() && cases.iter().all(|c| c.passed) {
            let endpoint = self.endpoint(test.cases.first().map(|c| &c.target))?;
            let tls = self.client_tls(test.cases.first());
            let outcome = compare::run_distribution(test, &endpoint, &tls, &self.fleet, &self.retry).await;
            // The distribution counts as part of its test's first case (the warm-up).
            if let Some(first) = cases.first_mut()
                && !outcome.passed
            {
                first.passed = false;
                first.difference = outcome.first_difference.map(|d| format!("distribution: {d}"));
            }
        }
        Ok(TestResult {
            name: test.name.clone(),
            feature: test.feature().to_string(),
            level: test.profile_level().to_string(),
            status_only: false,
            checks,
            cases,
            seconds: started.elapsed().as_secs_f64(),
            skipped: None,
        })
    }

    /// A step's action, `delete <Kind> <ns>/<name> ...`: the object leaves the test's file.
    fn step(&self, action: &str) -> Result<()> {
        let mut words = action.split_whitespace();
        let (Some("delete"), Some(kind), Some(target)) = (words.next(), words.next(), words.next()) else {
            anyhow::bail!("step `{action}` is not one the runner knows");
        };
        let config = self.system.config_dir();
        let path = config.join(TEST_FILE);
        let text = std::fs::read_to_string(&path)?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc)?;
            let (ns, name) = world::nn(&value);
            let matches = value.get("kind").and_then(Value::as_str) == Some(kind) && format!("{ns}/{name}") == target;
            if !matches && !value.is_null() {
                docs.push(value);
            }
        }
        crate::write_manifest_atomically(config, TEST_FILE, &world::to_yaml(&docs)?)?;
        Ok(())
    }

    async fn run_cases(&self, cases: &[Case]) -> Vec<CaseOutcome> {
        let runs = cases.iter().map(|case| async move {
            let endpoint = match self.endpoint(Some(&case.target)) {
                Ok(e) => e,
                Err(e) => {
                    return CaseOutcome {
                        passed: false,
                        attempts: 0,
                        first_difference: Some(e.to_string()),
                        elapsed: Duration::ZERO,
                    };
                }
            };
            let tls = self.client_tls(Some(case));
            compare::run_case(case, &endpoint, &tls, &self.fleet, &self.retry).await
        });
        futures::stream::iter(runs)
            .buffered(self.opts.concurrency.max(1))
            .collect()
            .await
    }

    fn endpoint(&self, target: Option<&cases::Target>) -> Result<Endpoint> {
        let target = target.context("a test without cases")?;
        let gw = target
            .gateway
            .split_once('/')
            .map(|(ns, n)| (ns.to_string(), n.to_string()))
            .context("target gateway is not namespace/name")?;
        let ip = self
            .plan
            .address(&gw)
            .with_context(|| format!("no address planned for Gateway {}", target.gateway))?;
        Ok(Endpoint {
            ip,
            port: target.port,
            declared_port: target.port,
        })
    }

    fn client_tls(&self, case: Option<&Case>) -> ClientTls {
        let Some(case) = case else { return ClientTls::default() };
        let secret = |nn: &Option<String>| {
            nn.as_deref()
                .and_then(|nn| nn.split_once('/'))
                .and_then(|(ns, n)| self.pki.secret(ns, n))
                .cloned()
        };
        ClientTls {
            trust_root_pem: secret(&case.target.trust_ca_from_secret).map(|p| p.cert_pem),
            client_cert: secret(&case.target.client_cert_secret),
            sni: case.target.sni.clone(),
        }
    }
}

fn feature_of(features: &[String]) -> String {
    features
        .iter()
        .find(|f| !matches!(f.as_str(), "Gateway" | "HTTPRoute" | "ReferenceGrant"))
        .cloned()
        .unwrap_or_else(|| features.last().cloned().unwrap_or_default())
}

fn level_of(profiles: &BTreeMap<String, String>) -> String {
    match profiles.get("GATEWAY-HTTP").map(String::as_str) {
        Some("core") => "Core".into(),
        Some("extended") => "Extended".into(),
        _ => "-".into(),
    }
}

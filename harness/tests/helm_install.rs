//! The Helm chart installed for real: the `helm` CLI against a real kube-apiserver (no
//! kubelet, so no pod ever starts: what is checked is what the API server holds).
//! install → CRDs (the RouteOption schema enforced), workloads, Services with the legacy
//! ports, RBAC, the webhook and the mTLS certificates exist; upgrade with changed values →
//! the Deployment specs change, the webhook certificate and the mTLS CA and certificates
//! stay (but the one whose name the new values change is reissued); the ServiceAccounts' tokens get exactly the
//! access least privilege allows, and our processes run with them do their work (gateway
//! writes route status and serves the webhook with the chart's certificate, discovery
//! publishes Upstreams); uninstall → the release's objects are gone (CRDs stay, as Helm
//! keeps crds/).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kgw_harness::kube::KubeCluster;
use kgw_harness::manifest::{gateway_yaml, service_yaml};
use kgw_harness::system::Source;
use kgw_harness::{Component, Placement, Process, System, SystemConfig, wait_for};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;

const RELEASE: &str = "kgw";
const NS: &str = "kgw-system";
/// Where the test's HTTPRoute lives: outside the webhook's namespaceSelector, so the API
/// server never calls the (podless) webhook for it.
const APPS: &str = "apps";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kgw")
}

/// `helm <args>` against the cluster, with Helm's own state kept in the cluster's dir.
fn helm(cluster: &KubeCluster, args: &[&str]) -> Result<String> {
    let home = cluster.dir().join("helm");
    let out = Command::new(&cluster.tools().helm)
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm")?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "helm {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The values every helm call of this test sets: the webhook validates only labelled
/// namespaces (the test's route namespace is not), and fails closed, to see both values
/// land in the configuration.
fn install_args(chart: &Path) -> Vec<String> {
    vec![
        RELEASE.into(),
        chart.display().to_string(),
        "--namespace".into(),
        NS.into(),
        "--set".into(),
        "webhook.failurePolicy=Fail".into(),
        "--set-json".into(),
        r#"webhook.namespaceSelector={"matchLabels":{"kgw.dev/validate":"true"}}"#.into(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_upgrade_uninstall_and_least_privilege() -> Result<()> {
    let cluster = KubeCluster::start().await?;
    let client = cluster.client();
    let chart = chart_dir();

    // The real CLI's linter agrees with helm-python-sdk's (deploy/scripts/check_chart.py).
    helm(&cluster, &["lint", "--strict", &chart.display().to_string()])?;

    let mut install = vec!["install".to_string()];
    install.extend(install_args(&chart));
    install.push("--create-namespace".into());
    helm(&cluster, &install.iter().map(String::as_str).collect::<Vec<_>>())?;

    check_crds(&client).await?;
    check_route_option_schema(&client).await?;
    check_workloads(&client).await?;
    check_services(&client).await?;
    let ca_before = check_webhook(&client).await?;
    let mtls_before = check_mtls_secrets(&client, "gateway-proxy").await?;

    // upgrade: a changed value rolls the Deployment spec; `lookup` keeps the certificate.
    let mut upgrade = vec!["upgrade".to_string()];
    upgrade.extend(install_args(&chart));
    upgrade.extend(
        [
            "--set",
            "discovery.replicas=3",
            "--set",
            "gateway.image.tag=9.9.9",
            "--set",
            "gatewayProxy.gatewayName=edge",
        ]
        .map(String::from),
    );
    helm(&cluster, &upgrade.iter().map(String::as_str).collect::<Vec<_>>())?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let discovery = deployments.get("discovery").await?;
    ensure!(
        discovery.spec.as_ref().and_then(|s| s.replicas) == Some(3),
        "discovery replicas after upgrade: {:?}",
        discovery.spec.and_then(|s| s.replicas)
    );
    let gateway = deployments.get("gateway").await?;
    let image = gateway
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone());
    ensure!(
        image == Some(Some("kgw/gateway:9.9.9".into())),
        "gateway image after upgrade: {image:?}"
    );
    let ca_after = check_webhook(&client).await?;
    ensure!(
        ca_before == ca_after,
        "helm upgrade replaced the webhook's CA (lookup should keep it)"
    );
    let mtls_after = check_mtls_secrets(&client, "edge").await?;
    for (name, cert) in &mtls_before {
        let after = mtls_after
            .get(name)
            .with_context(|| format!("Secret {name} gone after upgrade"))?;
        if name == "kgw-gateway-proxy-tls" {
            ensure!(
                after != cert,
                "the gateway-proxy's role changed but its certificate did not"
            );
        } else {
            ensure!(after == cert, "helm upgrade replaced the certificate of Secret {name}");
        }
    }

    check_least_privilege(&cluster).await?;
    check_processes_work_with_chart_tokens(&cluster).await?;

    helm(&cluster, &["uninstall", RELEASE, "--namespace", NS])?;
    check_uninstalled(&client).await?;
    Ok(())
}

/// Ours (generated from the Rust types) and the Gateway API's, from the chart's crds/.
async fn check_crds(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "routeoptions.gateway.solo.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ] {
        let crd = crds
            .get(name)
            .await
            .with_context(|| format!("CRD {name} after helm install"))?;
        ensure!(
            kgw_harness::kube::apply::established(&crd),
            "CRD {name} is not Established"
        );
    }
    Ok(())
}

/// The API server validates RouteOptions with the schema generated from our types: a
/// valid one is stored as written, a wrongly typed field is refused.
async fn check_route_option_schema(client: &kube::Client) -> Result<()> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.solo.io", "v1", "RouteOption"),
        "routeoptions",
    );
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &resource);
    let option = |name: &str, options: serde_json::Value| -> Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "gateway.solo.io/v1", "kind": "RouteOption",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "web"}],
                "options": options
            }
        }))?)
    };
    let good = option("timeouts", json!({"timeout": "5s", "prefixRewrite": "/v2"}))?;
    let stored = api
        .create(&PostParams::default(), &good)
        .await
        .context("a valid RouteOption")?;
    ensure!(
        stored.data["spec"]["options"]["prefixRewrite"] == json!("/v2"),
        "RouteOption stored as {}",
        stored.data
    );
    let bad = option("bad", json!({"timeout": 5}))?;
    let refused = api.create(&PostParams::default(), &bad).await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains("timeout")),
        "a RouteOption with a numeric timeout must be refused by the schema: {refused:?}"
    );
    api.delete("timeouts", &Default::default()).await?;
    Ok(())
}

async fn check_workloads(client: &kube::Client) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    for (name, command) in [
        ("gateway", "gateway"),
        ("gloo", "controller"),
        ("discovery", "discovery"),
        ("gateway-proxy", "envoy"),
    ] {
        let deployment = deployments
            .get(name)
            .await
            .with_context(|| format!("Deployment {name}"))?;
        let pod = deployment.spec.and_then(|s| s.template.spec).context("pod spec")?;
        let container = &pod.containers[0];
        ensure!(
            container.command.as_deref() == Some(&[command.to_string()][..]),
            "Deployment {name} runs {:?}",
            container.command
        );
        if name != "discovery" && name != "gateway-proxy" {
            ensure!(
                container
                    .liveness_probe
                    .as_ref()
                    .and_then(|p| p.http_get.as_ref())
                    .is_some()
                    && container
                        .readiness_probe
                        .as_ref()
                        .and_then(|p| p.http_get.as_ref())
                        .is_some(),
                "Deployment {name} lacks its HTTP probes"
            );
        }
    }
    let stateful: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    // access-log: a StatefulSet, each replica named under the headless Service.
    let access_log = stateful.get("access-log").await.context("StatefulSet access-log")?;
    let spec = access_log.spec.context("access-log spec")?;
    ensure!(
        spec.service_name.as_deref() == Some("access-log-headless") && spec.replicas == Some(2),
        "StatefulSet access-log: serviceName {:?}, replicas {:?}",
        spec.service_name,
        spec.replicas
    );
    let pod = spec.template.spec.context("access-log pod spec")?;
    ensure!(
        pod.containers[0].command.as_deref() == Some(&["access-log".to_string()][..]),
        "StatefulSet access-log runs {:?}",
        pod.containers[0].command
    );
    let nats = stateful.get("nats").await.context("StatefulSet nats")?;
    let claims = nats.spec.and_then(|s| s.volume_claim_templates).unwrap_or_default();
    ensure!(
        claims.len() == 1,
        "nats has {} volume claim templates, want 1 (JetStream store)",
        claims.len()
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = pdbs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    for want in ["gateway", "gloo", "discovery", "access-log", "gateway-proxy", "nats"] {
        ensure!(
            names.iter().any(|n| n == want),
            "no PodDisruptionBudget {want}: {names:?}"
        );
    }
    Ok(())
}

/// The legacy ports: gloo 443 → the gateway pods' webhook port and the controller's five,
/// gateway-proxy 80/443 → 8080/8443, access-log 8083.
async fn check_services(client: &kube::Client) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let ports = |svc: Service| -> Vec<(i32, String)> {
        svc.spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let target = match p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n.to_string(),
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
                    None => p.port.to_string(),
                };
                (p.port, target)
            })
            .collect()
    };
    let want: [(&str, &[(i32, &str)]); 3] = [
        (
            "gloo",
            &[
                (443, "https-webhook"),
                (9976, "rest-xds"),
                (9977, "grpc-xds"),
                (9988, "grpc-validation"),
                (9979, "wasm-cache"),
                (9966, "grpc-proxydebug"),
            ],
        ),
        ("gateway-proxy", &[(80, "8080"), (443, "8443")]),
        ("access-log", &[(8083, "grpc-als")]),
    ];
    for (name, expected) in want {
        let got = ports(services.get(name).await.with_context(|| format!("Service {name}"))?);
        let expected: Vec<(i32, String)> = expected.iter().map(|(p, t)| (*p, t.to_string())).collect();
        ensure!(got == expected, "Service {name} ports {got:?}, want {expected:?}");
    }
    // The gateway pods declare the port the gloo Service's 443 targets.
    let gateway: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let pod = gateway
        .get("gateway")
        .await?
        .spec
        .and_then(|s| s.template.spec)
        .context("gateway pod")?;
    let webhook_port = pod.containers[0]
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("https-webhook"))
        .map(|p| p.container_port);
    ensure!(
        webhook_port == Some(8443),
        "gateway's https-webhook port is {webhook_port:?}"
    );
    Ok(())
}

/// The webhook configuration as the values asked, trusting the CA in the generated
/// Secret; returns that CA.
async fn check_webhook(client: &kube::Client) -> Result<Vec<u8>> {
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let config = configs
        .get(&format!("kgw-gateway-validation-{NS}"))
        .await
        .context("ValidatingWebhookConfiguration")?;
    let hook = config
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .next()
        .context("no webhook")?;
    let service = hook.client_config.service.context("clientConfig.service")?;
    ensure!(
        (
            service.name.as_str(),
            service.namespace.as_str(),
            service.port,
            service.path.as_deref()
        ) == ("gloo", NS, Some(443), Some("/validation")),
        "webhook service {service:?}"
    );
    ensure!(
        hook.failure_policy.as_deref() == Some("Fail"),
        "failurePolicy {:?}",
        hook.failure_policy
    );
    let selector = hook.namespace_selector.and_then(|s| s.match_labels).unwrap_or_default();
    ensure!(
        selector.get("kgw.dev/validate").map(String::as_str) == Some("true"),
        "namespaceSelector {selector:?}"
    );
    let resources: Vec<String> = hook
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.resources.unwrap_or_default())
        .collect();
    for want in ["httproutes", "gateways", "routeoptions"] {
        ensure!(
            resources.iter().any(|r| r == want),
            "webhook rules lack {want}: {resources:?}"
        );
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets
        .get("gateway-validation-certs")
        .await
        .context("the webhook's Secret")?;
    let data = secret.data.unwrap_or_default();
    let ca = data.get("ca.crt").context("Secret without ca.crt")?.0.clone();
    ensure!(
        data.contains_key("tls.crt") && data.contains_key("tls.key"),
        "Secret lacks tls.crt/tls.key"
    );
    let bundle = hook.client_config.ca_bundle.context("no caBundle")?.0;
    ensure!(bundle == ca, "caBundle is not the Secret's ca.crt");
    Ok(ca)
}

/// The mTLS Secrets: a CA (kgw-ca) and one kubernetes.io/tls Secret per identity with the
/// CA's certificate as ca.crt and the identity's common name (the gateway-proxy's for
/// Gateway `<NS>/<gateway>`); the Deployments mount their own. Returns each Secret's
/// tls.crt.
async fn check_mtls_secrets(
    client: &kube::Client,
    gateway: &str,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let ca = secrets.get("kgw-ca").await.context("Secret kgw-ca (the mTLS CA)")?;
    let ca_crt = ca
        .data
        .unwrap_or_default()
        .get("tls.crt")
        .context("kgw-ca lacks tls.crt")?
        .0
        .clone();
    let mut out = std::collections::BTreeMap::from([("kgw-ca".to_string(), ca_crt.clone())]);
    let proxy = format!("kgw-proxy:{NS}~{gateway}");
    for (who, common_name) in [
        ("gateway", "kgw-process:gateway"),
        ("controller", "kgw-process:controller"),
        ("discovery", "kgw-process:discovery"),
        ("access-log", "kgw-process:access-log"),
        ("gateway-proxy", proxy.as_str()),
        ("admin", "kgw-admin"),
        ("nats", "nats.kgw.internal"),
    ] {
        let name = format!("kgw-{who}-tls");
        let secret = secrets.get(&name).await.with_context(|| format!("Secret {name}"))?;
        ensure!(
            secret.type_.as_deref() == Some("kubernetes.io/tls"),
            "Secret {name} is {:?}",
            secret.type_
        );
        let named = secret
            .metadata
            .annotations
            .unwrap_or_default()
            .get("kgw.dev/common-name")
            .cloned();
        ensure!(
            named.as_deref() == Some(common_name),
            "Secret {name} is for {named:?}, want {common_name}"
        );
        let data = secret.data.unwrap_or_default();
        ensure!(
            data.get("ca.crt").map(|c| &c.0) == Some(&ca_crt),
            "Secret {name}'s ca.crt is not the CA's"
        );
        ensure!(data.contains_key("tls.key"), "Secret {name} lacks tls.key");
        out.insert(name.clone(), data.get("tls.crt").context("tls.crt")?.0.clone());
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    for (deployment, who) in [
        ("gateway", "gateway"),
        ("gloo", "controller"),
        ("discovery", "discovery"),
        ("gateway-proxy", "gateway-proxy"),
    ] {
        let pod = deployments
            .get(deployment)
            .await?
            .spec
            .and_then(|s| s.template.spec)
            .context("pod spec")?;
        let mounted = pod.volumes.unwrap_or_default().into_iter().any(|v| {
            v.name == "mtls" && v.secret.and_then(|s| s.secret_name).as_deref() == Some(&format!("kgw-{who}-tls"))
        });
        ensure!(mounted, "Deployment {deployment} does not mount Secret kgw-{who}-tls");
    }
    Ok(out)
}

fn forbidden(result: &Result<impl Sized, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// Each component's token can do what it needs and no more.
async fn check_least_privilege(cluster: &KubeCluster) -> Result<()> {
    let client_of = |sa: &'static str| async move {
        let token = cluster.token_for_service_account(NS, sa).await?;
        cluster.client_with_token(&token).await
    };
    let lp = ListParams::default().limit(1);

    // discovery: Services and EndpointSlices; Secrets read-only (the AWS credentials of
    // Lambda Upstreams), never written.
    let discovery = client_of("discovery").await?;
    Api::<Service>::all(discovery.clone())
        .list(&lp)
        .await
        .context("discovery lists Services")?;
    Api::<EndpointSlice>::all(discovery.clone())
        .list(&lp)
        .await
        .context("discovery lists EndpointSlices")?;
    Api::<Secret>::namespaced(discovery.clone(), NS)
        .list(&lp)
        .await
        .context("discovery lists Secrets (Lambda credentials)")?;
    let deleted = Api::<Secret>::namespaced(discovery.clone(), NS)
        .delete("kgw-ca", &Default::default())
        .await;
    ensure!(
        forbidden(&deleted),
        "discovery deleting a Secret must be Forbidden: {:?}",
        deleted.map(|_| ())
    );

    // gloo (the controller): the one that reads Secrets.
    let gloo = client_of("gloo").await?;
    Api::<Secret>::all(gloo.clone())
        .list(&lp)
        .await
        .context("gloo lists Secrets")?;
    Api::<Secret>::namespaced(gloo.clone(), NS)
        .get("gateway-validation-certs")
        .await
        .context("gloo gets a Secret")?;
    let services = Api::<Service>::all(gloo).list(&lp).await;
    ensure!(forbidden(&services), "gloo has no business listing Services");

    // gateway: reads routes, patches their status, holds a Lease in its namespace only.
    let admin = cluster.client();
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": APPS}}))?,
        )
        .await
        .context("creating namespace apps")?;
    let routes_resource = httproutes();
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": APPS},
        "spec": {"parentRefs": [{"name": "gw", "namespace": NS}]}
    }))?;
    Api::<DynamicObject>::namespaced_with(admin, APPS, &routes_resource)
        .create(&PostParams::default(), &route)
        .await
        .context("admin creates an HTTPRoute")?;
    let gateway = client_of("gateway").await?;
    let routes = Api::<DynamicObject>::namespaced_with(gateway.clone(), APPS, &routes_resource);
    routes.list(&lp).await.context("gateway lists HTTPRoutes")?;
    let status = json!({"status": {"parents": [{
        "parentRef": {"name": "gw", "namespace": NS},
        "controllerName": "kgateway.dev/kgateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }]}});
    routes
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("gateway patches HTTPRoute status")?;
    let spec_patch = routes
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"hostnames": ["x.example"]}})),
        )
        .await;
    ensure!(forbidden(&spec_patch), "gateway may write status only, not the route");
    let secrets = Api::<Secret>::namespaced(gateway.clone(), NS).list(&lp).await;
    ensure!(forbidden(&secrets), "gateway listing Secrets must be Forbidden");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "kgw-gateway"}, "spec": {"holderIdentity": "gateway-0"}}))?;
    Api::<Lease>::namespaced(gateway.clone(), NS)
        .create(&PostParams::default(), &lease)
        .await
        .context("gateway creates its leader-election Lease")?;
    let elsewhere = Api::<Lease>::namespaced(gateway, APPS)
        .create(&PostParams::default(), &lease)
        .await;
    ensure!(
        forbidden(&elsewhere),
        "gateway's Lease rights are for its own namespace only"
    );

    // access-log: nothing at all.
    let access_log = client_of("access-log").await?;
    let services = Api::<Service>::namespaced(access_log, NS).list(&lp).await;
    ensure!(forbidden(&services), "access-log must have no API access");
    Ok(())
}

async fn check_uninstalled(client: &kube::Client) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let left: Vec<String> = deployments
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter_map(|d| d.metadata.name)
        .collect();
    ensure!(left.is_empty(), "Deployments left after helm uninstall: {left:?}");
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    ensure!(
        services.get_opt("gloo").await?.is_none(),
        "Service gloo left after helm uninstall"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    ensure!(
        roles.get_opt(&format!("kgw-gateway-{NS}")).await?.is_none(),
        "ClusterRole left after uninstall"
    );
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    ensure!(
        configs
            .get_opt(&format!("kgw-gateway-validation-{NS}"))
            .await?
            .is_none(),
        "ValidatingWebhookConfiguration left after uninstall"
    );
    // Helm never deletes what crds/ installed: the resources in them would go too.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    ensure!(
        crds.get_opt("routeoptions.gateway.solo.io").await?.is_some(),
        "helm uninstall removed a CRD"
    );
    Ok(())
}

/// Our processes, run with the tokens of the ServiceAccounts the chart created (as they
/// would run in its pods), do their work: least privilege is enough. The gateway reads
/// the Gateway API kinds and Services and writes the route's status; discovery reads
/// Services and EndpointSlices and publishes the Upstream, and lists the functions of a
/// Lambda Upstream with the credentials of its Secret (read through the API server).
/// (The controller's token is not used by a process yet: it reads no Secrets until SDS
/// exists.)
async fn check_processes_work_with_chart_tokens(cluster: &KubeCluster) -> Result<()> {
    let in_apps = |yaml: String| yaml.replace("namespace: default", &format!("namespace: {APPS}"));
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: {APPS}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /echo}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"
    );
    // A Lambda Upstream and its Secret (stringData: the API server stores it in data).
    let lambda = format!(
        "apiVersion: gloo.solo.io/v1
kind: Upstream
metadata: {{name: lambda, namespace: {APPS}}}
spec:
  aws: {{region: us-east-1, secretRef: {{name: aws-creds}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws-creds, namespace: {APPS}}}
stringData: {{aws_access_key_id: AKIDFROMCHART, aws_secret_access_key: chart-secret}}
"
    );
    let resources = [
        in_apps(gateway_yaml()),
        in_apps(service_yaml("echo", &["192.0.2.10".parse()?], 8080)),
        route,
        lambda,
    ]
    .join("---\n");
    kubectl_create(cluster, &resources)?;
    let lambda_api = LambdaApi::start().await?;

    let kubeconfig_of = |sa: &'static str| async move {
        let token = cluster.token_for_service_account(NS, sa).await?;
        cluster.write_kubeconfig_with_token(&token)
    };
    // The gateway serves its webhook with the certificate the chart generated, as its pod
    // would mount it.
    let (cert, key, ca) = chart_webhook_certificate(cluster).await?;
    let system = System::start(SystemConfig {
        source: Source::Kubernetes {
            kubeconfig: kubeconfig_of("gateway").await?,
        },
        components: vec![Component::Nats, Component::Controller, Component::Gateway],
        placement: Placement::Block,
        gateway: (APPS.into(), "gw".into()),
        env: vec![
            ("KGW_WEBHOOK_CERT".into(), cert.display().to_string()),
            ("KGW_WEBHOOK_KEY".into(), key.display().to_string()),
            // As the chart's downward API sets it: the Lease lives in the release namespace,
            // the only one the gateway's Role lets it write.
            ("POD_NAMESPACE".into(), NS.into()),
        ],
        ..Default::default()
    })
    .await?;
    webhook_answers_as_gloo_service(system.layout().webhook_addr(), &ca).await?;
    let mut discovery = Process::new(
        "discovery",
        kgw_harness::bins::bin("discovery")?,
        [
            "--source".into(),
            "kubernetes".into(),
            "--kubeconfig".into(),
            kubeconfig_of("discovery").await?.display().to_string(),
            "--nats-url".into(),
            system.nats_url(),
            "--health-file".into(),
            cluster.dir().join("discovery-healthy").display().to_string(),
            "--aws-lambda-endpoint".into(),
            format!("http://{}", lambda_api.addr),
        ]
        .into_iter()
        // The system's discovery certificate: NATS requires TLS.
        .chain(system.process_tls_args("discovery")),
        cluster.dir().join("discovery.log"),
    );
    discovery.start()?;

    // gateway: the route's status, written with the gateway's token.
    let routes = Api::<DynamicObject>::namespaced_with(cluster.client(), APPS, &httproutes());
    wait_for(WAIT, || async {
        let route = routes.get("echo").await?;
        let parents = route.data["status"]["parents"].as_array().cloned().unwrap_or_default();
        let accepted = parents.iter().any(|p| {
            p["controllerName"] == "kgateway.dev/kgateway"
                && p["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
        });
        ensure!(accepted, "route status so far: {}", route.data["status"]);
        Ok(())
    })
    .await
    .with_context(|| format!("gateway log:\n{}", system.log_tail(Component::Gateway, 30)))?;

    // discovery: the Upstream of Service apps/echo port 80, in NATS.
    let nats = system.nats_client().await?;
    let jetstream = async_nats::jetstream::new(nats);
    wait_for(WAIT, || async {
        let bucket = jetstream.get_key_value(kgw_proto::nats::UPSTREAMS_BUCKET).await?;
        let key = kgw_proto::nats::key(APPS, &format!("{APPS}-echo-80"));
        ensure!(bucket.get(&key).await?.is_some(), "no Upstream {key} yet");
        Ok(())
    })
    .await
    .with_context(|| {
        let log = std::fs::read_to_string(cluster.dir().join("discovery.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "discovery log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })?;
    // discovery: the Lambda Upstream's functions, listed with the Secret's key.
    wait_for(WAIT, || async {
        let bucket = jetstream.get_key_value(kgw_proto::nats::UPSTREAMS_BUCKET).await?;
        let key = kgw_proto::nats::key(APPS, "lambda");
        let value = bucket
            .get(&key)
            .await?
            .with_context(|| format!("no Upstream {key} yet"))?;
        let upstream = <kgw_proto::v1::Upstream as prost::Message>::decode(value)?;
        let names: Vec<String> = upstream.functions.into_iter().map(|f| f.name).collect();
        ensure!(names == ["orders"], "functions on {key}: {names:?}");
        Ok(())
    })
    .await
    .with_context(|| format!("discovery log:\n{}", discovery.log_tail(30)))?;
    let signed = lambda_api.authorizations.lock().expect("lock").clone();
    ensure!(
        !signed.is_empty() && signed.iter().all(|a| a.contains("Credential=AKIDFROMCHART/")),
        "ListFunctions signed with {signed:?}"
    );
    discovery.terminate();
    Ok(())
}

/// A stand-in for the Lambda API: answers every `ListFunctions` with one function and
/// records the requests' `Authorization` headers.
struct LambdaApi {
    addr: std::net::SocketAddr,
    authorizations: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LambdaApi {
    async fn start() -> Result<Self> {
        use http_body_util::Full;
        use hyper::body::Bytes;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let authorizations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = authorizations.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let auth = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    recorded.lock().expect("lock").push(auth);
                    let body = r#"{"Functions": [{"FunctionName": "orders", "Version": "$LATEST",
                        "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:orders"}]}"#;
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            authorizations,
            task,
        })
    }
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn httproutes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// `kubectl create -f -` of `yaml` with the admin's rights.
fn kubectl_create(cluster: &KubeCluster, yaml: &str) -> Result<()> {
    let out = cluster.kubectl_with_input(&["create", "-f", "-"], yaml)?;
    ensure!(
        out.status.success(),
        "kubectl create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The chart's generated webhook certificate and key, written to files as the gateway pod
/// mounts them, and the CA the webhook configuration trusts.
async fn chart_webhook_certificate(cluster: &KubeCluster) -> Result<(PathBuf, PathBuf, Vec<u8>)> {
    let secret = Api::<Secret>::namespaced(cluster.client(), NS)
        .get("gateway-validation-certs")
        .await?;
    let data = secret.data.unwrap_or_default();
    let file = |name: &str| -> Result<PathBuf> {
        let path = cluster.dir().join(format!("webhook-{name}"));
        std::fs::write(
            &path,
            &data.get(name).with_context(|| format!("Secret lacks {name}"))?.0,
        )?;
        Ok(path)
    };
    let ca = data.get("ca.crt").context("Secret lacks ca.crt")?.0.clone();
    Ok((file("tls.crt")?, file("tls.key")?, ca))
}

/// What the API server would do through Service gloo: TLS to the gateway's webhook for
/// the name `gloo.<namespace>.svc`, trusting only the chart's CA, then an AdmissionReview
/// (a CREATE of a valid HTTPRoute) answered with our uid.
async fn webhook_answers_as_gloo_service(addr: std::net::SocketAddr, ca_pem: &[u8]) -> Result<()> {
    use http_body_util::{BodyExt as _, Full};
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    use tokio_rustls::{TlsConnector, rustls};

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem)?)?;
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let server_name = ServerName::try_from(format!("gloo.{NS}.svc"))?;
    let uid = "7c1d0e52-0000-4000-8000-00000000c0de";
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "probe", "namespace": APPS},
        "spec": {"parentRefs": [{"name": "gw"}],
                 "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}
    });
    let gvk = json!({"group": "gateway.networking.k8s.io", "version": "v1", "kind": "HTTPRoute"});
    let gvr = json!({"group": "gateway.networking.k8s.io", "version": "v1", "resource": "httproutes"});
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "probe", "namespace": APPS, "operation": "CREATE",
            "userInfo": {"username": "kgw-admin"}, "object": route, "dryRun": false
        }
    });
    wait_for(WAIT, || async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(std::sync::Arc::new(tls.clone()))
            .connect(server_name.clone(), tcp)
            .await
            .context("TLS handshake as gloo.<namespace>.svc with the chart's CA")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::post("/validation")
            .header("host", format!("gloo.{NS}.svc:443"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(review.to_string())))?;
        let response = sender.send_request(request).await?;
        ensure!(
            response.status() == hyper::StatusCode::OK,
            "POST /validation: {}",
            response.status()
        );
        let answer: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
        ensure!(answer["response"]["uid"] == uid, "answer: {answer}");
        Ok(())
    })
    .await
}

//! The test Kubernetes cluster itself: the admin client writes, RBAC denies a
//! ServiceAccount without bindings, data survives an API server restart (etcd kept), and
//! the API server calls a validating webhook on loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kgw_harness::kube::{CertPair, KubeCluster};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio_rustls::{TlsAcceptor, rustls};

const NS: &str = "kgw-kube-cluster-test";

fn named<T: kube::Resource<DynamicType = ()> + Default>(name: &str) -> T {
    let mut object = T::default();
    *object.meta_mut() = ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    };
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_tokens_and_apiserver_restart() -> Result<()> {
    let started = Instant::now();
    let mut cluster = KubeCluster::start().await?;
    eprintln!("KubeCluster::start took {:?}", started.elapsed());
    let admin = cluster.client();
    let pp = PostParams::default();

    Api::<Namespace>::all(admin.clone()).create(&pp, &named(NS)).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    let mut cm: ConfigMap = named("settings");
    cm.data = Some(BTreeMap::from([("answer".to_string(), "42".to_string())]));
    config_maps.create(&pp, &cm).await?;

    // No controller-manager: the ServiceAccount is ours to create, its token comes from
    // the TokenRequest API.
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create(&pp, &named("nobody"))
        .await?;
    let token = cluster.token_for_service_account(NS, "nobody").await?;
    let as_sa = cluster.client_with_token(&token).await?;
    match Api::<Secret>::namespaced(as_sa, NS).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => bail!("listing Secrets as a ServiceAccount without RBAC: expected 403, got {other:?}"),
    }

    // A client-certificate user is authenticated (the 403 names it), and kubectl reads
    // the admin kubeconfig.
    let alice =
        kgw_harness::kube::client_from_kubeconfig(cluster.write_kubeconfig_for_user("alice", Some("testers"))?).await?;
    match Api::<Secret>::namespaced(alice, NS).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains("\"alice\"") => {}
        other => bail!("listing Secrets as alice: expected 403 for User \"alice\", got {other:?}"),
    }
    let out = cluster
        .kubectl()
        .args(["get", "configmap", "settings", "-n", NS, "-o", "name"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/settings",
        "kubectl: {out:?}"
    );

    let restarted = Instant::now();
    cluster.restart_apiserver().await?;
    eprintln!("restart_apiserver took {:?}", restarted.elapsed());
    let read = config_maps.get("settings").await?;
    assert_eq!(read.data, cm.data, "the ConfigMap after the API server restart");
    Ok(())
}

/// Label of the ConfigMaps sent to the test webhook; the value `deny` is denied.
const WEBHOOK_LABEL: &str = "kgw-test-webhook";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_calls_a_webhook_on_loopback() -> Result<()> {
    let cluster = KubeCluster::start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(serve_webhook(
        listener,
        cluster.serving_cert(&[&addr.ip().to_string()])?,
        calls.clone(),
    ));

    let mut config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": "kgw-test" },
        "webhooks": [{
            "name": "configmaps.kgw.test",
            "clientConfig": { "url": format!("https://{addr}/validate") },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"] }],
            "objectSelector": { "matchExpressions": [{ "key": WEBHOOK_LABEL, "operator": "Exists" }] },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))?;
    for webhook in config.webhooks.iter_mut().flatten() {
        webhook.client_config.ca_bundle = Some(ByteString(cluster.ca_pem().as_bytes().to_vec()));
    }
    Api::<ValidatingWebhookConfiguration>::all(cluster.client())
        .create(&PostParams::default(), &config)
        .await?;

    // The API server picks the configuration up from its informer: retry until denied.
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        match config_maps
            .create(&PostParams::default(), &labelled(&format!("denied-{attempt}"), "deny"))
            .await
        {
            Err(kube::Error::Api(status)) if status.message.contains("denied by the kgw test webhook") => break,
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => bail!("expected the webhook to deny the ConfigMap, got {other:?}"),
        }
    }
    config_maps
        .create(&PostParams::default(), &labelled("allowed", "allow"))
        .await
        .context("a ConfigMap the webhook allows")?;
    assert!(calls.load(Ordering::Relaxed) >= 2, "the webhook was called");
    server.abort();
    Ok(())
}

fn labelled(name: &str, value: &str) -> ConfigMap {
    let mut cm: ConfigMap = named(name);
    cm.metadata.labels = Some(BTreeMap::from([(WEBHOOK_LABEL.to_string(), value.to_string())]));
    cm
}

/// An HTTPS validating webhook with the cluster CA's certificate: denies ConfigMaps
/// labelled `deny`.
async fn serve_webhook(listener: tokio::net::TcpListener, cert: CertPair, calls: Arc<AtomicUsize>) -> Result<()> {
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
        )?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(review_response(&review)))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn review_response(review: &Value) -> String {
    let request = &review["request"];
    let denied = request["object"]["metadata"]["labels"][WEBHOOK_LABEL] == "deny";
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": !denied,
            "status": { "message": if denied { "denied by the kgw test webhook" } else { "" } },
        },
    })
    .to_string()
}

//! The `discovery` binary finds functions and writes them on the Upstreams: a Service whose
//! endpoint serves Swagger, and a declared static Upstream on the same server, get their
//! functions; a Service labelled `discovery.solo.io/function_discovery=disabled` is never
//! probed (fdsMode BLACKLIST); each probe's outcome is in `kgw_discovery_probes`, and
//! `discovery replicas -o json` shows owners and probes.
#![forbid(unsafe_code)]

mod support;

use std::{path::Path, time::Duration};

use support::{
    DiscoveryBuckets, NatsServer, eventually, function_names, http_server, probe_status, replicas_report, run_system,
    start_discovery,
};

const WAIT: Duration = Duration::from_secs(30);

const SWAGGER: &str = r#"{"swagger": "2.0", "info": {"title": "pets", "version": "1"},
  "paths": {"/pets": {"get": {"operationId": "listPets"}, "post": {"operationId": "addPet"}}}}"#;

fn config(dir: &Path, port: u16) {
    let service = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}\n\
             spec:\n  ports: [{{name: http, port: 80}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
        )
    };
    std::fs::write(dir.join("pets.yaml"), service("pets", "")).expect("write");
    std::fs::write(
        dir.join("quiet.yaml"),
        service("quiet", "discovery.solo.io/function_discovery: disabled"),
    )
    .expect("write");
    std::fs::write(
        dir.join("declared.yaml"),
        format!(
            "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: pets-static, namespace: default}}\n\
             spec:\n  static:\n    hosts: [{{addr: 127.0.0.1, port: {port}}}]\n"
        ),
    )
    .expect("write");
}

#[test]
fn functions_are_found_and_written_on_the_upstreams() {
    let nats = NatsServer::start();
    run_system(Duration::from_secs(120), scenario(nats.url.clone()));
}

async fn scenario(url: String) {
    let server = http_server(&[("/swagger.json", SWAGGER)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).expect("mkdir");
    config(&config_dir, server.addr.port());
    let (_discovery, DiscoveryBuckets { upstreams, probes }) =
        start_discovery(dir.path(), &config_dir, &url, |_| {}).await;
    let want = vec!["addPet".to_string(), "listPets".to_string()];
    for key in ["default.default-pets-80", "default.pets-static"] {
        eventually(WAIT, &format!("functions on {key}"), || async {
            (function_names(&upstreams, key).await.as_ref() == Some(&want)).then_some(())
        })
        .await;
        let status = eventually(WAIT, &format!("the probe status of {key}"), || async {
            probe_status(&probes, key).await.filter(|s| s.functions == 2)
        })
        .await;
        assert_eq!(status.detector, "openapi", "{status:?}");
        assert!(status.enabled && status.source.ends_with("/swagger.json"), "{status:?}");
        assert!(status.probed_at_unix_ms > 0 && status.next_probe_unix_ms > status.probed_at_unix_ms);
    }
    let quiet = eventually(WAIT, "the quiet service's status", || async {
        probe_status(&probes, "default.default-quiet-80").await
    })
    .await;
    assert!(!quiet.enabled && quiet.probed_at_unix_ms == 0, "{quiet:?}");
    assert_eq!(
        function_names(&upstreams, "default.default-quiet-80").await,
        Some(Vec::new())
    );
    // Two probes (the Service and the declared Upstream), each stopping at the document.
    let asked = server.asked.lock().expect("lock").clone();
    assert_eq!(asked.iter().filter(|p| *p == "/swagger.json").count(), 2, "{asked:?}");

    // `discovery replicas -o json` tells the same.
    let report = replicas_report(&url).await;
    let replicas = report["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1, "{report}");
    assert_eq!(replicas[0]["shards"].as_array().map(Vec::len), Some(16), "{report}");
    assert_eq!(replicas[0]["upstreams"], 3, "{report}");
    let pets = &report["upstreams"]["default.default-pets-80"];
    assert_eq!(pets["owner"], replicas[0]["name"], "{report}");
    assert_eq!(pets["probe"]["detector"], "openapi", "{report}");
    assert_eq!(
        report["upstreams"]["default.default-quiet-80"]["probe"]["enabled"], false,
        "{report}"
    );
}

//! The `discovery` binary lists the functions of declared Lambda (`aws`) Upstreams: with
//! the credentials of the Secret each names (read from the config source, `data` base64
//! as Kubernetes stores it), at `--aws-lambda-endpoint` (a real moto_server), and writes
//! them on the Upstream in `kgw_upstreams` beside the functions it declares. An Upstream
//! whose Secret is missing, or lacks a key, is not listed, and its probe status says which
//! Secret or key; once the Secret appears it is listed at once. `discovery replicas`
//! shows both.
#![forbid(unsafe_code)]

mod moto;
mod support;

use std::{path::Path, time::Duration};

use async_nats::jetstream::kv;
use kgw_proto::v1::function::Spec;
use support::{
    DiscoveryBuckets, NatsServer, eventually, probe_status, replicas_report, run_system, start_discovery,
    write_atomically,
};

const WAIT: Duration = Duration::from_secs(30);

/// An `aws` Upstream named `name` whose Secret is `secret`.
fn upstream(name: &str, secret: &str, declared: &str) -> String {
    format!(
        "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  aws:\n    region: us-east-1\n    secretRef: {{name: {secret}, namespace: default}}\n{declared}"
    )
}

/// A Secret with these keys, base64 in `data` as the API server keeps them.
fn secret(name: &str, keys: &[(&str, &str)]) -> String {
    let data: String = keys
        .iter()
        .map(|(k, v)| format!("  {k}: {}\n", base64(v.as_bytes())))
        .collect();
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: Opaque\ndata:\n{data}")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const CREDENTIALS: &[(&str, &str)] = &[
    ("aws_access_key_id", "AKIDTESTING"),
    // A trailing newline, as `echo secret | base64` leaves: trimmed.
    ("aws_secret_access_key", "testing-secret\n"),
];

fn config(dir: &Path) {
    // A declared function (its logical name is not a function's name) beside those found.
    let declared =
        "    lambdaFunctions:\n    - {lambdaFunctionName: orders, logicalName: legacy-orders, qualifier: v1}\n";
    write_atomically(&dir.join("lambda.yaml"), &upstream("lambda", "aws-creds", declared));
    write_atomically(&dir.join("creds.yaml"), &secret("aws-creds", CREDENTIALS));
    write_atomically(&dir.join("late.yaml"), &upstream("lambda-late", "late-creds", ""));
    write_atomically(
        &dir.join("half.yaml"),
        &format!(
            "{}---\n{}",
            upstream("lambda-half", "half-creds", ""),
            secret("half-creds", &[("aws_access_key_id", "AKIDTESTING")])
        ),
    );
}

async fn functions(store: &kv::Store, key: &str) -> Option<Vec<(String, String)>> {
    let functions = support::upstream(store, key)
        .await?
        .functions
        .into_iter()
        .map(|f| match f.spec {
            Some(Spec::Lambda(l)) => (f.name, format!("{}:{}", l.function_name, l.qualifier)),
            other => (f.name, format!("{other:?}")),
        })
        .collect();
    Some(functions)
}

#[test]
fn lambda_functions_are_listed_with_the_secrets_credentials() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = moto::start(&dir.path().join("moto.log"));
    run_system(
        Duration::from_secs(180),
        scenario(nats.url.clone(), moto.url.clone(), dir.path().to_path_buf()),
    );
}

async fn scenario(url: String, moto_url: String, dir: std::path::PathBuf) {
    moto::create_functions(&moto_url, &["orders", "billing"]).await;
    let config_dir = dir.join("config");
    std::fs::create_dir(&config_dir).expect("mkdir");
    config(&config_dir);
    let (_discovery, DiscoveryBuckets { upstreams, probes }) = start_discovery(&dir, &config_dir, &url, |command| {
        command.args(["--aws-lambda-endpoint", &moto_url]);
    })
    .await;

    // The functions in moto, and the declared one, on the Upstream.
    let want = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    let listed = want(&[
        ("billing", "billing:$LATEST"),
        ("legacy-orders", "orders:v1"),
        ("orders", "orders:$LATEST"),
    ]);
    eventually(WAIT, "the functions on default.lambda", || async {
        (functions(&upstreams, "default.lambda").await.as_ref() == Some(&listed)).then_some(())
    })
    .await;
    let found = eventually(WAIT, "the probe status of default.lambda", || async {
        probe_status(&probes, "default.lambda")
            .await
            .filter(|s| s.functions == 2)
    })
    .await;
    assert_eq!(found.detector, "lambda", "{found:?}");
    assert_eq!(found.source, moto_url, "{found:?}");
    assert!(
        found.enabled && found.error.is_empty() && found.probed_at_unix_ms > 0,
        "{found:?}"
    );

    // No Secret, and a Secret without the secret key: not listed, and said.
    let late = eventually(WAIT, "the probe status of default.lambda-late", || async {
        probe_status(&probes, "default.lambda-late")
            .await
            .filter(|s| !s.error.is_empty())
    })
    .await;
    assert!(late.error.contains("Secret default/late-creds not found"), "{late:?}");
    assert!(late.detector.is_empty() && late.functions == 0, "{late:?}");
    let half = eventually(WAIT, "the probe status of default.lambda-half", || async {
        probe_status(&probes, "default.lambda-half")
            .await
            .filter(|s| !s.error.is_empty())
    })
    .await;
    assert!(
        half.error
            .contains("Secret default/half-creds has no aws_secret_access_key"),
        "{half:?}"
    );
    assert_eq!(functions(&upstreams, "default.lambda-late").await, Some(Vec::new()));
    assert_eq!(functions(&upstreams, "default.lambda-half").await, Some(Vec::new()));

    // `discovery replicas -o json` shows the same.
    let report = replicas_report(&url).await;
    let probe = |key: &str| report["upstreams"][key]["probe"].clone();
    assert_eq!(probe("default.lambda")["detector"], "lambda", "{report}");
    assert_eq!(probe("default.lambda")["functions"], 2, "{report}");
    let late_error = probe("default.lambda-late")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(late_error.contains("late-creds not found"), "{report}");

    // The Secret appears: listed at once (not after the failure's backoff).
    write_atomically(&config_dir.join("late-creds.yaml"), &secret("late-creds", CREDENTIALS));
    let both = want(&[("billing", "billing:$LATEST"), ("orders", "orders:$LATEST")]);
    eventually(
        Duration::from_secs(10),
        "the functions on default.lambda-late",
        || async { (functions(&upstreams, "default.lambda-late").await.as_ref() == Some(&both)).then_some(()) },
    )
    .await;
    let late = eventually(WAIT, "the new probe status of default.lambda-late", || async {
        probe_status(&probes, "default.lambda-late")
            .await
            .filter(|s| s.functions == 2)
    })
    .await;
    assert!(late.error.is_empty() && late.detector == "lambda", "{late:?}");
}

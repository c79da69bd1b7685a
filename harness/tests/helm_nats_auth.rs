//! The chart's NATS authorization, rendered by the real `helm` and loaded by a real
//! nats-server: anonymous clients are refused, each process's user (with the password the
//! chart generated into Secret nats-users) can do its job and not another's.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kgw_harness::process::Process;
use kgw_proto::nats::{PROXIES_BUCKET, users};
use serde::Deserialize as _;

/// The chart rendered offline: its Secrets by name.
fn rendered_secrets(dir: &Path) -> Result<Vec<Secret>> {
    let tools = kgw_harness::kube::tools()?;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kgw");
    let out = Command::new(&tools.helm)
        .args(["template", "kgw"])
        .arg(&chart)
        .args(["--namespace", "kgw-system", "--kube-version", "1.33.0"])
        .env("HELM_CACHE_HOME", dir.join("cache"))
        .env("HELM_CONFIG_HOME", dir.join("config"))
        .env("HELM_DATA_HOME", dir.join("data"))
        .output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut secrets = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout)?) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("Secret") {
            secrets.push(serde_yaml::from_value(value)?);
        }
    }
    Ok(secrets)
}

async fn connect(
    url: &str,
    user: &str,
    password: &str,
) -> Result<(async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
    let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password.into())
        .custom_inbox_prefix(users::inbox_prefix(user))
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, errors))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_nats_users_work_on_a_real_nats_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secrets = rendered_secrets(dir.path())?;
    let named = |name: &str| secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name));
    let conf = named("nats-config")
        .and_then(|s| s.string_data.as_ref())
        .and_then(|d| d.get("nats.conf"))
        .context("Secret nats-config with nats.conf")?;
    let passwords = named("nats-users")
        .and_then(|s| s.data.clone())
        .context("Secret nats-users")?;
    let password =
        |user: &str| -> Result<String> { Ok(String::from_utf8(passwords.get(user).context("a password")?.0.clone())?) };
    let conf_path = dir.path().join("nats.conf");
    std::fs::write(&conf_path, conf)?;

    let lease = kgw_harness::addr::allocate()?;
    let addr = lease.layout.nats_addr();
    let mut server = Process::new(
        "nats",
        kgw_harness::ensure_nats_server()?,
        [
            "-c".to_string(),
            conf_path.display().to_string(),
            "-a".into(),
            addr.ip().to_string(),
            "-p".into(),
            addr.port().to_string(),
            "-js".into(),
            "-sd".into(),
            dir.path().join("store").display().to_string(),
        ],
        dir.path().join("nats.log"),
    );
    server.start()?;
    let url = format!("nats://{addr}");
    kgw_harness::wait_for(Duration::from_secs(10), || async {
        ensure!(std::net::TcpStream::connect(addr).is_ok(), "nats-server not up yet");
        Ok(())
    })
    .await?;

    ensure!(
        async_nats::connect(&url).await.is_err(),
        "an anonymous client was let in"
    );
    let (gateway, _) = connect(&url, users::GATEWAY, &password(users::GATEWAY)?).await?;
    let proxies = async_nats::jetstream::new(gateway)
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: PROXIES_BUCKET.into(),
            history: 1,
            ..Default::default()
        })
        .await?;
    proxies.put("default.gw", Bytes::from_static(b"proxy")).await?;

    let (controller, mut errors) = connect(&url, users::CONTROLLER, &password(users::CONTROLLER)?).await?;
    let read = async_nats::jetstream::new(controller)
        .get_key_value(PROXIES_BUCKET)
        .await?;
    ensure!(read.get("default.gw").await?.as_deref() == Some(&b"proxy"[..]));
    let _ = tokio::time::timeout(Duration::from_secs(2), read.put("default.gw", Bytes::from_static(b"x"))).await;
    let denied = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    ensure!(denied, "the controller's write was not refused");
    ensure!(proxies.get("default.gw").await?.as_deref() == Some(&b"proxy"[..]));
    Ok(())
}

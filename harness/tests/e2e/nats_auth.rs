//! The bus is authenticated (the harness runs it as the chart does): anonymous clients are
//! refused, and each process's user may do only what that process does: the controller
//! reads buckets but writes none, discovery cannot touch Proxies, the gateway cannot touch
//! Upstreams. Every other e2e test runs its processes with these same users.
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use kgw_harness::{Component, System, SystemConfig};
use kgw_proto::nats::{PROXIES_BUCKET, UPSTREAMS_BUCKET, users};
use tokio::sync::mpsc;

/// A client as `user`, and the errors the server reports to it.
async fn connect_as(system: &System, user: &str) -> Result<(async_nats::Client, mpsc::UnboundedReceiver<String>)> {
    let (user, password) = system
        .nats_users()
        .and_then(|u| u.credentials(user))
        .context("the broker authenticates")?;
    let (errors_tx, errors) = mpsc::unbounded_channel();
    let client = system
        .nats_options()
        .await?
        .user_and_password(user.clone(), password)
        .custom_inbox_prefix(users::inbox_prefix(&user))
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .connect(system.layout().nats_url())
        .await?;
    Ok((client, errors))
}

/// Waits for the server to report a permissions violation on `subject`.
async fn denied(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
                return Ok(());
            }
        }
        anyhow::bail!("connection closed")
    })
    .await
    .with_context(|| format!("no permissions violation for {subject}"))?
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_clients_are_refused_and_each_user_does_only_its_job() -> Result<()> {
    let system = System::start(SystemConfig {
        components: vec![Component::Nats],
        ..Default::default()
    })
    .await?;
    // Anonymous: refused even with a valid client certificate (TLS is not a NATS user).
    let anonymous = system.nats_options().await?.connect(system.layout().nats_url()).await;
    ensure!(anonymous.is_err(), "an anonymous client was let in");
    let plain = async_nats::connect(system.layout().nats_url()).await;
    ensure!(plain.is_err(), "an anonymous plain-text client was let in");

    // The writers create their buckets (as gateway and discovery do on start).
    let (gateway, _) = connect_as(&system, users::GATEWAY).await?;
    let gateway_js = async_nats::jetstream::new(gateway.clone());
    let proxies = create_bucket(&gateway_js, PROXIES_BUCKET).await?;
    proxies.put("default.gw", Bytes::from_static(b"proxy")).await?;
    let (discovery, _) = connect_as(&system, users::DISCOVERY).await?;
    let discovery_js = async_nats::jetstream::new(discovery.clone());
    let upstreams = create_bucket(&discovery_js, UPSTREAMS_BUCKET).await?;
    upstreams.put("default.echo", Bytes::from_static(b"upstream")).await?;

    // The controller reads both buckets, writes neither.
    let (controller, mut controller_errors) = connect_as(&system, users::CONTROLLER).await?;
    let controller_js = async_nats::jetstream::new(controller.clone());
    let read = controller_js.get_key_value(PROXIES_BUCKET).await?;
    ensure!(read.get("default.gw").await?.as_deref() == Some(&b"proxy"[..]));
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        read.put("default.gw", Bytes::from_static(b"forged")),
    )
    .await;
    denied(&mut controller_errors, "$KV.kgw_proxies.default.gw").await?;
    ensure!(
        proxies.get("default.gw").await?.as_deref() == Some(&b"proxy"[..]),
        "the Proxy was overwritten"
    );

    // Discovery cannot delete a Proxy; the gateway cannot delete an Upstream.
    let (discovery2, mut discovery_errors) = connect_as(&system, users::DISCOVERY).await?;
    let foreign = async_nats::jetstream::new(discovery2)
        .get_key_value(PROXIES_BUCKET)
        .await;
    ensure!(foreign.is_err(), "discovery opened the Proxies bucket");
    let _ = discovery_errors.try_recv();
    let (gateway2, mut gateway_errors) = connect_as(&system, users::GATEWAY).await?;
    gateway2.publish("$KV.kgw_upstreams.default.echo", Bytes::new()).await?;
    gateway2.flush().await?;
    denied(&mut gateway_errors, "$KV.kgw_upstreams.default.echo").await?;
    ensure!(
        upstreams.get("default.echo").await?.is_some(),
        "the Upstream was deleted"
    );

    // The access-log sink publishes access logs, nothing else.
    let (sink, mut sink_errors) = connect_as(&system, users::ACCESS_LOG).await?;
    sink.publish("kgw.accesslog.default.gw", Bytes::from_static(b"{}"))
        .await?;
    sink.publish("kgw.discovery.heartbeat", Bytes::from_static(b"forged"))
        .await?;
    sink.flush().await?;
    denied(&mut sink_errors, "kgw.discovery.heartbeat").await?;
    // It may create its stream and read its config, not change, purge or delete it.
    for api in ["UPDATE", "PURGE", "DELETE"] {
        let subject = format!("$JS.API.STREAM.{api}.{}", kgw_proto::nats::ACCESS_LOG_STREAM);
        sink.publish(subject.clone(), Bytes::from_static(b"{}")).await?;
        sink.flush().await?;
        denied(&mut sink_errors, &subject).await?;
    }
    Ok(())
}

/// Opens (creating) a bucket the way the processes do: history 1, file storage.
async fn create_bucket(js: &async_nats::jetstream::Context, bucket: &str) -> Result<async_nats::jetstream::kv::Store> {
    Ok(js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            ..Default::default()
        })
        .await?)
}

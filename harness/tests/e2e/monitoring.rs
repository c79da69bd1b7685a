//! Health and metrics: gateway (9091), controller (9092) and access-log (9093) answer
//! `/healthz` and `/readyz` with 200 once the system is up, and after a request through Envoy
//! their `/metrics` show it (translations, xDS responses, access-log entries).
use anyhow::{Context as _, Result, bail, ensure};
use kgw_harness::{Component, System, get, wait_for, wait_status, write_manifest_atomically};

use crate::support::{WAIT, config_dir, route_yaml, start};

/// The sum of every sample of `name` (all label sets); `None` when there is none.
fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.chars().next()? {
                ' ' => rest.trim(),
                '{' => rest.rsplit_once('}')?.1.trim(),
                _ => return None, // a longer name
            };
            value.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn monitoring_url(system: &System, c: Component, path: &str) -> Result<String> {
    system
        .monitoring_url(c, path)
        .with_context(|| format!("{c} has no monitoring port"))
}

/// Waits until every metric of `positive` has a sample above 0 and every metric of
/// `present` has one, on `c`'s `/metrics`.
async fn wait_metrics(system: &System, c: Component, positive: &[&str], present: &[&str]) -> Result<String> {
    let url = monitoring_url(system, c, "/metrics")?;
    wait_for(WAIT, || async {
        let response = get(&url, None).await?;
        ensure!(response.status.as_u16() == 200, "GET {url}: {}", response.status);
        let content_type = response.header("content-type");
        ensure!(
            content_type.starts_with("application/openmetrics-text"),
            "GET {url}: content-type {content_type}"
        );
        let text = response.text();
        for name in positive {
            match sample_sum(&text, name) {
                Some(sum) if sum > 0.0 => {}
                other => bail!("{c}: {name} is {other:?}, want > 0 in\n{text}"),
            }
        }
        for name in present {
            ensure!(sample_sum(&text, name).is_some(), "{c}: no {name} in\n{text}");
        }
        Ok(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_readyz_and_metrics_of_every_process() -> Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    write_manifest_atomically(
        config_dir(system),
        "route.yaml",
        &route_yaml("echo", "/echo", &[("echo", 1)]),
    )?;
    wait_status(&system.url("/echo/hi"), None, 200, WAIT).await?;

    for c in [Component::Gateway, Component::Controller, Component::AccessLog] {
        let healthz = get(&monitoring_url(system, c, "/healthz")?, None).await?;
        assert_eq!(healthz.status.as_u16(), 200, "{c} /healthz: {}", healthz.text());
        assert_eq!(healthz.text(), "ok\n");
        wait_status(&monitoring_url(system, c, "/readyz")?, None, 200, WAIT).await?;
    }
    assert_eq!(system.monitoring_url(Component::Discovery, "/healthz"), None);

    wait_metrics(
        system,
        Component::Gateway,
        &[
            "kgw_gateway_translations_total",
            "kgw_gateway_translation_duration_seconds_count",
            "kgw_gateway_proxies",
            "kgw_gateway_kv_writes_total",
            "kgw_nats_connected",
        ],
        &["kgw_gateway_config_problems", "kgw_gateway_kv_write_errors_total"],
    )
    .await?;
    let controller = wait_metrics(
        system,
        Component::Controller,
        &[
            "kgw_controller_translations_total",
            "kgw_controller_translation_duration_seconds_count",
            "kgw_controller_xds_responses_total",
            "kgw_controller_xds_acks_total",
            "kgw_controller_xds_connected_envoys",
            "kgw_controller_snapshot_bytes",
            "kgw_nats_connected",
        ],
        &["kgw_controller_xds_nacks_total"],
    )
    .await?;
    // Per type: Envoy asked for (and accepted) clusters and listeners at least.
    for type_url in [
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ] {
        for counter in [
            "kgw_controller_xds_responses_total",
            "kgw_controller_xds_response_bytes_total",
        ] {
            let name = format!("{counter}{{type_url=\"{type_url}\"}}");
            let line = controller.lines().find(|l| l.starts_with(&name));
            let value: f64 = line
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_default();
            assert!(value > 0.0, "{counter}: none of {type_url}: {line:?}");
        }
    }

    // Envoy flushes access logs about once a second: the entry shows up within WAIT.
    wait_metrics(
        system,
        Component::AccessLog,
        &[
            "kgw_access_log_streams_total",
            "kgw_access_log_entries_received_total",
            "kgw_access_log_lines_written_total",
            "kgw_access_log_publishes_sent_total",
            "kgw_nats_connected",
        ],
        &[
            "kgw_access_log_publishes_dropped_total",
            "kgw_access_log_write_errors_total",
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_while_nats_is_down() -> Result<()> {
    let mut running = start(&["echo"]).await?;
    let system = &mut running.system;
    let gateway = monitoring_url(system, Component::Gateway, "/readyz")?;
    let controller = monitoring_url(system, Component::Controller, "/readyz")?;
    let access_log = monitoring_url(system, Component::AccessLog, "/readyz")?;
    for url in [&gateway, &controller, &access_log] {
        wait_status(url, None, 200, WAIT).await?;
    }

    system.stop(Component::Nats).await?;
    for url in [&gateway, &controller] {
        let response = wait_status(url, None, 503, WAIT).await?;
        assert!(
            response.text().contains("not connected to NATS"),
            "{url}: {}",
            response.text()
        );
    }
    // access-log serves files without NATS: still ready, still alive.
    assert_eq!(get(&access_log, None).await?.status.as_u16(), 200);
    let healthz = monitoring_url(system, Component::Gateway, "/healthz")?;
    assert_eq!(get(&healthz, None).await?.status.as_u16(), 200);

    system.restart(Component::Nats).await?;
    for url in [&gateway, &controller] {
        wait_status(url, None, 200, WAIT).await?;
    }
    Ok(())
}

use std::time::{Duration, Instant};

use kgw_harness::{
    SystemConfig, envoy::XdsProtocol, get, remove_manifest, wait_for, wait_status, write_manifest_atomically,
};

use crate::support::{WAIT, config_dir, route_yaml, service_yaml, spread, start, start_with};

#[tokio::test(flavor = "multi_thread")]
async fn routed_path_200_unrouted_404_and_edits_go_live() -> anyhow::Result<()> {
    route_edit_and_removal_go_live(XdsProtocol::StateOfTheWorld).await
}

/// The same with Envoy on incremental xDS (`DELTA_GRPC`): the edit and the removal arrive
/// as per-resource updates and `removed_resources`.
#[tokio::test(flavor = "multi_thread")]
async fn delta_xds_routed_path_200_unrouted_404_and_edits_go_live() -> anyhow::Result<()> {
    route_edit_and_removal_go_live(XdsProtocol::Delta).await
}

/// A route answers 200 (and an unrouted path 404), an edit moves it within 5 s, a removal
/// ends it; Envoy speaks `protocol`.
async fn route_edit_and_removal_go_live(protocol: XdsProtocol) -> anyhow::Result<()> {
    let config = SystemConfig {
        xds_protocol: protocol,
        ..SystemConfig::default()
    };
    let running = start_with(&["echo"], config).await?;
    let system = &running.system;
    let bootstrap = get(&system.admin_url("/config_dump?mask=bootstrap"), None).await?;
    let api_type = format!("\"api_type\":\"{}\"", protocol.api_type());
    assert!(
        bootstrap.text().replace(char::is_whitespace, "").contains(&api_type),
        "Envoy's bootstrap has no {api_type}: {}",
        bootstrap.text()
    );
    let dir = config_dir(system);
    write_manifest_atomically(dir, "route.yaml", &route_yaml("echo", "/echo", &[("echo", 1)]))?;
    let ok = wait_status(&system.url("/echo/hi"), None, 200, WAIT).await?;
    assert_eq!(ok.header("x-backend"), "echo");
    assert_eq!(ok.json()?["path"], "/echo/hi");
    assert_eq!(get(&system.url("/elsewhere"), None).await?.status.as_u16(), 404);

    // An edit on disk is live within seconds.
    let edited = Instant::now();
    write_manifest_atomically(dir, "route.yaml", &route_yaml("echo", "/moved", &[("echo", 1)]))?;
    wait_status(&system.url("/moved"), None, 200, WAIT).await?;
    println!("edit → live: {:?}", edited.elapsed());
    assert!(
        edited.elapsed() < Duration::from_secs(5),
        "edit took {:?}",
        edited.elapsed()
    );
    wait_status(&system.url("/echo/hi"), None, 404, WAIT).await?;

    // A deleted route stops serving.
    remove_manifest(dir, "route.yaml")?;
    wait_status(&system.url("/moved"), None, 404, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_split_80_20_over_1000_requests() -> anyhow::Result<()> {
    let running = start(&["v1", "v2"]).await?;
    let system = &running.system;
    write_manifest_atomically(
        config_dir(system),
        "route.yaml",
        &route_yaml("split", "/", &[("v1", 80), ("v2", 20)]),
    )?;
    // Both clusters must be live before counting.
    wait_for(WAIT, || async {
        let counts = spread(system, "/", 40).await?;
        anyhow::ensure!(counts.len() == 2, "not both backends yet: {counts:?}");
        Ok(())
    })
    .await?;
    let counts = spread(system, "/", 1000).await?;
    let v1 = counts.get("v1").copied().unwrap_or(0) as f64 / 10.0;
    println!("80/20 split over 1000 requests: {counts:?}");
    assert!((75.0..=85.0).contains(&v1), "v1 got {v1}% (want 80 ± 5): {counts:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_removed_from_slice_gets_no_more_traffic() -> anyhow::Result<()> {
    let running = start(&["a", "b"]).await?;
    let system = &running.system;
    let dir = config_dir(system);
    // One Service "pool" whose slice lists both backends; endpoints of one slice port
    // share the port, so b also answers on a's port.
    let a = running.backends[0];
    let b = std::net::SocketAddr::new(running.backends[1].ip(), a.port());
    kgw_harness::spawn_echo(b, "b").await?;
    write_manifest_atomically(dir, "pool.yaml", &service_yaml("pool", &[a, b]))?;
    write_manifest_atomically(dir, "route.yaml", &route_yaml("pool", "/", &[("pool", 1)]))?;
    wait_for(WAIT, || async {
        let counts = spread(system, "/", 30).await?;
        anyhow::ensure!(counts.len() == 2, "not both endpoints yet: {counts:?}");
        Ok(())
    })
    .await?;

    write_manifest_atomically(dir, "pool.yaml", &service_yaml("pool", &[a]))?;
    // Once the change lands, no request reaches b.
    wait_for(WAIT, || async {
        let counts = spread(system, "/", 30).await?;
        anyhow::ensure!(!counts.contains_key("b"), "b still gets traffic: {counts:?}");
        Ok(())
    })
    .await?;
    let counts = spread(system, "/", 100).await?;
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_has_one_line_per_request() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    write_manifest_atomically(
        config_dir(system),
        "route.yaml",
        &route_yaml("echo", "/", &[("echo", 1)]),
    )?;
    wait_status(&system.url("/warmup"), None, 200, WAIT).await?;
    let lines = |path: &std::path::Path| std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0);
    let log = system.access_log_path();
    // Let the warm-up requests' entries arrive, then count from there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = lines(&log);
    let sent = 120;
    for i in 0..sent {
        let status = get(&system.url(&format!("/req/{i}")), None).await?.status.as_u16();
        assert_eq!(status, 200);
    }
    wait_for(WAIT, || async {
        let now = lines(&log) - before;
        anyhow::ensure!(now >= sent, "{now} of {sent} entries so far");
        Ok(())
    })
    .await?;
    // And no more than that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = std::fs::read_to_string(&log)?;
    let entries: Vec<serde_json::Value> = text
        .lines()
        .skip(before)
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(entries.len(), sent, "exactly one entry per request");
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["path"], format!("/req/{i}"));
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["gateway"], "default/gw");
        assert_eq!(entry["upstream_cluster"], "default-echo-80_default");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_file_keeps_good_routes_and_names_file_and_field() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let dir = config_dir(system);
    write_manifest_atomically(dir, "good.yaml", &route_yaml("good", "/good", &[("echo", 1)]))?;
    write_manifest_atomically(dir, "other.yaml", &route_yaml("other", "/other", &[("echo", 1)]))?;
    wait_status(&system.url("/good"), None, 200, WAIT).await?;
    wait_status(&system.url("/other"), None, 200, WAIT).await?;

    // other.yaml breaks: a string where a port number goes. Its last good version stays.
    let bad = route_yaml("other", "/other-v2", &[("echo", 1)]).replace("port: 80", "port: eighty");
    write_manifest_atomically(dir, "other.yaml", &bad)?;
    // And a file that is not YAML at all.
    write_manifest_atomically(dir, "broken.yaml", "kind: [unclosed\n")?;
    let status = wait_for(WAIT, || async {
        let out = std::process::Command::new(kgw_harness::bins::bin("gateway")?)
            .args(["status", "--nats-url", &system.nats_url(), "problems"])
            .args(system.admin_cli_args())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        anyhow::ensure!(
            text.contains("other.yaml") && text.contains("broken.yaml"),
            "status so far: {text}"
        );
        Ok(text)
    })
    .await?;
    assert!(
        status.contains("spec.rules[0].backendRefs[0].port"),
        "names the field: {status}"
    );
    assert!(
        status.contains("HTTPRoute/default/other"),
        "names the resource: {status}"
    );
    // Both good routes keep serving; the broken edit did not apply.
    for path in ["/good", "/other"] {
        assert_eq!(get(&system.url(path), None).await?.status.as_u16(), 200, "{path}");
    }
    assert_eq!(get(&system.url("/other-v2"), None).await?.status.as_u16(), 404);
    let log = std::fs::read_to_string(system.log_path(kgw_harness::Component::Gateway))?;
    assert!(
        log.contains("other.yaml") && log.contains("backendRefs[0].port"),
        "gateway log names file and field"
    );
    Ok(())
}

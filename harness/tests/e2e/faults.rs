use std::time::Duration;

use kgw_harness::{Component, get, wait_status, write_manifest_atomically};

use crate::support::{WAIT, config_dir, route_yaml, start};

/// Requests during `during` must all succeed; returns how many were sent.
async fn steady(system: &kgw_harness::System, path: &str, during: Duration) -> anyhow::Result<usize> {
    let until = std::time::Instant::now() + during;
    let mut sent = 0;
    while std::time::Instant::now() < until {
        let response = get(&system.url(path), None).await?;
        anyhow::ensure!(
            response.status.as_u16() == 200,
            "request {sent} failed: {}",
            response.status
        );
        sent += 1;
    }
    Ok(sent)
}

/// A system with one echo backend and route `/a` to it, already serving.
async fn serving_route_a() -> anyhow::Result<(crate::support::Running, std::path::PathBuf)> {
    let running = start(&["echo"]).await?;
    let dir = config_dir(&running.system).to_path_buf();
    write_manifest_atomically(&dir, "a.yaml", &route_yaml("a", "/a", &[("echo", 1)]))?;
    wait_status(&running.system.url("/a"), None, 200, WAIT).await?;
    Ok((running, dir))
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_kill9_traffic_flows_and_restart_brings_new_route() -> anyhow::Result<()> {
    let (mut running, dir) = serving_route_a().await?;
    let system = &mut running.system;

    system.kill9(Component::Controller)?;
    let sent = steady(system, "/a", Duration::from_secs(2)).await?;
    println!("{sent} requests served while the controller was down");
    write_manifest_atomically(&dir, "b.yaml", &route_yaml("b", "/b", &[("echo", 1)]))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&system.url("/b"), None).await?.status.as_u16(),
        404,
        "no controller, no new config"
    );

    system.restart(Component::Controller).await?;
    wait_status(&system.url("/b"), None, 200, WAIT).await?;
    assert_eq!(get(&system.url("/a"), None).await?.status.as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_kill9_traffic_flows_and_restart_brings_later_edit() -> anyhow::Result<()> {
    let (mut running, dir) = serving_route_a().await?;
    let system = &mut running.system;

    system.kill9(Component::Nats)?;
    let sent = steady(system, "/a", Duration::from_secs(2)).await?;
    println!("{sent} requests served while nats-server was down");

    system.restart(Component::Nats).await?;
    write_manifest_atomically(&dir, "b.yaml", &route_yaml("b", "/b", &[("echo", 1)]))?;
    wait_status(&system.url("/b"), None, 200, WAIT).await?;
    assert_eq!(get(&system.url("/a"), None).await?.status.as_u16(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn edit_while_nats_is_down_arrives_after_restart() -> anyhow::Result<()> {
    let (mut running, dir) = serving_route_a().await?;
    let system = &mut running.system;
    system.kill9(Component::Nats)?;
    write_manifest_atomically(&dir, "c.yaml", &route_yaml("c", "/c", &[("echo", 1)]))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.restart(Component::Nats).await?;
    wait_status(&system.url("/c"), None, 200, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_listens_on_nothing() -> anyhow::Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let pid = system
        .pid(Component::Discovery)
        .ok_or_else(|| anyhow::anyhow!("no discovery pid"))?;
    // Wait until it is doing its job (health file written), then look at its sockets.
    kgw_harness::wait_for(WAIT, || async {
        anyhow::ensure!(system.discovery_health_file().exists(), "no health file yet");
        Ok(())
    })
    .await?;
    let inodes = socket_inodes(pid)?;
    anyhow::ensure!(!inodes.is_empty(), "discovery should hold its NATS connection");
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // state 0A = LISTEN; field 9 = inode
            if fields.len() > 9 && inodes.contains(fields[9]) {
                assert_ne!(fields[3], "0A", "discovery listens: {line}");
            }
        }
    }
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(
                fields.len() <= 9 || !inodes.contains(fields[9]),
                "discovery has a UDP socket: {line}"
            );
        }
    }
    Ok(())
}

fn socket_inodes(pid: u32) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut inodes = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().to_string();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    Ok(inodes)
}

//! A test host namespace: a backend in it answers from its own address over the veth link,
//! and everything is gone once the host is dropped.
use anyhow::{Result, ensure};
use kgw_harness::{get, netns::TestHost};

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_in_a_test_host_answers_and_the_host_is_removed() -> Result<()> {
    let mut host = TestHost::create()?;
    let addr = host.spawn_echo("echo-ns", 9001)?;
    ensure!(!addr.ip().is_loopback(), "{addr}");
    let response = get(&format!("http://{addr}/hello"), None).await?;
    ensure!(response.status.as_u16() == 200, "{}", response.status);
    ensure!(response.header("x-backend") == "echo-ns");
    let namespace = host.namespace_name();
    drop(host);
    let list = std::process::Command::new("ip").args(["netns", "list"]).output()?;
    let list = String::from_utf8_lossy(&list.stdout);
    ensure!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(namespace.as_str())),
        "namespace {namespace} still there: {list}"
    );
    Ok(())
}

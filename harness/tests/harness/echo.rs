use std::net::SocketAddr;

use kgw_harness::{Method, request};

#[tokio::test]
async fn echo_backend_describes_the_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let task = kgw_harness::spawn_echo_on(listener, "echo-a");

    let url = format!("http://{addr}/some/path?q=1");
    let resp = request(Method::POST, &url, Some("example.com"), &[("x-test", "yes")], "hello")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-backend"), "echo-a");
    let body = resp.json().unwrap();
    assert_eq!(body["backend"], "echo-a");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/some/path?q=1");
    assert_eq!(body["host"], "example.com");
    assert_eq!(body["headers"]["x-test"], "yes");

    let resp = kgw_harness::get(&format!("http://{addr}/"), None).await.unwrap();
    assert_eq!(resp.json().unwrap()["host"], addr.to_string());
    task.abort();
}

#[tokio::test]
async fn echo_backend_binary_serves() {
    let lease = kgw_harness::addr::allocate().unwrap();
    let (a, b) = (lease.layout.backend(1), lease.layout.backend(2));
    let dir = tempfile::tempdir().unwrap();
    let mut p = kgw_harness::Process::new(
        "echo-backend",
        env!("CARGO_BIN_EXE_echo-backend"),
        ["--listen", &a.to_string(), "--listen", &b.to_string(), "--name", "bin"],
        dir.path().join("echo.log"),
    );
    p.start().unwrap();
    for addr in [a, b] {
        let resp = kgw_harness::wait_status(
            &format!("http://{addr}/x"),
            None,
            200,
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(resp.json().unwrap()["backend"], "bin");
    }
    p.stop(std::time::Duration::from_secs(5)).await.unwrap();
    assert!(!p.is_running());
}

//! The one HTTP server helper: each behaviour once (header-read timeout, connection cap,
//! drain at shutdown, plain-text peers marked as such).
use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};
use kgw_common::{
    serve::{HttpHandler, HttpOptions, Limits, Listener, ServerTls, serve_http},
    shutdown::Shutdown,
    tls::{ConnInfo, Peer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Answers after `delay`, with who asked.
struct Slow {
    delay: Duration,
}

impl HttpHandler for Slow {
    async fn handle(&self, _request: Request<Incoming>, peer: &ConnInfo) -> Response<Full<Bytes>> {
        tokio::time::sleep(self.delay).await;
        let who = match peer.peer {
            Peer::Plaintext => "plaintext",
            _ => "other",
        };
        Response::new(Full::new(Bytes::from(who)))
    }
}

async fn server(
    delay: Duration,
    limits: Limits,
    options: HttpOptions,
) -> (SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
    let listener = Listener::bind("test", "127.0.0.1:0".parse().unwrap(), ServerTls::Off)
        .await
        .unwrap()
        .with_limits(limits);
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve_http(listener, Slow { delay }, options, shutdown.clone()));
    (addr, shutdown, task)
}

async fn get(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn a_client_that_sends_no_headers_is_dropped() {
    let options = HttpOptions {
        header_read_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (addr, _stop, _task) = server(Duration::ZERO, Limits::default(), options).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
}

#[tokio::test]
async fn connections_above_the_cap_wait_for_a_free_slot() {
    let limits = Limits {
        max_connections: 1,
        ..Default::default()
    };
    let (addr, _stop, _task) = server(Duration::ZERO, limits, HttpOptions::default()).await;
    let holder = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), get(&mut second)).await;
    assert!(
        waiting.is_err(),
        "a second connection was served while the cap was taken"
    );
    drop(holder);
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), get(&mut third)).await;
    assert!(
        answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "not served once a slot was free"
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_accepts_no_more() {
    let (addr, stop, task) = server(Duration::from_millis(500), Limits::default(), HttpOptions::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let in_flight = tokio::spawn(async move { get(&mut stream).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.trigger();
    let answer = in_flight.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("plaintext"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server did not end after draining")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

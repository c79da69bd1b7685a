//! A running system for a scenario: the harness [`System`] on its own loopback block, an
//! `echo-backend` process listening on several of the block's backend addresses, and a
//! keep-alive HTTP client that polls Envoy.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::HOST;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use kgw_harness::{Layout, Placement, Process, System, SystemConfig, bins};
use tokio::task::JoinSet;

use crate::routeset::{self, Backends, Shape};

/// Echo backend addresses per system (endpoints of a Service are taken from these).
const BACKEND_IPS: u8 = 4;

/// Polls Envoy over kept-alive connections (a fresh connection per poll would exhaust
/// ephemeral ports at a poll a millisecond).
#[derive(Clone)]
pub struct Poller {
    client: Client<HttpConnector, Empty<Bytes>>,
    pub addr: SocketAddr,
}

impl Poller {
    pub fn new(addr: SocketAddr) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Poller { client, addr }
    }

    /// The status of `GET path` with `Host: host`.
    pub async fn status(&self, host: &str, path: &str) -> Result<u16> {
        let req = Request::get(format!("http://{}{path}", self.addr))
            .header(HOST, host)
            .body(Empty::new())
            .context("building request")?;
        let fut = async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| anyhow!("GET {path} (host {host}): no answer in 5 s"))?
    }

    /// Polls (every `every`) until `host` answers 200 on `path`; the time from `since`.
    pub async fn until_200(&self, host: &str, path: &str, since: Instant, timeout: Duration) -> Result<Duration> {
        let every = Duration::from_millis(1);
        loop {
            let last = match self.status(host, path).await {
                Ok(200) => return Ok(since.elapsed()),
                Ok(s) => format!("status {s}"),
                Err(e) => format!("{e:#}"),
            };
            if since.elapsed() > timeout {
                bail!("{host}{path}: no 200 within {timeout:?} (last: {last})");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One pass over `names` (route names), 16 requests at a time: per name, the time from
    /// `since` when it answered 200, or `None`.
    pub async fn check_all(&self, names: &[String], since: Instant) -> Result<Vec<Option<Duration>>> {
        self.check_all_in(Shape::Spread, names, since).await
    }

    /// [`Poller::check_all`] for routes of a set of `shape`.
    pub async fn check_all_in(&self, shape: Shape, names: &[String], since: Instant) -> Result<Vec<Option<Duration>>> {
        let mut seen = vec![None; names.len()];
        if names.is_empty() {
            return Ok(seen);
        }
        let mut tasks = JoinSet::new();
        let indexed: Vec<(usize, String)> = names.iter().cloned().enumerate().collect();
        for chunk in indexed.chunks(names.len().div_ceil(16)) {
            let poller = self.clone();
            let chunk = chunk.to_vec();
            tasks.spawn(async move {
                let mut ok = Vec::new();
                for (i, name) in chunk {
                    if let Ok(200) = poller.status(&shape.host(&name), &routeset::request_path(&name)).await {
                        ok.push((i, since.elapsed()));
                    }
                }
                ok
            });
        }
        while let Some(done) = tasks.join_next().await {
            for (i, at) in done? {
                seen[i] = Some(at);
            }
        }
        Ok(seen)
    }

    /// Waits until every one of `names` answers 200; per name, the time from `since` when
    /// it was first seen serving.
    pub async fn until_all_200(&self, names: &[String], since: Instant, timeout: Duration) -> Result<Vec<Duration>> {
        self.until_all_200_in(Shape::Spread, names, since, timeout).await
    }

    /// [`Poller::until_all_200`] for routes of a set of `shape`.
    pub async fn until_all_200_in(
        &self,
        shape: Shape,
        names: &[String],
        since: Instant,
        timeout: Duration,
    ) -> Result<Vec<Duration>> {
        let mut seen: Vec<Option<Duration>> = vec![None; names.len()];
        loop {
            let pending: Vec<usize> = (0..names.len()).filter(|&i| seen[i].is_none()).collect();
            if pending.is_empty() {
                return Ok(seen.into_iter().flatten().collect());
            }
            let asked: Vec<String> = pending.iter().map(|&i| names[i].clone()).collect();
            for (i, at) in pending.into_iter().zip(self.check_all_in(shape, &asked, since).await?) {
                seen[i] = at;
            }
            let left: Vec<&String> = names
                .iter()
                .zip(&seen)
                .filter(|(_, s)| s.is_none())
                .map(|(n, _)| n)
                .collect();
            if left.is_empty() {
                continue;
            }
            if since.elapsed() > timeout {
                bail!(
                    "{} of {} routes not serving after {timeout:?} (e.g. {})",
                    left.len(),
                    names.len(),
                    left[0]
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A system with backends, on its own block. Dropping it stops everything it started.
pub struct Fleet {
    pub poller: Poller,
    pub backends: Backends,
    // Drop order: the system (and Envoy) first, then the backends, then the directory.
    pub system: System,
    _echo: Process,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the backends, lets `setup` write the initial config into the config dir,
    /// then starts the system.
    pub async fn start(setup: impl FnOnce(&Path, &Backends) -> Result<()>) -> Result<Fleet> {
        Self::start_with(setup, |_| {}).await
    }

    /// [`Fleet::start`], with `tweak` applied to the system's configuration.
    pub async fn start_with(
        setup: impl FnOnce(&Path, &Backends) -> Result<()>,
        tweak: impl FnOnce(&mut SystemConfig),
    ) -> Result<Fleet> {
        let lease = kgw_harness::addr::allocate()?;
        let layout: Layout = lease.layout.clone();
        let dir = tempfile::Builder::new().prefix("kgw-bench-").tempdir()?;
        let listen: Vec<SocketAddr> = (1..=BACKEND_IPS)
            .map(|n| SocketAddr::new(layout.backend(n).ip(), layout.backend(1).port()))
            .collect();
        let mut args = vec!["--name".to_string(), "echo".into()];
        for a in &listen {
            args.extend(["--listen".to_string(), a.to_string()]);
        }
        let mut echo = Process::new(
            "echo-backend",
            bins::bin(bins::ECHO_BACKEND)?,
            args,
            dir.path().join("echo.log"),
        );
        echo.start()?;
        wait_listening(&listen, &mut echo).await?;
        let backends = Backends {
            ips: listen.iter().map(SocketAddr::ip).collect(),
            port: listen[0].port(),
        };
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config)?;
        setup(&config, &backends)?;
        let mut config = SystemConfig {
            config_dir: Some(config),
            placement: Placement::Lease(lease),
            ready_timeout: Duration::from_secs(60),
            ..Default::default()
        };
        tweak(&mut config);
        let system = System::start(config).await?;
        Ok(Fleet {
            poller: Poller::new(system.layout().envoy_http()),
            backends,
            system,
            _echo: echo,
            dir,
        })
    }

    pub fn config_dir(&self) -> &Path {
        self.system.config_dir()
    }

    /// A scratch directory of this fleet (removed with it).
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// A spare address of the block (`.6` to `.9`: nothing of the system uses them).
    pub fn spare_ip(&self, n: u8) -> IpAddr {
        let ip = self.system.layout().envoy;
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                IpAddr::V4([a, b, c, 5 + n.clamp(1, 4)].into())
            }
            other => other,
        }
    }
}

async fn wait_listening(addrs: &[SocketAddr], echo: &mut Process) -> Result<()> {
    let started = Instant::now();
    for a in addrs {
        loop {
            if tokio::net::TcpStream::connect(a).await.is_ok() {
                break;
            }
            if !echo.is_running() || started.elapsed() > Duration::from_secs(20) {
                bail!("echo-backend does not listen on {a}: {}", echo.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

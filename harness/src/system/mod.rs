//! A whole system on one loopback block: nats-server, controller, gateway, discovery,
//! access-log and Envoy, each a child process logging to `<run dir>/<component>.log`.
//! Every process retries NATS, so none waits for another before starting.

mod config;
pub mod mtls;
pub mod nats_auth;

pub use config::{Component, Placement, Source, SystemConfig};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use kgw_proto::nats::users as nats_users;

use crate::addr::{self, Layout, Lease};
use crate::process::Process;
use crate::{bins, envoy, tools};

/// Time a component gets to stop on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running system. Dropping it stops every process it started.
pub struct System {
    layout: Layout,
    run_dir: PathBuf,
    config_dir: PathBuf,
    source: Source,
    procs: BTreeMap<Component, Process>,
    ready_timeout: Duration,
    /// Access-log sink replicas Envoy sends every entry to (the controller's list).
    access_log_replicas: usize,
    /// The broker's users, when it authenticates.
    nats_users: Option<nats_auth::NatsUsers>,
    /// The CA and certificates, with mTLS.
    pki: Option<mtls::SystemPki>,
    tmp: Option<tempfile::TempDir>,
    _lease: Lease,
}

impl System {
    pub async fn start(cfg: SystemConfig) -> Result<System> {
        let lease = match cfg.placement {
            Placement::Block => addr::allocate()?,
            Placement::Local => addr::take_local()?,
            Placement::Lease(l) => l,
        };
        let layout = lease.layout.clone();
        let (run_dir, tmp) = match cfg.run_dir {
            Some(d) => {
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("kgw-{}-", layout.id()))
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let run_dir = std::path::absolute(run_dir)?;
        std::fs::create_dir_all(run_dir.join("wasm-modules"))?;
        let config_dir = match cfg.config_dir {
            Some(d) => std::fs::canonicalize(&d).with_context(|| format!("config dir {}", d.display()))?,
            None => {
                let d = run_dir.join("config");
                std::fs::create_dir_all(&d)?;
                d
            }
        };
        let role = format!("{}~{}", cfg.gateway.0, cfg.gateway.1);
        let nats_users = match cfg.nats_auth {
            true => Some(nats_auth::NatsUsers::create(&run_dir)?),
            false => None,
        };
        let pki = match cfg.mtls {
            true => Some(mtls::SystemPki::create(
                &run_dir.join("pki"),
                &layout.all_ips(),
                &role,
                layout.nats,
            )?),
            false => None,
        };
        let mut sys = System {
            pki,
            layout,
            run_dir,
            config_dir,
            source: cfg.source.clone(),
            procs: BTreeMap::new(),
            ready_timeout: cfg.ready_timeout,
            access_log_replicas: cfg.access_log_replicas.clamp(1, addr::MAX_ACCESS_LOG_REPLICAS),
            nats_users,
            tmp,
            _lease: lease,
        };
        let replicas = (1..sys.access_log_replicas)
            .map(|i| Component::AccessLogReplica(i as u8))
            .filter(|_| cfg.components.contains(&Component::AccessLog));
        for c in Component::ALL
            .into_iter()
            .filter(|c| cfg.components.contains(c))
            .chain(replicas)
        {
            let envoy_config = (cfg.envoy_bootstrap.as_deref(), cfg.xds_protocol);
            let mut p = sys.process(c, &role, envoy_config, &cfg.envoy_log_level)?;
            for (k, v) in &cfg.env {
                p = p.env(k, v);
            }
            sys.procs.insert(c, p);
        }
        for p in sys.procs.values_mut() {
            p.start()?;
        }
        let comps: Vec<Component> = sys.procs.keys().copied().collect();
        for c in comps {
            sys.wait_ready(c).await?;
        }
        sys.check_alive()?;
        Ok(sys)
    }

    /// The process of one component, not started. Envoy's bootstrap is `envoy_config`'s
    /// YAML if given, else `controller bootstrap`'s for its ADS protocol.
    fn process(
        &self,
        c: Component,
        role: &str,
        envoy_config: (Option<&str>, envoy::XdsProtocol),
        envoy_log: &str,
    ) -> Result<Process> {
        let (bootstrap, xds_protocol) = envoy_config;
        let l = &self.layout;
        let nats = l.nats_url();
        // `--config-dir DIR`, or `--source kubernetes --kubeconfig PATH`.
        let source: Vec<String> = match &self.source {
            Source::Directory => vec!["--config-dir".into(), self.config_dir.display().to_string()],
            Source::Kubernetes { kubeconfig } => vec![
                "--source".into(),
                "kubernetes".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
            ],
        };
        let log = self.log_path(c);
        // Each process connects as its own NATS user (when the broker authenticates).
        let credentials = match (&self.nats_users, c) {
            (Some(users), Component::Gateway) => users.args(nats_users::GATEWAY),
            (Some(users), Component::Controller) => users.args(nats_users::CONTROLLER),
            (Some(users), Component::Discovery) => users.args(nats_users::DISCOVERY),
            (Some(users), Component::AccessLog | Component::AccessLogReplica(_)) => users.args(nats_users::ACCESS_LOG),
            _ => Vec::new(),
        };
        let tls = self.tls_args(c);
        let ours = |args: Vec<String>| -> Result<Process> {
            Ok(Process::new(
                c.name(),
                bins::bin(c.name())?,
                [args, credentials.clone(), tls.clone()].concat(),
                &log,
            ))
        };
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        Ok(match c {
            Component::Nats => {
                let store = self.run_dir.join("nats").display().to_string();
                let name = format!("kgw-{}", l.id().replace('.', "-"));
                let ip = l.nats.to_string();
                let port = l.nats_addr().port().to_string();
                let mon = l.nats_monitor_addr().port().to_string();
                let args = s(&[
                    "-a",
                    &ip,
                    "-p",
                    &port,
                    "-js",
                    "-sd",
                    &store,
                    "--server_name",
                    &name,
                    "-m",
                    &mon,
                ]);
                let tls = self.pki.as_ref().map(|pki| pki.dir(mtls::NATS));
                let args = match (&self.nats_users, tls) {
                    (None, None) => args,
                    (users, tls) => {
                        let conf = self.run_dir.join("nats.conf");
                        std::fs::write(&conf, nats_auth::server_config(users.as_ref(), tls.as_deref())?)
                            .with_context(|| format!("writing {}", conf.display()))?;
                        [s(&["-c", &conf.display().to_string()]), args].concat()
                    }
                };
                Process::new(c.name(), tools::ensure_nats_server()?, args, &log)
            }
            // The controller reads TLS Secrets from the same source (never over NATS).
            Component::Controller => ours(
                [
                    source.clone(),
                    s(&[
                        "--nats-url",
                        &nats,
                        "--xds-addr",
                        &l.xds_addr().to_string(),
                        "--access-log-addr",
                        &self.access_log_addrs().join(","),
                        "--validation-addr",
                        &l.validation_addr().to_string(),
                        "--rest-xds-addr",
                        &l.rest_xds_addr().to_string(),
                        "--debug-addr",
                        &l.debug_addr().to_string(),
                        "--wasm-cache-addr",
                        &l.wasm_cache_addr().to_string(),
                        "--wasm-cache-dir",
                        &self.run_dir.join("wasm-cache").display().to_string(),
                        "--wasm-file-root",
                        &self.wasm_modules_dir().display().to_string(),
                        "--monitoring-addr",
                        &l.controller_monitoring_addr().to_string(),
                    ]),
                ]
                .concat(),
            )?,
            Component::Gateway => ours(
                [
                    source.clone(),
                    s(&[
                        "--nats-url",
                        &nats,
                        "--listener-bind-address",
                        &l.envoy.to_string(),
                        "--webhook-addr",
                        &l.webhook_addr().to_string(),
                        "--validation-addr",
                        &l.validation_addr().to_string(),
                        "--monitoring-addr",
                        &l.gateway_monitoring_addr().to_string(),
                    ]),
                ]
                .concat(),
            )?,
            Component::Discovery => ours(
                [
                    source,
                    s(&[
                        "--nats-url",
                        &nats,
                        "--health-file",
                        &self.discovery_health_file().display().to_string(),
                    ]),
                ]
                .concat(),
            )?,
            Component::AccessLog | Component::AccessLogReplica(_) => {
                let i = c.access_log_replica().unwrap_or(0);
                ours(s(&[
                    "--listen",
                    &l.access_log_replica_addr(i).to_string(),
                    "--output",
                    &self.access_log_replica_path(i).display().to_string(),
                    "--nats-url",
                    &nats,
                    "--monitoring-addr",
                    &l.access_log_replica_monitoring_addr(i).to_string(),
                ]))?
            }
            Component::Envoy => {
                let path = self.run_dir.join("envoy-bootstrap.yaml");
                match bootstrap {
                    Some(y) => std::fs::write(&path, y).with_context(|| format!("writing {}", path.display()))?,
                    None => {
                        let params = envoy::BootstrapParams {
                            node_id: format!("gateway-proxy-{}", l.id()),
                            role: role.into(),
                            xds: l.xds_addr(),
                            admin: l.envoy_admin(),
                            tls_dir: self.pki.as_ref().map(|pki| pki.dir(mtls::PROXY)),
                            xds_protocol,
                        };
                        envoy::write_bootstrap(&bins::bin(bins::CONTROLLER)?, &params, &path)?
                    }
                }
                Process::new(c.name(), tools::ensure_envoy()?, envoy::args(&path, envoy_log), &log)
            }
        })
    }

    /// `--tls-dir <its certificates>` for one of our processes with mTLS (the controller
    /// also learns where Envoy's SDS files are), else `--insecure-no-mtls`.
    fn tls_args(&self, c: Component) -> Vec<String> {
        let process = match c {
            Component::Gateway => "gateway",
            Component::Controller => "controller",
            Component::Discovery => "discovery",
            Component::AccessLog | Component::AccessLogReplica(_) => "access-log",
            Component::Nats | Component::Envoy => return Vec::new(),
        };
        let Some(pki) = &self.pki else {
            return vec!["--insecure-no-mtls".into()];
        };
        let mut args = vec!["--tls-dir".into(), pki.dir(process).display().to_string()];
        if c == Component::Controller {
            args.extend(["--proxy-sds-dir".into(), pki.dir(mtls::PROXY).display().to_string()]);
        }
        args
    }

    /// The system's certificates, with mTLS.
    pub fn pki(&self) -> Option<&mtls::SystemPki> {
        self.pki.as_ref()
    }

    /// How a client of our ports connects: as the admin with mTLS, else plain text.
    pub fn admin_tls(&self) -> Result<kgw_common::tls::TlsMode> {
        match &self.pki {
            Some(pki) => Ok(kgw_common::tls::TlsMode::Mtls(kgw_common::tls::Mtls::load(
                pki.dir(mtls::ADMIN),
            )?)),
            None => Ok(kgw_common::tls::TlsMode::Insecure),
        }
    }

    /// Flags that make a CLI of ours (`controller proxies`, `gateway validate`) a client of
    /// this system: the admin's certificates, or plain text.
    pub fn admin_cli_args(&self) -> Vec<String> {
        match &self.pki {
            Some(pki) => vec!["--tls-dir".into(), pki.dir(mtls::ADMIN).display().to_string()],
            None => vec!["--insecure-no-mtls".into()],
        }
    }

    /// Flags for one of our processes (`gateway`, `controller`, `discovery`,
    /// `access-log`) that a test starts itself beside this system: that process's
    /// certificates, or plain text.
    pub fn process_tls_args(&self, process: &str) -> Vec<String> {
        match &self.pki {
            Some(pki) => vec!["--tls-dir".into(), pki.dir(process).display().to_string()],
            None => vec!["--insecure-no-mtls".into()],
        }
    }

    /// Waits until `c` listens on its port (or, without a port, stays up a moment);
    /// an error with its log's tail if it exits or times out.
    pub async fn wait_ready(&mut self, c: Component) -> Result<()> {
        let probe = match c {
            Component::Nats => Some(self.layout.nats_addr()),
            Component::Controller => Some(self.layout.xds_addr()),
            Component::AccessLog => Some(self.layout.access_log_addr()),
            Component::AccessLogReplica(i) => Some(self.layout.access_log_replica_addr(usize::from(i))),
            Component::Envoy => Some(self.layout.envoy_admin()),
            Component::Gateway | Component::Discovery => None,
        };
        let started = Instant::now();
        loop {
            self.check(c)?;
            let up = match probe {
                Some(a) => matches!(
                    tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(a)).await,
                    Ok(Ok(_))
                ),
                None => started.elapsed() >= Duration::from_millis(300),
            };
            if up {
                return Ok(());
            }
            if started.elapsed() > self.ready_timeout {
                let what = probe.map_or("".into(), |a| format!(" (nothing listens on {a})"));
                return Err(self.failure(c, &format!("not up after {:?}{what}", self.ready_timeout)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn proc_mut(&mut self, c: Component) -> Result<&mut Process> {
        self.procs
            .get_mut(&c)
            .ok_or_else(|| anyhow!("{c} is not part of this system"))
    }

    /// An error if `c` has exited.
    fn check(&mut self, c: Component) -> Result<()> {
        match self.proc_mut(c)?.exit_status() {
            Some(st) => Err(self.failure(c, &format!("exited ({st})"))),
            None => Ok(()),
        }
    }

    fn failure(&self, c: Component, what: &str) -> anyhow::Error {
        let log = self.log_path(c);
        anyhow!(
            "{c} {what}; last lines of {}:\n{}",
            log.display(),
            crate::process::log_tail(&log, 40)
        )
    }

    /// An error naming every component that has exited, with its log's tail.
    pub fn check_alive(&mut self) -> Result<()> {
        let errs: Vec<String> = self
            .procs
            .keys()
            .copied()
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|c| self.check(c).err().map(|e| format!("{e:#}")))
            .collect();
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("{}", errs.join("\n\n"))
        }
    }

    /// Components that have exited, with their status.
    pub fn exited(&mut self) -> Vec<(Component, ExitStatus)> {
        self.procs
            .iter_mut()
            .filter_map(|(c, p)| p.exit_status().map(|s| (*c, s)))
            .collect()
    }

    /// SIGKILL `c` and reap it.
    pub fn kill9(&mut self, c: Component) -> Result<()> {
        self.proc_mut(c)?.kill9()
    }

    /// SIGTERM `c`, SIGKILL after [`STOP_GRACE`].
    pub async fn stop(&mut self, c: Component) -> Result<()> {
        self.proc_mut(c)?.stop(STOP_GRACE).await
    }

    /// Stops `c` if it runs, starts it again with the same arguments and waits until it
    /// is up.
    pub async fn restart(&mut self, c: Component) -> Result<()> {
        let p = self.proc_mut(c)?;
        p.stop(STOP_GRACE).await?;
        p.start()?;
        self.wait_ready(c).await
    }

    /// The pid of the last start of `c`.
    pub fn pid(&self, c: Component) -> Option<u32> {
        self.procs.get(&c).and_then(Process::pid)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// `http://<envoy>:8080<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.layout.envoy_http())
    }
    /// `https://<envoy>:8443<path>`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.layout.envoy_https())
    }
    /// `http://<host>:<monitoring port><path>` of `c` (health and metrics); `None` for the
    /// components without one (discovery, nats-server, Envoy).
    pub fn monitoring_url(&self, c: Component, path: &str) -> Option<String> {
        let addr = match c {
            Component::Gateway => self.layout.gateway_monitoring_addr(),
            Component::Controller => self.layout.controller_monitoring_addr(),
            Component::AccessLog => self.layout.access_log_monitoring_addr(),
            Component::AccessLogReplica(i) => self.layout.access_log_replica_monitoring_addr(usize::from(i)),
            Component::Nats | Component::Discovery | Component::Envoy => return None,
        };
        Some(format!("http://{addr}{path}"))
    }
    /// `http://<envoy>:19000<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.layout.envoy_admin())
    }
    /// The broker's URL for tests and tools: as `admin` when it authenticates.
    pub fn nats_url(&self) -> String {
        match &self.nats_users {
            Some(users) => users.admin_url(&self.layout.nats_url()),
            None => self.layout.nats_url(),
        }
    }
    /// `kgw_gateway_status_writes_total` per kind, from the gateway's /metrics: the status
    /// writes the gateway made to the API server (Kubernetes source).
    pub async fn gateway_status_writes(&self) -> Result<BTreeMap<String, u64>> {
        let url = self
            .monitoring_url(Component::Gateway, "/metrics")
            .context("the gateway's monitoring port")?;
        let text = crate::http::get(&url, None).await?.text();
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("kgw_gateway_status_writes_total{"))
        {
            let (labels, value) = line.rsplit_once(' ').context("a metric line")?;
            let kind = labels
                .split("kind=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .context("a kind label")?;
            out.insert(kind.to_string(), value.trim().parse()?);
        }
        Ok(out)
    }
    /// The broker's users, when it authenticates (tests acting as one process).
    pub fn nats_users(&self) -> Option<&nats_auth::NatsUsers> {
        self.nats_users.as_ref()
    }
    /// Connect options for the broker: TLS with the admin's certificate under mTLS.
    pub async fn nats_options(&self) -> Result<async_nats::ConnectOptions> {
        let options = async_nats::ConnectOptions::new();
        Ok(match self.admin_tls()?.mtls() {
            Some(mtls) => options
                .require_tls(true)
                .tls_client_config(rustls::ClientConfig::clone(&mtls.client_config())),
            None => options,
        })
    }

    /// A client of the broker, as `admin` when it authenticates.
    /// What [`kgw_common::bus::connect`] needs to reach this system's broker as the admin
    /// (credentials come with [`System::nats_url`]): TLS with the admin's certificate
    /// under mTLS.
    pub fn admin_nats_auth(&self) -> Result<kgw_common::bus::NatsAuth> {
        Ok(kgw_common::bus::NatsAuth {
            tls: self.admin_tls()?.mtls().cloned(),
            ..Default::default()
        })
    }

    pub async fn nats_client(&self) -> Result<async_nats::Client> {
        let (url, credentials) = kgw_common::bus::split_credentials(&self.nats_url());
        let mut options = self.nats_options().await?;
        if let Some((user, password)) = credentials {
            options = options.user_and_password(user, password);
        }
        Ok(options.connect(url).await?)
    }
    /// The last sequence of a KV bucket's stream: any write to the bucket moves it.
    pub async fn kv_last_sequence(&self, bucket: &str) -> Result<u64> {
        let client = self.nats_client().await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(format!("KV_{bucket}")).await?;
        Ok(stream.info().await?.state.last_sequence)
    }
    /// Every key of a KV bucket with its value, as stored (split values as their parts).
    pub async fn kv_entries(&self, bucket: &str) -> Result<std::collections::BTreeMap<String, bytes::Bytes>> {
        use futures::StreamExt as _;
        let client = self.nats_client().await?;
        let store = async_nats::jetstream::new(client).get_key_value(bucket).await?;
        let mut keys = store.keys().await?;
        let mut out = std::collections::BTreeMap::new();
        while let Some(key) = keys.next().await {
            let key = key?;
            if let Some(value) = store.get(&key).await? {
                out.insert(key, value);
            }
        }
        Ok(out)
    }
    /// Bytes the stream of a KV bucket holds (values, keys and headers of every message
    /// it keeps); the change across a write is what the write cost the broker.
    pub async fn kv_stream_bytes(&self, bucket: &str) -> Result<u64> {
        let client = self.nats_client().await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(format!("KV_{bucket}")).await?;
        Ok(stream.info().await?.state.bytes)
    }
    /// The bytes of the values written to a KV bucket after sequence `after` (a delete
    /// writes none). A value written twice in that time counts once (the bucket keeps the
    /// last): a floor of what was written.
    pub async fn kv_bytes_written_after(&self, bucket: &str, after: u64) -> Result<u64> {
        let client = self.nats_client().await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(format!("KV_{bucket}")).await?;
        let last = stream.info().await?.state.last_sequence;
        let mut bytes = 0;
        for sequence in after + 1..=last {
            // Gone: a value replaced since (history 1) or deleted.
            if let Ok(message) = stream.get_raw_message(sequence).await {
                bytes += message.payload.len() as u64;
            }
        }
        Ok(bytes)
    }
    /// The value of a KV key (a value split across keys is returned as its head).
    pub async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<bytes::Bytes>> {
        let client = self.nats_client().await?;
        let store = async_nats::jetstream::new(client).get_key_value(bucket).await?;
        Ok(store.get(key).await?)
    }
    /// Until `stop` resolves, reports once each component that exits (with its log), as
    /// `kgw-up` and `kgw-kube-up` show it; `tool` names the reporter.
    pub async fn report_exits_until(&mut self, tool: &str, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reported = Vec::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    for (c, status) in self.exited() {
                        if !reported.contains(&c) {
                            reported.push(c);
                            eprintln!("{tool}: {c} exited ({status}); see {}", self.log_path(c).display());
                        }
                    }
                }
            }
        }
    }
    /// The one folder the controller reads file:// WASM modules from (`--wasm-file-root`).
    pub fn wasm_modules_dir(&self) -> PathBuf {
        self.run_dir.join("wasm-modules")
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
    /// The JSON lines of the first access-log replica.
    pub fn access_log_path(&self) -> PathBuf {
        self.run_dir.join("access.log")
    }
    /// The JSON lines of access-log replica `i` (0: [`System::access_log_path`]; else
    /// `access-<i>.log`): every replica writes every entry.
    pub fn access_log_replica_path(&self, i: usize) -> PathBuf {
        match i {
            0 => self.access_log_path(),
            i => self.run_dir.join(format!("access-{i}.log")),
        }
    }
    /// The access-log components, [`Component::AccessLog`] first.
    pub fn access_log_components(&self) -> Vec<Component> {
        (0..self.access_log_replicas)
            .map(|i| match i {
                0 => Component::AccessLog,
                i => Component::AccessLogReplica(i as u8),
            })
            .collect()
    }
    /// The gRPC addresses of the access-log replicas, as the controller gives them to Envoy.
    pub fn access_log_addrs(&self) -> Vec<String> {
        (0..self.access_log_replicas)
            .map(|i| self.layout.access_log_replica_addr(i).to_string())
            .collect()
    }
    pub fn discovery_health_file(&self) -> PathBuf {
        self.run_dir.join("discovery-healthy")
    }
    pub fn log_path(&self, c: Component) -> PathBuf {
        self.run_dir.join(format!("{c}.log"))
    }
    pub fn log_tail(&self, c: Component, lines: usize) -> String {
        crate::process::log_tail(&self.log_path(c), lines)
    }

    /// Stops everything: the processes (in parallel), then nats-server.
    fn shutdown(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, p) in self.procs.iter_mut().filter(|(c, _)| **c != Component::Nats) {
            p.terminate();
        }
        for (_, p) in self.procs.iter_mut().filter(|(c, _)| **c != Component::Nats) {
            while p.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.kill9();
        }
        if let Some(p) = self.procs.get_mut(&Component::Nats) {
            let _ = p.stop_blocking(Duration::from_secs(5));
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown();
        if (std::thread::panicking() || std::env::var_os("KGW_KEEP_RUN_DIR").is_some())
            && let Some(t) = self.tmp.take()
        {
            eprintln!("kgw-harness: run dir kept: {}", t.keep().display());
        }
    }
}

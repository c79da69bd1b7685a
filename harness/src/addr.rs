//! Address layouts. Each running system gets its own loopback block `127.B.C.0/24` (one
//! host per "pod", the legacy ports unchanged), so tests and a running `kgw-up` coexist.
//!
//! | host | who | ports |
//! |---|---|---|
//! | .1 | nats-server | 4222 (client), 8222 (monitoring) |
//! | .2 | controller | 9977 xDS, 9976 REST xDS, 9988 validation, 9966 proxy debug, 9979 WASM, 9092 health+metrics |
//! | .3 | gateway | 8443 (admission webhook), 9091 (health and metrics) |
//! | .4 | access-log | 8083, 9093 (health and metrics) |
//! | .5 | Envoy | 8080 HTTP, 8443 HTTPS, 19000 admin |
//! | .6-.9 | access-log replicas 1-4 (the second, third, ... sink) | 8083, 9093 |
//! | .10.. | backends | 9001.. (backend `n` is host `.9+n`, port `9000+n`) |
//!
//! In the local layout the monitoring ports (9091-9093) are on 127.0.0.1, the binaries'
//! defaults; access-log replica `i` (1-4) listens on 127.0.0.(2+i), 8083 and 9093.

use std::fs::{self, File, TryLockError};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

pub const NATS_PORT: u16 = 4222;
pub const NATS_MONITOR_PORT: u16 = 8222;
pub const XDS_PORT: u16 = 9977;
pub const WEBHOOK_PORT: u16 = 8443;
pub const VALIDATION_PORT: u16 = 9988;
pub const REST_XDS_PORT: u16 = 9976;
pub const DEBUG_PORT: u16 = 9966;
pub const ACCESS_LOG_PORT: u16 = 8083;
pub const ENVOY_HTTP_PORT: u16 = 8080;
pub const ENVOY_HTTPS_PORT: u16 = 8443;
pub const ENVOY_ADMIN_PORT: u16 = 19000;
/// Health (`/healthz`, `/readyz`) and Prometheus `/metrics` of each process but discovery.
pub const GATEWAY_MONITORING_PORT: u16 = 9091;
pub const CONTROLLER_MONITORING_PORT: u16 = 9092;
pub const ACCESS_LOG_MONITORING_PORT: u16 = 9093;
/// Access-log sink replicas a layout has addresses for (replica 0 and 1-4).
pub const MAX_ACCESS_LOG_REPLICAS: usize = 5;

const B_MIN: u8 = 20;
const B_MAX: u8 = 250;
const BLOCKS: u32 = (B_MAX - B_MIN + 1) as u32 * 256;

/// Where every component of one system listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `Some((B, C))` for a block `127.B.C.0/24`; `None` for the fixed local layout.
    pub block: Option<(u8, u8)>,
    pub nats: IpAddr,
    pub controller: IpAddr,
    pub gateway: IpAddr,
    pub access_log: IpAddr,
    pub envoy: IpAddr,
}

impl Layout {
    /// The block `127.B.C.0/24`.
    pub fn block(b: u8, c: u8) -> Self {
        let ip = |d| IpAddr::V4(Ipv4Addr::new(127, b, c, d));
        Layout {
            block: Some((b, c)),
            nats: ip(1),
            controller: ip(2),
            gateway: ip(3),
            access_log: ip(4),
            envoy: ip(5),
        }
    }

    /// `kgw-up`'s fixed layout: everything on 127.0.0.1 with the legacy ports, except the
    /// gateway (its webhook's 8443 would clash with Envoy's HTTPS) on 127.0.0.2.
    pub fn local() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Layout {
            block: None,
            nats: lo,
            controller: lo,
            gateway: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            access_log: lo,
            envoy: lo,
        }
    }

    /// `B.C` for a block, `local` otherwise: names run dirs, lock files, server names.
    pub fn id(&self) -> String {
        match self.block {
            Some((b, c)) => format!("{b}.{c}"),
            None => "local".into(),
        }
    }

    /// Every address of this layout's "pods" (access-log replicas included): the names a
    /// server certificate of this system carries.
    pub fn all_ips(&self) -> Vec<IpAddr> {
        let mut ips = vec![self.nats, self.controller, self.gateway, self.access_log, self.envoy];
        ips.extend((0..MAX_ACCESS_LOG_REPLICAS).map(|i| self.access_log_replica(i)));
        ips.sort();
        ips.dedup();
        ips
    }
    pub fn nats_addr(&self) -> SocketAddr {
        SocketAddr::new(self.nats, NATS_PORT)
    }
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.nats_addr())
    }
    pub fn nats_monitor_addr(&self) -> SocketAddr {
        SocketAddr::new(self.nats, NATS_MONITOR_PORT)
    }
    pub fn xds_addr(&self) -> SocketAddr {
        SocketAddr::new(self.controller, XDS_PORT)
    }
    /// The controller's validation gRPC (kgw.v1.ValidationService), asked by the webhook.
    pub fn validation_addr(&self) -> SocketAddr {
        SocketAddr::new(self.controller, VALIDATION_PORT)
    }
    /// The controller's REST xDS (HTTP/JSON).
    pub fn rest_xds_addr(&self) -> SocketAddr {
        SocketAddr::new(self.controller, REST_XDS_PORT)
    }
    /// The controller's proxy debug gRPC (kgw.v1.ProxyDebugService).
    pub fn debug_addr(&self) -> SocketAddr {
        SocketAddr::new(self.controller, DEBUG_PORT)
    }
    /// The controller's WASM filter cache (HTTP).
    pub fn wasm_cache_addr(&self) -> SocketAddr {
        SocketAddr::new(self.controller, 9979)
    }
    pub fn webhook_addr(&self) -> SocketAddr {
        SocketAddr::new(self.gateway, WEBHOOK_PORT)
    }
    pub fn access_log_addr(&self) -> SocketAddr {
        SocketAddr::new(self.access_log, ACCESS_LOG_PORT)
    }
    /// A monitoring port on the component's own host (on 127.0.0.1 in the local layout).
    fn monitoring(&self, host: IpAddr, port: u16) -> SocketAddr {
        match self.block {
            Some(_) => SocketAddr::new(host, port),
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        }
    }
    pub fn gateway_monitoring_addr(&self) -> SocketAddr {
        self.monitoring(self.gateway, GATEWAY_MONITORING_PORT)
    }
    pub fn controller_monitoring_addr(&self) -> SocketAddr {
        self.monitoring(self.controller, CONTROLLER_MONITORING_PORT)
    }
    pub fn access_log_monitoring_addr(&self) -> SocketAddr {
        self.monitoring(self.access_log, ACCESS_LOG_MONITORING_PORT)
    }
    /// The host of access-log replica `i` (0: [`Layout::access_log`]; 1-4: `.6`-`.9` of the
    /// block, or 127.0.0.3-6 locally).
    pub fn access_log_replica(&self, i: usize) -> IpAddr {
        assert!(
            i < MAX_ACCESS_LOG_REPLICAS,
            "access-log replica {i} out of 0..{MAX_ACCESS_LOG_REPLICAS}"
        );
        match (i, self.block) {
            (0, _) => self.access_log,
            (i, Some((b, c))) => IpAddr::V4(Ipv4Addr::new(127, b, c, 5 + i as u8)),
            (i, None) => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)),
        }
    }
    /// The gRPC address (8083) of access-log replica `i`.
    pub fn access_log_replica_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.access_log_replica(i), ACCESS_LOG_PORT)
    }
    /// The monitoring address (9093) of access-log replica `i`: replica 0's is
    /// [`Layout::access_log_monitoring_addr`], the others' on their own host in every layout.
    pub fn access_log_replica_monitoring_addr(&self, i: usize) -> SocketAddr {
        match i {
            0 => self.access_log_monitoring_addr(),
            i => SocketAddr::new(self.access_log_replica(i), ACCESS_LOG_MONITORING_PORT),
        }
    }
    pub fn envoy_http(&self) -> SocketAddr {
        SocketAddr::new(self.envoy, ENVOY_HTTP_PORT)
    }
    pub fn envoy_https(&self) -> SocketAddr {
        SocketAddr::new(self.envoy, ENVOY_HTTPS_PORT)
    }
    pub fn envoy_admin(&self) -> SocketAddr {
        SocketAddr::new(self.envoy, ENVOY_ADMIN_PORT)
    }

    /// Backend `n` (1-based): `127.B.C.(9+n):(9000+n)`, or `127.0.0.1:(9000+n)` locally.
    pub fn backend(&self, n: u8) -> SocketAddr {
        assert!((1..=240).contains(&n), "backend index {n} out of 1..=240");
        let ip = match self.block {
            Some((b, c)) => IpAddr::V4(Ipv4Addr::new(127, b, c, 9 + n)),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        SocketAddr::new(ip, 9000 + u16::from(n))
    }

    /// The addresses whose being free says the layout is unused.
    fn probes(&self) -> [SocketAddr; 8] {
        [
            self.nats_addr(),
            self.envoy_admin(),
            self.xds_addr(),
            self.access_log_addr(),
            self.envoy_http(),
            self.gateway_monitoring_addr(),
            self.controller_monitoring_addr(),
            self.access_log_monitoring_addr(),
        ]
    }
}

/// A layout reserved for this process: the lock file is held until the lease is dropped.
#[derive(Debug)]
pub struct Lease {
    pub layout: Layout,
    _lock: File,
}

fn lock_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("kgw-harness-blocks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Why a layout could not be taken.
enum Busy {
    Locked(PathBuf),
    Bound(SocketAddr),
}

/// Tries to take `layout`: its lock file, then its probe ports must be bindable.
fn try_take(layout: Layout) -> Result<Result<Lease, Busy>> {
    let path = lock_dir()?.join(format!("{}.lock", layout.id()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(Err(Busy::Locked(path))),
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    if let Some(addr) = layout.probes().into_iter().find(|a| TcpListener::bind(a).is_err()) {
        return Ok(Err(Busy::Bound(addr)));
    }
    Ok(Ok(Lease { layout, _lock: file }))
}

/// Takes `layout` if it is free (its lock not held, its ports bindable).
pub fn take(layout: Layout) -> Result<Option<Lease>> {
    Ok(try_take(layout)?.ok())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Reserves a free block for a test system. Distinct for concurrent callers, in this
/// process (an atomic counter) and across processes (the pid, then the lock files).
pub fn allocate() -> Result<Lease> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(n.wrapping_mul(104_729))
        % BLOCKS;
    for i in 0..BLOCKS {
        let k = (start + i) % BLOCKS;
        let (b, c) = (B_MIN + (k / 256) as u8, (k % 256) as u8);
        if let Ok(lease) = try_take(Layout::block(b, c))? {
            return Ok(lease);
        }
    }
    bail!("no free address block 127.{B_MIN}-{B_MAX}.x.0/24")
}

/// Reserves the fixed local layout for `kgw-up`; fails when it is taken.
pub fn take_local() -> Result<Lease> {
    match try_take(Layout::local())? {
        Ok(lease) => Ok(lease),
        Err(Busy::Locked(path)) => {
            bail!("another kgw-up holds the local layout (lock {})", path.display())
        }
        Err(Busy::Bound(addr)) => bail!("{addr} is already in use: is another kgw-up running?"),
    }
}

//! What a [`System`](super::System) runs and where.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::addr::Lease;
use crate::bins;
use crate::envoy::XdsProtocol;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Nats,
    Controller,
    Gateway,
    Discovery,
    AccessLog,
    /// Access-log sink replica `i` (1-based: the second, third, ... sink), started with
    /// [`Component::AccessLog`] when [`SystemConfig::access_log_replicas`] is above 1.
    AccessLogReplica(u8),
    Envoy,
}

impl Component {
    /// In start order.
    pub const ALL: [Component; 6] = [
        Component::Nats,
        Component::Controller,
        Component::Gateway,
        Component::Discovery,
        Component::AccessLog,
        Component::Envoy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Nats => "nats",
            Component::Controller => bins::CONTROLLER,
            Component::Gateway => bins::GATEWAY,
            Component::Discovery => bins::DISCOVERY,
            Component::AccessLog | Component::AccessLogReplica(_) => bins::ACCESS_LOG,
            Component::Envoy => "envoy",
        }
    }
}

impl Component {
    /// Which access-log replica this is (0: [`Component::AccessLog`]), if one.
    pub fn access_log_replica(self) -> Option<usize> {
        match self {
            Component::AccessLog => Some(0),
            Component::AccessLogReplica(i) => Some(usize::from(i)),
            _ => None,
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::AccessLogReplica(i) => write!(f, "{}-{i}", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

/// Which addresses the system uses.
#[derive(Debug, Default)]
pub enum Placement {
    /// A fresh block 127.B.C.0/24 ([`addr::allocate`]).
    #[default]
    Block,
    /// The fixed local layout of `kgw-up` ([`addr::take_local`]).
    Local,
    /// A layout already reserved by the caller.
    Lease(Lease),
}

/// Where gateway and discovery read resources.
#[derive(Clone, Debug, Default)]
pub enum Source {
    /// The config directory ([`SystemConfig::config_dir`]).
    #[default]
    Directory,
    /// A Kubernetes API server, through this kubeconfig.
    Kubernetes { kubeconfig: PathBuf },
}

#[derive(Debug)]
pub struct SystemConfig {
    /// Where gateway and discovery read resources.
    pub source: Source,
    /// The directory config source; `None`: `<run dir>/config`, created empty.
    pub config_dir: Option<PathBuf>,
    /// Where logs, the access log and NATS' store go; `None`: a temporary directory,
    /// removed on drop unless a panic is unwinding or `KGW_KEEP_RUN_DIR` is set.
    pub run_dir: Option<PathBuf>,
    pub placement: Placement,
    /// The gateway Envoy serves: (namespace, name), its node `role` is `ns~name`.
    pub gateway: (String, String),
    /// What to start, a subset of [`Component::ALL`].
    pub components: Vec<Component>,
    /// Envoy's bootstrap YAML; `None`: from `controller bootstrap`.
    pub envoy_bootstrap: Option<String>,
    /// The ADS protocol of the bootstrap from `controller bootstrap` (state of the world
    /// unless a test asks for delta).
    pub xds_protocol: XdsProtocol,
    pub envoy_log_level: String,
    /// Time for each component to come up.
    pub ready_timeout: Duration,
    /// Extra environment for every process.
    pub env: Vec<(String, String)>,
    /// NATS with one user per process, each allowed only what it does (the default, as
    /// the chart runs it); false: an open broker.
    pub nats_auth: bool,
    /// Access-log sink replicas (1 to [`crate::addr::MAX_ACCESS_LOG_REPLICAS`]) when
    /// [`Component::AccessLog`] is started: replica `i` listens on its own host
    /// ([`crate::addr::Layout::access_log_replica`]), writes its own file, and Envoy sends
    /// every entry to every replica.
    pub access_log_replicas: usize,
    /// mTLS between every process, Envoy and NATS (the default, as the chart runs it): a
    /// CA and certificates generated under `<run dir>/pki`; false: `--insecure-no-mtls`.
    pub mtls: bool,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            source: Source::Directory,
            config_dir: None,
            run_dir: None,
            placement: Placement::Block,
            gateway: ("default".into(), "gw".into()),
            components: Component::ALL.to_vec(),
            envoy_bootstrap: None,
            xds_protocol: XdsProtocol::StateOfTheWorld,
            envoy_log_level: "warn".into(),
            ready_timeout: Duration::from_secs(30),
            env: Vec::new(),
            nats_auth: true,
            access_log_replicas: 1,
            mtls: true,
        }
    }
}

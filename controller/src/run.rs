//! Wiring: NATS mirrors → actor → snapshot cache → ADS server.
use std::{net::SocketAddr, sync::Arc};

use kgw_common::{
    bus::{self, Bus, KvEvent},
    serve::{self, HttpOptions, Listener, ServerTls},
    shutdown::Shutdown,
    tls::{Alpn, TlsMode, grpc::Require},
};
use kgw_proto::identity::Identity;
use kgw_proto::nats::{PROXIES_BUCKET, UPSTREAMS_BUCKET};
use tokio::sync::{mpsc, watch};

use crate::{
    actor::{ControllerActor, Inputs, Published},
    debug,
    metrics::ControllerMetrics,
    rest_xds,
    translate::Settings,
    validation, wasm,
    xds::{
        SnapshotCache,
        ads::{AdsService, XdsStats},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("NATS")]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Listen(#[from] serve::BindError),
    #[error("WASM cache")]
    Wasm(#[from] wasm::WasmError),
    #[error("xDS server failed")]
    Serve(#[source] tonic::transport::Error),
    #[error("config source (TLS Secrets)")]
    Source(#[from] kgw_common::source::SourceError),
}

pub struct RunConfig {
    /// mTLS on every port (or plain text, for debugging).
    pub tls: TlsMode,
    pub nats_url: String,
    pub nats_auth: bus::NatsAuth,
    pub xds_addr: SocketAddr,
    pub settings: Settings,
    /// The WASM cache's HTTP address (9979) and its directory.
    pub wasm_cache_addr: SocketAddr,
    pub wasm_cache_dir: std::path::PathBuf,
    /// Where modules may come from and how large they may be.
    pub wasm_limits: wasm::FetchLimits,
    /// REST xDS (9976), proxy debug gRPC (9966) and validation gRPC (9988).
    pub rest_xds_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    pub validation_addr: SocketAddr,
    /// Where TLS Secrets come from (`--source`, `--config-dir`); `None`: nowhere, and
    /// HTTPS listeners are not served.
    pub source: Option<kgw_common::config::SourceSpec>,
}

pub struct Running {
    pub bus: Bus,
    pub metrics: Arc<ControllerMetrics>,
    pub cache: SnapshotCache,
    pub stats: Arc<XdsStats>,
    pub synced: watch::Receiver<(bool, bool)>,
    pub server: tokio::task::JoinHandle<Result<(), ControllerError>>,
}

/// Starts the pipeline and the xDS server. Call on the actix System thread.
pub async fn start(config: RunConfig, shutdown: Shutdown) -> Result<Running, ControllerError> {
    let grpc_tls = ServerTls::for_mode(&config.tls, Alpn::H2);
    let listener = Listener::bind("xDS", config.xds_addr, grpc_tls.clone()).await?;
    let bus = bus::connect(&config.nats_url, "controller", &config.nats_auth).await?;
    let cache = SnapshotCache::default();
    let (synced_tx, synced) = watch::channel((false, false));
    let metrics = Arc::new(ControllerMetrics::default());
    let wasm_listener = Listener::bind(
        "WASM cache",
        config.wasm_cache_addr,
        ServerTls::for_mode(&config.tls, Alpn::Http1),
    )
    .await?;
    let (fetched_tx, fetched) = mpsc::unbounded_channel();
    let verified = wasm::Verified::default();
    let fetcher = wasm::spawn_fetcher(
        config.wasm_cache_dir.clone(),
        config.wasm_limits.clone(),
        verified.clone(),
        fetched_tx,
    )?;
    tokio::spawn(serve::serve_http(
        wasm_listener,
        wasm::WasmCache::new(config.wasm_cache_dir.clone(), verified),
        HttpOptions::default(),
        shutdown.clone(),
    ));
    tracing::info!(addr = %config.wasm_cache_addr, dir = %config.wasm_cache_dir.display(), "serving the WASM cache");
    let side_listeners = SideListeners::bind(&config).await?;
    let actor = ControllerActor::new(config.settings, cache.clone(), synced_tx)
        .with_wasm(fetcher)
        .with_metrics(metrics.clone());
    let published = actor.published();
    let (proxies_tx, proxies) = mpsc::channel::<KvEvent>(64);
    bus::spawn_kv_mirror(bus.clone(), PROXIES_BUCKET, proxies_tx, shutdown.clone());
    let (upstreams_tx, upstreams) = mpsc::channel::<KvEvent>(64);
    bus::spawn_kv_mirror(bus.clone(), UPSTREAMS_BUCKET, upstreams_tx, shutdown.clone());
    let secrets = match config.source {
        Some(spec) => {
            let (secrets_tx, secrets) = mpsc::channel(16);
            kgw_common::source::spawn_only(spec, crate::secrets::KINDS, secrets_tx, shutdown.clone()).await?;
            Some(secrets)
        }
        None => {
            tracing::warn!("no config source (--config-dir or --source kubernetes): HTTPS listeners are not served");
            None
        }
    };
    // The actor reads its inputs itself; no task forwards them.
    actor.start_on(Inputs {
        proxies,
        upstreams,
        wasm: fetched,
        secrets,
    });

    side_listeners.serve(cache.clone(), published, metrics.clone(), &shutdown);
    let stats = Arc::new(XdsStats::default());
    let ads = AdsService::new(cache.clone(), stats.clone()).into_server();
    let incoming = listener.incoming(shutdown.clone());
    tracing::info!(addr = %config.xds_addr, mtls = config.tls.mtls().is_some(), "serving xDS (ADS)");
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .add_service(ads)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
            .await
            .map_err(ControllerError::Serve)
    });
    Ok(Running {
        bus,
        metrics,
        cache,
        stats,
        synced,
        server,
    })
}

/// The listeners of REST xDS, proxy debug and validation, bound before anything starts so
/// that a taken port fails the start with its address.
struct SideListeners {
    rest_xds: Listener,
    debug: Listener,
    validation: Listener,
}

impl SideListeners {
    async fn bind(config: &RunConfig) -> Result<Self, ControllerError> {
        let grpc = ServerTls::for_mode(&config.tls, Alpn::H2);
        Ok(Self {
            rest_xds: Listener::bind(
                "REST xDS",
                config.rest_xds_addr,
                ServerTls::for_mode(&config.tls, Alpn::Http1),
            )
            .await?,
            debug: Listener::bind("proxy debug gRPC", config.debug_addr, grpc.clone()).await?,
            validation: Listener::bind("validation gRPC", config.validation_addr, grpc).await?,
        })
    }

    /// Serves each on its own task until `shutdown`.
    fn serve(
        self,
        cache: SnapshotCache,
        published: watch::Receiver<Published>,
        metrics: Arc<ControllerMetrics>,
        shutdown: &Shutdown,
    ) {
        let addr = |l: &Listener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr = %addr(&self.rest_xds), "serving REST xDS");
        tokio::spawn(serve::serve_http(
            self.rest_xds,
            rest_xds::RestXds::new(cache),
            HttpOptions::default(),
            shutdown.clone(),
        ));
        let grpc = |listener: Listener, router: tonic::transport::server::Router| {
            let name = listener.name();
            tracing::info!(addr = %addr(&listener), "serving {name}");
            let stop = shutdown.clone();
            let incoming = listener.incoming(shutdown.clone());
            tokio::spawn(async move {
                if let Err(error) = router
                    .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                    .await
                {
                    tracing::error!(server = name, error = %error, "gRPC server failed");
                }
            });
        };
        // Operators (admin certificates) read every Proxy; the gateway validates.
        let debug = Require {
            server: "proxy debug gRPC",
            allowed: |identity| matches!(identity, Identity::Admin),
        };
        let validation = Require {
            server: "validation gRPC",
            allowed: |identity| identity.is_process_or_admin(kgw_proto::nats::users::GATEWAY),
        };
        grpc(
            self.debug,
            tonic::transport::Server::builder().add_service(tonic::service::interceptor::InterceptedService::new(
                debug::ProxyDebug::new(published.clone()).into_server(),
                debug,
            )),
        );
        grpc(
            self.validation,
            tonic::transport::Server::builder().add_service(tonic::service::interceptor::InterceptedService::new(
                validation::Validation::new(published)
                    .with_metrics(metrics)
                    .into_server(),
                validation,
            )),
        );
    }
}

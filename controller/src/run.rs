//! Wiring: NATS mirrors → actor → snapshot cache → ADS server.
use std::{net::SocketAddr, sync::Arc};

use actix::Actor as _;
use kgw_common::{
    bus::{self, Bus, KvEvent},
    shutdown::Shutdown,
};
use kgw_proto::nats::{PROXIES_BUCKET, UPSTREAMS_BUCKET, reports_subject};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use crate::{
    actor::{ControllerActor, ProxiesChanged, Published, UpstreamsChanged, WasmFetched},
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
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("WASM cache")]
    Wasm(#[from] wasm::WasmError),
    #[error("xDS server failed")]
    Serve(#[source] tonic::transport::Error),
}

pub struct RunConfig {
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
    let listener = tokio::net::TcpListener::bind(config.xds_addr)
        .await
        .map_err(|source| ControllerError::Listen {
            addr: config.xds_addr,
            source,
        })?;
    let bus = bus::connect(&config.nats_url, "controller", &config.nats_auth).await?;
    let cache = SnapshotCache::default();
    let (reports_tx, mut reports) = mpsc::unbounded_channel::<kgw_proto::v1::ProxyReport>();
    let (synced_tx, synced) = watch::channel((false, false));
    let metrics = Arc::new(ControllerMetrics::default());
    let wasm_listener = tokio::net::TcpListener::bind(config.wasm_cache_addr)
        .await
        .map_err(|source| ControllerError::Listen {
            addr: config.wasm_cache_addr,
            source,
        })?;
    let (fetched_tx, mut fetched) = mpsc::unbounded_channel();
    let verified = wasm::Verified::default();
    let fetcher = wasm::spawn_fetcher(
        config.wasm_cache_dir.clone(),
        config.wasm_limits.clone(),
        verified.clone(),
        fetched_tx,
    )?;
    tokio::spawn(wasm::serve(
        wasm_listener,
        config.wasm_cache_dir.clone(),
        verified,
        shutdown.clone(),
    ));
    tracing::info!(addr = %config.wasm_cache_addr, dir = %config.wasm_cache_dir.display(), "serving the WASM cache");
    let side_listeners = SideListeners::bind(&config).await?;
    let actor = ControllerActor::new(config.settings, cache.clone(), reports_tx, synced_tx)
        .with_wasm(fetcher)
        .with_metrics(metrics.clone());
    let published = actor.published();
    let actor = actor.start();
    let wasm_actor = actor.clone();
    tokio::spawn(async move {
        while let Some(outcome) = fetched.recv().await {
            if wasm_actor.send(WasmFetched(outcome)).await.is_err() {
                break;
            }
        }
    });

    let publisher = bus.client.clone();
    tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            let meta = report.proxy.clone().unwrap_or_default();
            let subject = reports_subject(&meta.namespace, &meta.name);
            if let Err(error) = publisher.publish(subject, report.encode_to_vec().into()).await {
                tracing::debug!(%error, "cannot publish translation report");
            }
        }
    });

    let (proxies_tx, mut proxies) = mpsc::channel::<KvEvent>(64);
    bus::spawn_kv_mirror(bus.clone(), PROXIES_BUCKET, proxies_tx, shutdown.clone());
    let proxy_actor = actor.clone();
    tokio::spawn(async move {
        // Events that arrive while the actor translates are merged (latest per key).
        while let Some(event) = proxies.recv().await {
            for event in bus::coalesce(event, &mut proxies) {
                if proxy_actor.send(ProxiesChanged(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    let (upstreams_tx, mut upstreams) = mpsc::channel::<KvEvent>(64);
    bus::spawn_kv_mirror(bus.clone(), UPSTREAMS_BUCKET, upstreams_tx, shutdown.clone());
    tokio::spawn(async move {
        while let Some(event) = upstreams.recv().await {
            for event in bus::coalesce(event, &mut upstreams) {
                if actor.send(UpstreamsChanged(event)).await.is_err() {
                    return;
                }
            }
        }
    });

    side_listeners.serve(cache.clone(), published, &shutdown);
    let stats = Arc::new(XdsStats::default());
    let ads = AdsService::new(cache.clone(), stats.clone()).into_server();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tracing::info!(addr = %config.xds_addr, "serving xDS (ADS)");
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

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ControllerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControllerError::Listen { addr, source })
}

/// The listeners of REST xDS, proxy debug and validation, bound before anything starts so
/// that a taken port fails the start with its address.
struct SideListeners {
    rest_xds: tokio::net::TcpListener,
    debug: tokio::net::TcpListener,
    validation: tokio::net::TcpListener,
}

impl SideListeners {
    async fn bind(config: &RunConfig) -> Result<Self, ControllerError> {
        Ok(Self {
            rest_xds: bind(config.rest_xds_addr).await?,
            debug: bind(config.debug_addr).await?,
            validation: bind(config.validation_addr).await?,
        })
    }

    /// Serves each on its own task until `shutdown`.
    fn serve(self, cache: SnapshotCache, published: watch::Receiver<Published>, shutdown: &Shutdown) {
        let addr = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr = %addr(&self.rest_xds), "serving REST xDS");
        tokio::spawn(rest_xds::serve(self.rest_xds, cache, shutdown.clone()));
        let grpc = |name: &'static str, listener: tokio::net::TcpListener, router: tonic::transport::server::Router| {
            tracing::info!(addr = %addr(&listener), "serving {name}");
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                if let Err(error) = router
                    .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                    .await
                {
                    tracing::error!(server = name, error = %error, "gRPC server failed");
                }
            });
        };
        grpc(
            "proxy debug gRPC",
            self.debug,
            tonic::transport::Server::builder().add_service(debug::ProxyDebug::new(published.clone()).into_server()),
        );
        grpc(
            "validation gRPC",
            self.validation,
            tonic::transport::Server::builder().add_service(validation::Validation::new(published).into_server()),
        );
    }
}

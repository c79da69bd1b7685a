//! Wiring: NATS mirrors → actor → snapshot cache → ADS server.
use std::{net::SocketAddr, sync::Arc};

use actix::Actor as _;
use kgw_common::{
    bus::{self, KvEvent},
    shutdown::Shutdown,
};
use kgw_proto::nats::{PROXIES_BUCKET, UPSTREAMS_BUCKET, reports_subject};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use crate::{
    actor::{ControllerActor, ProxiesChanged, UpstreamsChanged},
    translate::Settings,
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
    #[error("xDS server failed")]
    Serve(#[source] tonic::transport::Error),
}

pub struct RunConfig {
    pub nats_url: String,
    pub xds_addr: SocketAddr,
    pub settings: Settings,
}

pub struct Running {
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
    let bus = bus::connect(&config.nats_url, "controller").await?;
    let cache = SnapshotCache::default();
    let (reports_tx, mut reports) = mpsc::unbounded_channel::<kgw_proto::v1::ProxyReport>();
    let (synced_tx, synced) = watch::channel((false, false));
    let actor = ControllerActor::new(config.settings, cache.clone(), reports_tx, synced_tx).start();

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
        while let Some(event) = proxies.recv().await {
            if proxy_actor.send(ProxiesChanged(event)).await.is_err() {
                break;
            }
        }
    });
    let (upstreams_tx, mut upstreams) = mpsc::channel::<KvEvent>(64);
    bus::spawn_kv_mirror(bus.clone(), UPSTREAMS_BUCKET, upstreams_tx, shutdown.clone());
    tokio::spawn(async move {
        while let Some(event) = upstreams.recv().await {
            if actor.send(UpstreamsChanged(event)).await.is_err() {
                break;
            }
        }
    });

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
        cache,
        stats,
        synced,
        server,
    })
}

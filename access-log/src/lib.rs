//! Envoy access-log sink: serves `envoy.service.accesslog.v3.AccessLogService`, turns every
//! entry of every stream into one JSON line ([`LogLine`]), appends it to a file (or stdout)
//! and publishes it on NATS `kgw.accesslog.<namespace>.<gateway>`.
//!
//! Layout: [`service`] is the gRPC edge (protobuf → [`LogLine`] happens there, via
//! [`line`]); it hands batches to any [`EntrySink`]. [`writer::LogWriter`] is the actix actor
//! that owns the output file and the NATS publisher ([`publish`]); `Addr<LogWriter>` is the
//! production sink. The gRPC code never sees NATS, the actor never sees tonic.
//!
//! No loss with several replicas: Envoy sends every entry to every replica, each replica
//! publishes it into the JetStream stream `kgw_access_log` under an id that is the same on
//! every replica, and the stream keeps one copy ([`publish`]).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod error;
pub mod line;
pub mod metrics;
mod otlp;
pub mod publish;
mod service;
pub mod stats;
mod writer;

use std::{future::Future, path::PathBuf, sync::Arc};

use actix::Addr;
use kgw_common::bus::{self, Bus};

pub use error::Error;
pub use line::{GatewayId, LogLine};
pub use otlp::OtlpLogs;
pub use service::serve;
pub use stats::{RejectReason, Stats, StatsSnapshot};
pub use writer::{Flush, LogWriter, Output, WriteBatch};

/// Where the gRPC edge hands converted lines. One call per received gRPC message; the
/// returned future resolves once the batch is accepted (that is the backpressure).
pub trait EntrySink: Clone + Send + Sync + 'static {
    fn write(&self, batch: Vec<LogLine>) -> impl Future<Output = Result<(), Error>> + Send;
}

/// How to start the writer side.
#[derive(Clone, Debug, Default)]
pub struct WriterConfig {
    /// Append lines to this file (parents created); stdout when `None`.
    pub output: Option<PathBuf>,
    /// Also publish each line on NATS at this URL; no publishing when `None`.
    pub nats_url: Option<String>,
    /// The credentials for that NATS.
    pub nats_auth: bus::NatsAuth,
    /// The publishing queue, pipeline and stream.
    pub publish: publish::PublishConfig,
    /// Also export each line as an OTLP log record to this OTLP/gRPC endpoint.
    pub otlp_logs_endpoint: Option<String>,
}

/// The started writer: its address (the [`EntrySink`]), the NATS connection and the
/// publisher's drain, if any.
pub struct WriterHandle {
    pub addr: Addr<LogWriter>,
    pub bus: Option<Bus>,
    pub drainer: Option<publish::Drainer>,
    /// The OTLP log exporter, to flush at shutdown ([`OtlpLogs::shutdown`]).
    pub otlp: Option<Arc<OtlpLogs>>,
}

/// Opens the output, connects to NATS in the background (never waits for the broker) and
/// starts the [`LogWriter`] actor. Must be called on the actix System thread (inside
/// `System::block_on`), since actors live there.
pub async fn start_writer(config: &WriterConfig, stats: Arc<Stats>) -> Result<WriterHandle, Error> {
    let output = match &config.output {
        Some(path) => Output::file(path)?,
        None => Output::stdout(),
    };
    let bus = match &config.nats_url {
        Some(url) => Some(
            bus::connect(url, "access-log", &config.nats_auth)
                .await
                .map_err(|source| Error::Nats {
                    url: url.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let (publisher, drainer) = match bus.clone() {
        Some(bus) => {
            let (publisher, drainer) = publish::Publisher::spawn(bus, config.publish.clone(), stats.clone());
            (Some(publisher), Some(drainer))
        }
        None => (None, None),
    };
    let otlp = match &config.otlp_logs_endpoint {
        Some(endpoint) => Some(Arc::new(OtlpLogs::start(endpoint)?)),
        None => None,
    };
    let addr = LogWriter::new(output, publisher, stats)
        .with_otlp(otlp.clone())
        .start_on_thread();
    Ok(WriterHandle {
        addr,
        bus,
        drainer,
        otlp,
    })
}

//! The library's errors (main wraps them in anyhow).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create directory {path:?} for the access-log output")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open access-log output {path:?}")]
    OpenOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {url:?}")]
    Nats {
        url: String,
        #[source]
        source: kgw_common::bus::BusError,
    },
    #[error("the log writer has stopped")]
    WriterGone {
        #[source]
        source: actix::MailboxError,
    },
    #[error("cannot export access logs over OTLP to {endpoint:?}")]
    OtlpLogs {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("gRPC server failed")]
    Serve {
        #[source]
        source: tonic::transport::Error,
    },
}

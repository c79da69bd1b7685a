//! Access-log entries as OpenTelemetry log records (`--otlp-logs-endpoint`), beside the
//! file and NATS, for a platform that collects logs with an OpenTelemetry collector.
//!
//! Each line becomes one record: its JSON as the body, the entry's start time as the
//! timestamp, and the fields as attributes under OpenTelemetry's HTTP semantic convention
//! names where one exists (`http.request.method`, `url.path`, `http.response.status_code`,
//! ...), `kgw.*` for ours. Records are batched and exported over OTLP/gRPC by the SDK's
//! own thread: the writer never waits on the collector. Records that cannot be exported
//! (collector down, queue full) are dropped by the SDK, which logs them; the file and NATS
//! keep every line.
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};

use crate::{Error, line::LogLine};

/// The exporter of access-log records.
#[derive(Debug)]
pub struct OtlpLogs {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
}

impl OtlpLogs {
    /// Exports to the OTLP/gRPC `endpoint` (`http://collector:4317`).
    pub fn start(endpoint: &str) -> Result<Self, Error> {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| Error::OtlpLogs {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let provider = SdkLoggerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("access-log")
                    .build(),
            )
            .build();
        let logger = provider.logger("kgw.access_log");
        Ok(Self { provider, logger })
    }

    /// Queues one line (`json`: its JSON text) for export.
    pub fn export(&self, line: &LogLine, json: &[u8]) {
        let mut record = self.logger.create_log_record();
        if let Some(start) = line.start {
            record.set_timestamp(start);
        }
        record.set_observed_timestamp(SystemTime::now());
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        record.set_event_name("kgw.access_log");
        record.set_body(AnyValue::String(String::from_utf8_lossy(json).into_owned().into()));
        record.add_attributes(attributes(line));
        self.logger.emit(record);
    }

    /// Exports what is queued and stops. Blocks: call off the async threads.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the OTLP log exporter did not shut down cleanly");
        }
    }
}

/// The line's fields as attributes (only those it has).
fn attributes(line: &LogLine) -> Vec<(&'static str, AnyValue)> {
    let mut out = vec![
        ("kgw.gateway", AnyValue::from(line.gateway.to_string())),
        ("network.protocol.name", AnyValue::from(line.protocol.to_string())),
        ("kgw.bytes_in", AnyValue::from(line.bytes_in as i64)),
        ("kgw.bytes_out", AnyValue::from(line.bytes_out as i64)),
    ];
    let mut text = |key: &'static str, value: &Option<String>| {
        if let Some(value) = value {
            out.push((key, AnyValue::from(value.clone())));
        }
    };
    text("server.address", &line.authority);
    text("url.path", &line.path);
    text("kgw.upstream_cluster", &line.upstream_cluster);
    text("kgw.route_name", &line.route_name);
    text("client.address", &line.downstream_remote);
    text("kgw.upstream_host", &line.upstream_host);
    text("kgw.request_id", &line.request_id);
    text("user_agent.original", &line.user_agent);
    if let Some(method) = line.method {
        out.push(("http.request.method", AnyValue::from(method.to_string())));
    }
    if let Some(status) = line.status {
        out.push(("http.response.status_code", AnyValue::from(i64::from(status))));
    }
    if let Some(duration) = line.duration_ms {
        out.push(("kgw.duration_ms", AnyValue::from(duration as i64)));
    }
    out
}

//! The tracing backend of the end-to-end tests: a real Jaeger (built from the pinned Go
//! module when missing, never skipped) receives a parent and a child span over OTLP gRPC
//! from the OpenTelemetry SDK the workspace uses, and its query API returns them as one
//! connected trace; with a logs file, an OTLP log record lands in it.

use std::time::Duration;

use kgw_harness::jaeger::Jaeger;
use opentelemetry::KeyValue;
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

const SERVICE: &str = "kgw-jaeger-test";

// Multi-threaded: the tonic channel's worker runs on the runtime while the SDK's batch
// processor thread exports, and the blocking flush runs off it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sent_over_otlp_come_back_as_one_trace() {
    let jaeger = Jaeger::start().await.expect("Jaeger starts");
    assert!(jaeger.otlp_endpoint().starts_with("http://127.0.0.1:"));
    assert!(
        jaeger.services().await.expect("services").iter().all(|s| s != SERVICE),
        "a fresh Jaeger has no spans of ours"
    );

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(jaeger.otlp_endpoint())
        .build()
        .expect("OTLP exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(SERVICE).build())
        .build();
    let tracer = provider.tracer("kgw-harness-jaeger-test");
    let (trace_id, parent_id, child_id) = tracer.in_span("apply-config", |cx| {
        cx.span().set_attribute(KeyValue::new("kgw.change", "route-1"));
        let parent = cx.span().span_context().clone();
        let mut child = tracer.start("translate");
        child.set_attribute(KeyValue::new("kgw.routes", 3_i64));
        let child_id = child.span_context().span_id();
        child.end();
        (parent.trace_id(), parent.span_id(), child_id)
    });
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    })
    .await
    .expect("flush task");
    flushed.expect("spans flushed to Jaeger");

    let trace = jaeger
        .wait_for_trace(SERVICE, Duration::from_secs(20), |t| t.spans.len() == 2)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\njaeger log:\n{}", jaeger.log_tail(40)));
    assert_eq!(trace.trace_id, trace_id.to_string());
    assert_eq!(trace.services(), [SERVICE]);
    assert!(trace.is_connected(), "{trace:#?}");
    let root = trace.root().expect("a root span");
    assert_eq!(root.span_id, parent_id.to_string());
    assert_eq!(root.operation_name, "apply-config");
    assert_eq!(root.tags.get("kgw.change").map(String::as_str), Some("route-1"));
    let child = trace.span_named("translate").expect("the child span");
    assert_eq!(child.span_id, child_id.to_string());
    assert_eq!(child.parent_span_id.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(child.tags.get("kgw.routes").map(String::as_str), Some("3"));
    assert_eq!(trace.children(&root.span_id).len(), 1);

    assert!(jaeger.services().await.expect("services").iter().any(|s| s == SERVICE));
    let by_id = jaeger.trace(&trace.trace_id).await.expect("trace by id");
    assert_eq!(by_id.as_ref().map(|t| t.spans.len()), Some(2));
}

// The collector's logs pipeline: an OTLP log record lands in the logs file as the `debug`
// exporter's text dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_sent_over_otlp_land_in_the_logs_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("otlp-logs.txt");
    let jaeger = Jaeger::start_with_logs_file(&path).await.expect("Jaeger starts");
    assert_eq!(jaeger.logs_file(), Some(path.as_path()));

    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(jaeger.otlp_endpoint())
        .build()
        .expect("OTLP log exporter");
    let provider = SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(SERVICE).build())
        .build();
    let logger = provider.logger("kgw-harness-jaeger-test");
    let mut record = logger.create_log_record();
    record.set_body("config applied".into());
    record.set_severity_number(Severity::Info);
    record.add_attribute("kgw.change", "route-1");
    logger.emit(record);
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        let _ = provider.shutdown();
        flushed
    })
    .await
    .expect("flush task");
    flushed.expect("logs flushed to the collector");

    let text = kgw_harness::wait_for(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains("kgw.change"), "not yet in the logs file: {text:?}");
        Ok(text)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\njaeger log:\n{}", jaeger.log_tail(40)));
    assert!(text.contains("LogRecord #0"), "{text}");
    assert!(text.contains("Str(config applied)"), "{text}");
    assert!(text.contains("-> kgw.change: Str(route-1)"), "{text}");
    assert!(text.contains(&format!("-> service.name: Str({SERVICE})")), "{text}");
    assert!(text.contains("SeverityNumber: Info(9)"), "{text}");
}

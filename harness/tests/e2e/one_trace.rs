//! One config change is one trace across the processes, read back from a real Jaeger: the
//! source's batch in the gateway, its translation and key-value write, the controller's
//! read, translation and snapshot, the push to Envoy and Envoy's ACK, each the child of the
//! one before. The same collector takes the access-log sink's OTLP log records.
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kgw_harness::{
    SystemConfig,
    envoy::XdsProtocol,
    jaeger::{Jaeger, Span, Trace},
    wait_status, write_manifest_atomically,
};

use crate::support::{WAIT, config_dir, route_yaml, service_yaml, start_with};

/// The steps of a route change, each the parent of the next: (service, span name).
const ROUTE_CHANGE: [(&str, &str); 8] = [
    ("gateway", "source.batch"),
    ("gateway", "gateway.translate"),
    ("gateway", "kv.write"),
    ("controller", "controller.apply"),
    ("controller", "controller.translate"),
    ("controller", "xds.snapshot"),
    ("controller", "xds.push"),
    ("controller", "envoy.ack"),
];

/// The steps of an endpoint change: discovery, then the controller as for a route.
const ENDPOINT_CHANGE: [(&str, &str); 8] = [
    ("discovery", "source.batch"),
    ("discovery", "discovery.translate"),
    ("discovery", "kv.write"),
    ("controller", "controller.apply"),
    ("controller", "controller.translate"),
    ("controller", "xds.snapshot"),
    ("controller", "xds.push"),
    ("controller", "envoy.ack"),
];

#[tokio::test(flavor = "multi_thread")]
async fn a_route_change_is_one_trace_and_its_requests_are_otlp_log_records() -> Result<()> {
    route_change_is_one_trace(XdsProtocol::StateOfTheWorld).await
}

/// The same over incremental (delta) xDS: its push and ACK continue the trace too.
#[tokio::test(flavor = "multi_thread")]
async fn delta_xds_a_route_change_is_one_trace_and_its_requests_are_otlp_log_records() -> Result<()> {
    route_change_is_one_trace(XdsProtocol::Delta).await
}

async fn route_change_is_one_trace(protocol: XdsProtocol) -> Result<()> {
    let logs = tempfile::tempdir()?;
    let jaeger = Jaeger::start_with_logs_file(logs.path().join("records.txt")).await?;
    let running = start_with(
        &["echo"],
        SystemConfig {
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), jaeger.otlp_endpoint()),
                // Export within 100 ms, not the default 5 s.
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
                ("OTEL_BLRP_SCHEDULE_DELAY".into(), "100".into()),
                ("KGW_ACCESS_LOG_OTLP_LOGS_ENDPOINT".into(), jaeger.otlp_endpoint()),
            ],
            xds_protocol: protocol,
            ..SystemConfig::default()
        },
    )
    .await?;
    let system = &running.system;
    // Envoy has its listener (the controller has read both buckets): the route below is a
    // change the controller sees as one, not part of its first read.
    wait_status(&system.url("/traced"), None, 404, WAIT).await?;
    write_manifest_atomically(
        config_dir(system),
        "route.yaml",
        &route_yaml("traced", "/traced", &[("echo", 1)]),
    )?;
    wait_status(&system.url("/traced"), None, 200, WAIT).await?;

    // On delta a route reaches Envoy in its virtual host (VHDS), not in a route table.
    let route_push = match protocol {
        XdsProtocol::Delta => "VirtualHost",
        XdsProtocol::StateOfTheWorld => "RouteConfiguration",
    };
    let trace = one_trace(
        &jaeger,
        "gateway",
        "HTTPRoute/default/traced",
        &ROUTE_CHANGE,
        route_push,
    )
    .await?;
    print_chain("one route change", &trace, &ROUTE_CHANGE, route_push)?;

    // An endpoint change: discovery's trace reaches Envoy's ACK of the new endpoints.
    // A second endpoint on the next address of the block (nothing needs to answer there).
    let echo = running.backends[0];
    let std::net::IpAddr::V4(ip) = echo.ip() else {
        anyhow::bail!("backends are IPv4 loopback addresses: {echo}");
    };
    let extra = std::net::SocketAddr::from((std::net::Ipv4Addr::from(u32::from(ip) + 1), echo.port()));
    write_manifest_atomically(
        config_dir(system),
        "svc-echo.yaml",
        &service_yaml("echo", &[echo, extra]),
    )?;
    let trace = one_trace(
        &jaeger,
        "discovery",
        "EndpointSlice/default/echo-1",
        &ENDPOINT_CHANGE,
        "ClusterLoadAssignment",
    )
    .await?;
    print_chain("one endpoint change", &trace, &ENDPOINT_CHANGE, "ClusterLoadAssignment")?;

    // The request's access-log entry reaches the collector as a log record.
    let file = jaeger.logs_file().context("logs file")?.to_path_buf();
    kgw_harness::wait_for(WAIT, || async {
        let records = std::fs::read_to_string(&file).unwrap_or_default();
        ensure!(
            records.contains("-> url.path: Str(/traced)")
                && records.contains("-> http.response.status_code: Int(200)")
                && records.contains("-> service.name: Str(access-log)"),
            "no log record of GET /traced yet: {records}"
        );
        Ok(())
    })
    .await?;
    Ok(())
}

/// Waits for the trace rooted at `service`'s batch of `resource` that holds `steps`, ending
/// at the ACK of a push of `push_type`; on failure prints what Jaeger holds.
async fn one_trace(
    jaeger: &Jaeger,
    service: &str,
    resource: &str,
    steps: &[(&str, &str)],
    push_type: &str,
) -> Result<Trace> {
    let found = jaeger
        .wait_for_trace(service, Duration::from_secs(30), |trace| {
            rooted_at(trace, resource) && chain(trace, steps, push_type).is_ok()
        })
        .await;
    match found {
        Ok(trace) => {
            ensure!(trace.is_connected(), "every span's parent is in the trace: {trace:#?}");
            Ok(trace)
        }
        Err(error) => {
            // What Jaeger holds, in short: each trace as its (service, span) list.
            for service in jaeger.services().await? {
                for trace in jaeger.traces(&service, Duration::from_secs(3600)).await? {
                    let spans: Vec<String> = trace
                        .spans
                        .iter()
                        .map(|s| format!("{}:{}<-{:?}", s.service, s.operation_name, s.parent_span_id))
                        .collect();
                    eprintln!("{service} trace {}: {spans:?}", trace.trace_id);
                }
            }
            Err(error.context(format!("the trace of a change to {resource}")))
        }
    }
}

fn print_chain(what: &str, trace: &Trace, steps: &[(&str, &str)], push_type: &str) -> Result<()> {
    println!("{what}, as Jaeger shows it (trace {}):", trace.trace_id);
    for span in chain(trace, steps, push_type)? {
        println!(
            "  {:<10} {:<20} {:>8.3} ms  {}",
            span.service,
            span.operation_name,
            span.duration_us as f64 / 1000.0,
            tags(span)
        );
    }
    Ok(())
}

/// The trace's root is the batch that read `resource`.
fn rooted_at(trace: &Trace, resource: &str) -> bool {
    trace.root().is_some_and(|root| {
        root.operation_name == "source.batch" && root.tags.get("resources").is_some_and(|r| r.contains(resource))
    })
}

/// The spans of `steps`, from the `envoy.ack` of a push of `push_type` back to the root,
/// each the parent of the next.
fn chain<'t>(trace: &'t Trace, steps: &[(&str, &str)], push_type: &str) -> Result<Vec<&'t Span>> {
    let mut best = Vec::new();
    for ack in trace.spans.iter().filter(|s| s.operation_name == "envoy.ack") {
        let mut path = vec![ack];
        while let Some(parent) = trace.parent(path[path.len() - 1]) {
            path.push(parent);
        }
        path.reverse();
        let found: Vec<(&str, &str)> = path
            .iter()
            .map(|s| (s.service.as_str(), s.operation_name.as_str()))
            .collect();
        // One change may push several types (a new backend's cluster goes first).
        let pushed = path
            .iter()
            .rev()
            .nth(1)
            .is_some_and(|push| push.tags.get("type_url").map(String::as_str) == Some(push_type));
        if found == steps && pushed {
            return Ok(path);
        }
        best = found;
    }
    anyhow::bail!("no chain {steps:?} ending at a {push_type} ACK; the closest: {best:?}")
}

fn tags(span: &Span) -> String {
    ["resources", "bucket", "keys", "proxy", "role", "type_url", "version"]
        .iter()
        .filter_map(|k| span.tags.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

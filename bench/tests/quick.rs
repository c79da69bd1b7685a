//! `kgw-bench --quick` runs every scenario small and writes a JSON file with every key of
//! the contract (issues 4, 9 and 11), each with measured numbers. No timing goal is
//! asserted but discovery's failover (≤ 10 s), only that the figures are consistent
//! (p50 ≤ p99, ratio = ours / floor, no rewrite on restart, delta below state of the world).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Keys whose value is one number.
const NUMBERS: &[&str] = &[
    "non_2xx_during_edits",
    "bulk_5k_seconds",
    "als_entries_sent",
    "als_entries_lost",
    "als_rps",
    "als_sink_cores",
    "envoy_rps_file_log",
    "envoy_rps_grpc_log",
    "envoy_rps_static",
    "envoy_rps_xds",
];

fn number(doc: &Value, path: &[&str]) -> f64 {
    let mut v = doc;
    for p in path {
        v = v.get(p).unwrap_or_else(|| panic!("no {path:?} in {doc:#}"));
    }
    let x = v.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number: {v}"));
    assert!(x.is_finite() && x >= 0.0, "{path:?} = {x}");
    x
}

/// The keys of an object of figures by route count, in increasing order (beside them,
/// `propagation_ms` holds an object per shape).
fn sizes(doc: &Value, key: &str) -> Vec<String> {
    sizes_of(&doc[key], key)
}

fn sizes_of(obj: &Value, key: &str) -> Vec<String> {
    let obj = obj
        .as_object()
        .unwrap_or_else(|| panic!("{key} is not an object: {obj}"));
    let mut keys: Vec<String> = obj.keys().filter(|k| !SHAPES.contains(&k.as_str())).cloned().collect();
    keys.sort_by_key(|k| {
        k.parse::<usize>()
            .unwrap_or_else(|_| panic!("{key}: {k} is not a route count"))
    });
    keys
}

const SHAPES: [&str; 2] = ["spread", "one_host"];

/// `{p50, p99}` at `path`: both positive, p50 ≤ p99; (p50, p99).
fn quantiles(doc: &Value, path: &[&str]) -> (f64, f64) {
    let at = |q: &str| number(doc, &[path, &[q]].concat());
    let (p50, p99) = (at("p50"), at("p99"));
    assert!(p50 > 0.0 && p50 <= p99, "{path:?}: p50 {p50}, p99 {p99}");
    (p50, p99)
}

/// The issue-9 keys: propagation in two shapes beside Envoy's floor over ADS, their ratio,
/// and the RSS slope of our four processes.
fn check_shapes(doc: &Value) {
    for shape in SHAPES {
        let ours = sizes_of(&doc["propagation_ms"][shape], shape);
        assert_eq!(ours.len(), 2, "propagation_ms.{shape}: two sizes");
        assert_eq!(
            sizes_of(&doc["envoy_floor_ads_ms"][shape], shape),
            ours,
            "envoy_floor_ads_ms.{shape}: the same sizes"
        );
        for size in &ours {
            let (p50, p99) = quantiles(doc, &["propagation_ms", shape, size]);
            let (f50, f99) = quantiles(doc, &["envoy_floor_ads_ms", shape, size]);
            let (r50, r99) = (
                number(doc, &["ratio_to_floor", shape, size, "p50"]),
                number(doc, &["ratio_to_floor", shape, size, "p99"]),
            );
            // Rounded to three decimals.
            assert!(
                (r50 - p50 / f50).abs() < 0.01 * r50.max(1.0),
                "ratio p50 {r50} ≠ {p50} / {f50}"
            );
            assert!(
                (r99 - p99 / f99).abs() < 0.01 * r99.max(1.0),
                "ratio p99 {r99} ≠ {p99} / {f99}"
            );
        }
    }
    // One new route among 50 or 100 under one hostname writes a route page (16 routes on
    // average, 64 at most), an index page and the host's list of index pages, not the host
    // (the goal: 4 KB at any size); Envoy gets the host.
    for shape in SHAPES {
        for size in sizes_of(&doc["kv_bytes_per_route_change_by_shape"][shape], shape) {
            let kv = number(doc, &["kv_bytes_per_route_change_by_shape", shape, &size]);
            let xds = number(doc, &["xds_bytes_per_route_change_by_shape", shape, &size]);
            assert!(kv > 0.0 && xds > 0.0, "{shape} {size}: kv {kv}, xds {xds}");
            if shape == "one_host" {
                assert!(kv <= 4096.0, "one_host {size}: {kv} bytes written to KV for one route");
            }
        }
    }
    for p in ["gateway", "controller", "discovery", "access-log"] {
        let x = &doc["rss_mib_per_1k_routes"][p];
        // A slope: may be negative at small sizes (allocator noise), never absurd.
        let slope = x.as_f64().unwrap_or_else(|| panic!("rss_mib_per_1k_routes.{p}: {x}"));
        assert!(
            slope.is_finite() && slope.abs() < 1000.0,
            "rss_mib_per_1k_routes.{p}: {slope}"
        );
    }
}

/// Issue 11's keys: discovery alone (cold start, restart, idle probes, memory, failover)
/// and the xDS bytes of a route change, delta (the default) below state of the world.
fn check_discovery(doc: &Value) {
    assert!(number(doc, &["uds_3k_services_seconds"]) > 0.0);
    assert_eq!(
        number(doc, &["uds_writes_on_restart"]),
        0.0,
        "a restart rewrites nothing"
    );
    let probes = number(doc, &["fds_probes_per_minute_idle"]);
    let bound = number(doc, &["details", "fds_probes", "bound_per_minute"]);
    assert!(
        bound > 0.0 && probes <= bound,
        "idle probes {probes}/min above one per Upstream ({bound})"
    );
    assert!(number(doc, &["discovery_rss_mib"]) > 0.0);
    let failover = number(doc, &["discovery_failover_seconds"]);
    assert!(failover > 0.0 && failover <= 10.0, "discovery failover {failover} s");
    let s = sizes(doc, "xds_bytes_per_route_change_sotw");
    assert_eq!(s, sizes(doc, "xds_bytes_per_route_change"), "sotw: the same sizes");
    for size in &s {
        assert!(number(doc, &["xds_bytes_per_route_change_sotw", size]) > 0.0);
        // The earlier name of the delta figure stays.
        assert_eq!(
            number(doc, &["xds_bytes_per_route_change_delta", size]),
            number(doc, &["xds_bytes_per_route_change", size])
        );
    }
    // One virtual host (delta, the default) instead of the whole route table.
    let largest = s.last().expect("sizes");
    let delta = number(doc, &["xds_bytes_per_route_change", largest]);
    let sotw = number(doc, &["xds_bytes_per_route_change_sotw", largest]);
    assert!(delta < sotw, "at {largest}: delta {delta} ≥ state of the world {sotw}");
}

#[test]
fn quick_run_reports_every_key_with_numbers() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_kgw-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("kgw-bench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "kgw-bench --quick: {}\n{stdout}\n{stderr}",
        run.status
    );
    let last = stdout.lines().last().expect("some output");
    let path = PathBuf::from(last.trim());
    assert!(path.starts_with(out.path()), "last line is the JSON's path: {last}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).expect("JSON file")).expect("valid JSON");
    assert_eq!(doc["errors"], serde_json::json!([]), "{doc:#}");
    assert!(stdout.contains("goal"), "a table beside the goals: {stdout}");

    for key in ["translate_full_ms", "controller_translate_one_vhost_ms"] {
        let s = sizes(&doc, key);
        assert_eq!(s.len(), 3, "{key}: three sizes");
        for size in &s {
            number(&doc, &[key, size]);
        }
    }
    // At the shape sizes (two in --quick).
    for key in [
        "translate_one_route_ms",
        "gateway_translate_one_route_ms",
        "controller_apply_one_route_ms",
        "translate_one_route_one_host_ms",
        "gateway_translate_one_route_one_host_ms",
        "controller_apply_one_route_one_host_ms",
        "controller_apply_one_upstream_ms",
    ] {
        let s = sizes(&doc, key);
        assert_eq!(s.len(), 2, "{key}: two sizes");
        for size in &s {
            number(&doc, &[key, size]);
        }
    }
    // One route through both translators: the sum of the two parts, in either shape.
    for suffix in ["", "_one_host"] {
        let key = format!("translate_one_route{suffix}_ms");
        for size in &sizes(&doc, &key) {
            let (gateway, controller) = (
                format!("gateway_translate_one_route{suffix}_ms"),
                format!("controller_apply_one_route{suffix}_ms"),
            );
            let parts = number(&doc, &[gateway.as_str(), size]) + number(&doc, &[controller.as_str(), size]);
            let sum = number(&doc, &[key.as_str(), size]);
            assert!((sum - parts).abs() < 1e-6, "{key} {size}: {sum} vs {parts}");
        }
    }
    let s = sizes(&doc, "propagation_ms");
    assert_eq!(s.len(), 3, "propagation_ms: three sizes");
    for size in &s {
        for q in ["p50", "p99", "max"] {
            number(&doc, &["propagation_ms", size, q]);
        }
    }
    check_shapes(&doc);
    let s = sizes(&doc, "kv_bytes_per_route_change");
    assert_eq!(s.len(), 3, "kv_bytes_per_route_change: three sizes");
    for size in &s {
        let bytes = number(&doc, &["kv_bytes_per_route_change", size]);
        // One virtual host's value, whatever the size (the goal is 4 KB).
        assert!(
            bytes > 0.0 && bytes <= 4096.0,
            "kv_bytes_per_route_change {size}: {bytes}"
        );
    }
    let s = sizes(&doc, "xds_bytes_per_route_change");
    assert_eq!(s.len(), 3, "xds_bytes_per_route_change: three sizes");
    for size in &s {
        // At least the route table that carries the new route went out.
        let bytes = number(&doc, &["xds_bytes_per_route_change", size]);
        assert!(bytes > 0.0, "xds_bytes_per_route_change {size}: {bytes}");
    }
    let s = sizes(&doc, "envoy_floor_ms");
    assert_eq!(s.len(), 2, "envoy_floor_ms: two sizes");
    for size in &s {
        for q in ["p50", "max"] {
            number(&doc, &["envoy_floor_ms", size, q]);
        }
    }
    for q in ["p50", "p99"] {
        number(&doc, &["propagation_under_churn_ms", q]);
    }
    for p in [
        "gateway",
        "controller",
        "discovery",
        "access-log",
        "nats-server",
        "envoy",
    ] {
        assert!(number(&doc, &["rss_mib", p]) > 0.0, "rss_mib.{p}");
    }
    for key in NUMBERS {
        number(&doc, &[key]);
    }
    for victim in ["controller", "gateway", "discovery", "access-log", "nats"] {
        for figure in ["non_2xx", "socket_errors", "access_log_lost", "new_route_live_s"] {
            number(&doc, &["kill_matrix", victim, figure]);
        }
        assert!(
            number(&doc, &["kill_matrix", victim, "requests"]) > 0.0,
            "kill_matrix.{victim}"
        );
    }
    check_discovery(&doc);
    assert!(number(&doc, &["als_entries_sent"]) > 0.0);
    assert!(number(&doc, &["envoy_rps_xds"]) > 0.0);
    let machine = &doc["machine"];
    assert!(number(&doc, &["machine", "cores"]) >= 1.0);
    for k in ["cpu_model", "envoy", "nats_server", "git_commit"] {
        assert!(
            machine[k].as_str().is_some_and(|s| !s.is_empty()),
            "machine.{k}: {machine}"
        );
    }
}

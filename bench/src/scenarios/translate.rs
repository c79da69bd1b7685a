//! `translate_full_ms` and `translate_one_route_ms`: Gateway API → Proxy (gateway) →
//! Envoy resources (controller), in process, over an index built from the generated set.
//! Upstreams (discovery's job) are computed once beforehand: they are the controller's input.
//! `controller_translate_one_vhost_ms`: the controller's part alone of one route change (one
//! virtual host), Proxy → served snapshot, through its incremental translator.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Result, ensure};
use controller::translate::{Settings, cache::IncrementalTranslator, wasm::WasmModules};
use kgw_common::resources::Index;
use kgw_proto::v1 as pb;
use serde_json::json;

use super::{Plan, Report, median, ms};
use crate::routeset::{self, Backends};

pub fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let backends = Backends {
        ips: (10..14).map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d))).collect(),
        port: 9001,
    };
    let gateway_options = gateway::translate::Options::default();
    let settings = Settings {
        access_log_addresses: vec!["127.0.0.1:8083".into()],
        wasm: WasmModules::default(),
        proxy_tls: None,
    };
    for n in plan.sizes {
        let built = Instant::now();
        let mut index = routeset::index(n, &backends)?;
        let upstreams = discovery::translate::upstreams(&index);
        let build_ms = ms(built.elapsed());
        let pass = |index: &Index| -> (usize, usize) { translate_all(index, &upstreams, &gateway_options, &settings) };
        // Warm up, and check the set translates to what it should.
        let (routes, clusters) = pass(&index);
        // What the gateway writes to NATS (one KV value per Proxy; 1 MiB per message).
        let proxy_bytes: Vec<usize> = gateway::translate::translate(&index, &gateway_options)
            .proxies
            .values()
            .map(prost::Message::encoded_len)
            .collect();
        ensure!(routes >= n, "{n} routes translated into {routes} Envoy routes");
        ensure!(
            clusters >= routeset::services_for(n),
            "{clusters} clusters for {n} routes"
        );
        let full: Vec<f64> = (0..plan.translate_runs).map(|_| time(|| pass(&index))).collect();
        // One route changed: alternate between two versions of route 0, so that every
        // run translates a real change.
        let versions: Vec<String> = (1..=2)
            .map(|v| {
                routeset::route_yaml(
                    &routeset::route_name(0),
                    &routeset::service_of(0, routeset::services_for(n)),
                    v,
                )
            })
            .collect();
        let mut one = Vec::new();
        for run in 0..plan.one_route_runs {
            let started = Instant::now();
            routeset::apply_yaml(&mut index, &versions[run % 2])?;
            black_box(pass(&index));
            one.push(ms(started.elapsed()));
        }
        let (controller_one, controller_full) =
            controller_one_vhost(plan, &mut index, &versions, &upstreams, &gateway_options, &settings)?;
        let (f, o, c) = (median(&full), median(&one), median(&controller_one));
        eprintln!(
            "kgw-bench: translate {n} routes: full {f:.2} ms, one route {o:.2} ms (controller alone {c:.2} ms, \
             its full translation {:.2} ms), Proxy {proxy_bytes:?} bytes",
            median(&controller_full)
        );
        report.set_in("translate_full_ms", &Plan::key(n), json!(f));
        report.set_in("translate_one_route_ms", &Plan::key(n), json!(o));
        report.set_in("controller_translate_one_vhost_ms", &Plan::key(n), json!(c));
        report.detail(
            &format!("translate_{n}"),
            json!({"full_runs_ms": full, "one_route_runs_ms": one, "index_build_ms": build_ms,
                   "controller_one_vhost_runs_ms": controller_one, "controller_full_runs_ms": controller_full,
                   "envoy_routes": routes, "clusters": clusters, "proxy_bytes": proxy_bytes}),
        );
    }
    Ok(())
}

/// The controller's time for one changed route (its own virtual host), Proxy → served
/// snapshot, with every Proxy translated once before: one run per version change. Beside
/// it, for comparison, the full translation of the same Proxies (translation + snapshot).
fn controller_one_vhost(
    plan: &Plan,
    index: &mut Index,
    versions: &[String],
    upstreams: &BTreeMap<String, pb::Upstream>,
    options: &gateway::translate::Options,
    settings: &Settings,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut translator = IncrementalTranslator::default();
    let translate_each = |translator: &mut IncrementalTranslator, proxies: &BTreeMap<String, pb::Proxy>| {
        for (key, proxy) in proxies {
            black_box(translator.translate_to_snapshot(key, proxy, upstreams, settings));
        }
    };
    translate_each(&mut translator, &gateway::translate::translate(index, options).proxies);
    // The version the index holds (the last the caller applied); each run applies the other.
    let mut current = plan.one_route_runs.saturating_sub(1) % 2;
    let (mut runs, mut full_runs) = (Vec::new(), Vec::new());
    for _ in 0..plan.one_route_runs {
        current = 1 - current;
        routeset::apply_yaml(index, &versions[current])?;
        let proxies = gateway::translate::translate(index, options).proxies;
        let started = Instant::now();
        translate_each(&mut translator, &proxies);
        runs.push(ms(started.elapsed()));
        full_runs.push(time(|| {
            for proxy in proxies.values() {
                let (resources, _) = controller::translate::translate(proxy, upstreams, settings);
                black_box(controller::xds::Snapshot::new(&resources));
            }
        }));
    }
    Ok((runs, full_runs))
}

fn time<T>(f: impl FnOnce() -> T) -> f64 {
    let started = Instant::now();
    black_box(f());
    ms(started.elapsed())
}

/// Gateway translation, then the controller's for each Proxy: (Envoy routes, clusters).
fn translate_all(
    index: &Index,
    upstreams: &BTreeMap<String, pb::Upstream>,
    options: &gateway::translate::Options,
    settings: &Settings,
) -> (usize, usize) {
    let output = gateway::translate::translate(index, options);
    let mut routes = 0;
    let mut clusters = 0;
    for proxy in output.proxies.values() {
        let (resources, _problems) = controller::translate::translate(proxy, upstreams, settings);
        routes += resources
            .routes
            .iter()
            .flat_map(|r| &r.virtual_hosts)
            .map(|v| v.routes.len())
            .sum::<usize>();
        clusters += resources.clusters.len();
    }
    (routes, clusters)
}

//! `translate_full_ms`: Gateway API → Proxy (gateway) → Envoy resources (controller), in
//! process, over an index built from the generated set. Upstreams (discovery's job) are
//! computed once beforehand: they are the controller's input.
//! `translate_one_route_ms` (at the shape sizes, 1k–20k): one changed route through both
//! incremental translators, the sum of:
//! - `gateway_translate_one_route_ms`: Gateway API → Proxy KV values (the route translated
//!   again, its virtual host patched, the changed values encoded);
//! - `controller_apply_one_route_ms` (below).
//!
//! `translate_one_route_one_host_ms` and its two terms (`..._one_host_ms`): the same in the
//! one-host shape (every route under one hostname: one virtual host of n routes).
//!
//! `controller_translate_one_vhost_ms`: the controller's whole-Proxy path for the same change
//! (what it takes for a head change), for comparison.
//! `controller_apply_one_route_ms` (at the shape sizes, 1k–20k): the controller's whole
//! path for one changed virtual-host value of KV, in process: Proxy store → the changed
//! virtual host translated → snapshot (with its VHDS index) published.
//! `controller_apply_one_upstream_ms` (same sizes): the same for one changed Upstream value
//! (its endpoints; the Upstream named by the routes of one Service, five virtual hosts):
//! its cluster and endpoints made again, no virtual host translated.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Result, ensure};
use controller::translate::{Settings, cache::IncrementalTranslator, wasm::WasmModules};
use kgw_common::resources::{Change, Index, ResourceKey, decode};
use kgw_proto::v1 as pb;
use serde_json::json;

use super::{Plan, Report, median, ms};
use crate::routeset::{self, Backends, Shape};

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
        secrets: Default::default(),
    };
    for n in plan.sizes {
        let built = Instant::now();
        let mut index = routeset::index(n, &backends)?;
        let upstreams = kgw_common::upstreams::upstreams(&index);
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
        let versions = route_zero_versions(n, Shape::Spread);
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
            "kgw-bench: translate {n} routes: full {f:.2} ms, full path after one route changed {o:.2} ms \
             (controller's whole-Proxy path {c:.2} ms, its full translation {:.2} ms), Proxy {proxy_bytes:?} bytes",
            median(&controller_full),
        );
        report.set_in("translate_full_ms", &Plan::key(n), json!(f));
        report.set_in("controller_translate_one_vhost_ms", &Plan::key(n), json!(c));
        report.detail(
            &format!("translate_{n}"),
            json!({"full_runs_ms": full, "full_path_one_route_runs_ms": one, "index_build_ms": build_ms,
                   "controller_whole_proxy_runs_ms": controller_one, "controller_full_runs_ms": controller_full,
                   "envoy_routes": routes, "clusters": clusters, "proxy_bytes": proxy_bytes}),
        );
    }
    // One changed route through both incremental translators, as the running system takes
    // it: the gateway's (index → changed KV values, encoded) and the controller's (the
    // changed KV value → served snapshot). Their sum is `translate_one_route_ms`.
    // The same in the one-host shape (one virtual host of n routes), under keys of its own.
    for (shape, suffix) in [(Shape::Spread, ""), (Shape::OneHost, "_one_host")] {
        for &n in &plan.shape_sizes {
            one_route(plan, report, shape, suffix, n, &backends, &gateway_options, &settings)?;
        }
    }
    for &n in &plan.shape_sizes {
        let (runs, whole) = controller_apply_one_upstream(plan, n, &backends, &gateway_options, &settings)?;
        let (m, w) = (median(&runs), median(&whole));
        eprintln!(
            "kgw-bench: controller apply one upstream at {n} virtual hosts: {m:.3} ms (runs {runs:?}); \
             whole Proxy {w:.3} ms"
        );
        report.set_in("controller_apply_one_upstream_ms", &Plan::key(n), json!(m));
        report.detail(
            &format!("controller_apply_one_upstream_{n}"),
            json!({"runs_ms": runs, "whole_proxy_runs_ms": whole}),
        );
    }
    Ok(())
}

/// `translate_one_route_ms` and its two terms at `n` routes in `shape` (keys with `suffix`).
#[allow(clippy::too_many_arguments)]
fn one_route(
    plan: &Plan,
    report: &mut Report,
    shape: Shape,
    suffix: &str,
    n: usize,
    backends: &Backends,
    gateway_options: &gateway::translate::Options,
    settings: &Settings,
) -> Result<()> {
    let runs = controller_apply_one_route(plan, n, shape, backends, gateway_options, settings)?;
    let m = median(&runs);
    let mut index = routeset::shaped_index(n, shape, backends)?;
    let gateway = gateway_one_route(plan, &mut index, &route_zero_versions(n, shape), gateway_options)?;
    drop(index);
    let g = median(&gateway.incremental);
    eprintln!(
        "kgw-bench: one route at {n} ({}): {:.3} ms = gateway {g:.3} ms (incremental translation and encoding; \
         its full translation {:.2} ms + {:.2} ms encoding) + controller {m:.3} ms (KV value to snapshot)",
        shape.key(),
        g + m,
        median(&gateway.full_translate),
        median(&gateway.full_encode),
    );
    report.set_in(&format!("translate_one_route{suffix}_ms"), &Plan::key(n), json!(g + m));
    report.set_in(
        &format!("gateway_translate_one_route{suffix}_ms"),
        &Plan::key(n),
        json!(g),
    );
    report.set_in(
        &format!("controller_apply_one_route{suffix}_ms"),
        &Plan::key(n),
        json!(m),
    );
    report.detail(
        &format!("one_route{suffix}_{n}"),
        json!({"controller_apply_runs_ms": runs,
               "gateway_runs_ms": gateway.incremental,
               "gateway_translate_runs_ms": gateway.incremental_translate,
               "gateway_full_translate_runs_ms": gateway.full_translate,
               "gateway_full_encode_runs_ms": gateway.full_encode,
               "index_clone_runs_ms": gateway.index_clone,
               "proxy_values_clone_runs_ms": gateway.values_clone}),
    );
    Ok(())
}

/// `controller_apply_one_route_ms`: the controller's whole path for one changed virtual
/// host part of `kgw_proxies`, in process: the KV event applied to its Proxy store, the
/// changed virtual host translated again, the snapshot made (its VHDS index with it) and
/// published. `n` routes, one hostname (one virtual host) each.
fn controller_apply_one_route(
    plan: &Plan,
    n: usize,
    shape: Shape,
    backends: &Backends,
    options: &gateway::translate::Options,
    settings: &Settings,
) -> Result<Vec<f64>> {
    use bytes::Bytes;
    use kgw_common::bus::KvEvent;
    let mut index = routeset::shaped_index(n, shape, backends)?;
    let upstreams = kgw_common::upstreams::upstreams(&index);
    // The KV values of each version of route 0, as the gateway writes them (a host of 32
    // routes or more in pages).
    let values = |index: &Index| -> BTreeMap<String, Bytes> {
        let mut out = BTreeMap::new();
        for (key, proxy) in &gateway::translate::translate(index, options).proxies {
            out.extend(kgw_common::proxy_parts::values(key, proxy));
        }
        out
    };
    let first = values(&index);
    let mut previous = first.clone();
    let mut changes: Vec<Vec<KvEvent>> = Vec::new();
    for variant in [1, 0] {
        let yaml = route_zero(n, variant, shape);
        routeset::apply_yaml(&mut index, &yaml)?;
        let now = values(&index);
        // In the writer's order: pages before their part.
        let events = kgw_common::bus::writes_between(&previous, &now);
        previous = now;
        // One host's part, and in one_host a route page and an index page, each replacing
        // one.
        ensure!(
            (1..=6).contains(&events.len()),
            "one changed host per route change, not {} values",
            events.len()
        );
        changes.push(events);
    }
    use controller::proxies::{ProxyChange, ProxyStore};
    let mut store = ProxyStore::default();
    let mut translator = IncrementalTranslator::default();
    let cache = controller::xds::SnapshotCache::default();
    // As the actor does (`controller::actor`): the changed virtual hosts translated, the
    // whole Proxy when the translator declines.
    let mut step = |events: Vec<KvEvent>| {
        for (key, change) in store.apply(events) {
            let role = kgw_proto::nats::key_to_role(&key);
            let Some(head) = store.head(&key).filter(|_| change != ProxyChange::Removed) else {
                translator.forget(&key);
                cache.set(&role, None);
                continue;
            };
            let by_parts = match &change {
                ProxyChange::VirtualHosts(hosts) => {
                    let lookup = |listener: &str, name: &str| store.virtual_host(&key, listener, name);
                    translator.translate_changed(&key, &head, hosts, &lookup, &upstreams, settings)
                }
                _ => None,
            };
            let translated = by_parts.unwrap_or_else(|| {
                let proxy = store.assemble(&key).unwrap_or_default();
                translator.translate_whole(&key, Some(&head), &proxy, &upstreams, settings)
            });
            let snapshot = std::sync::Arc::new(translated.snapshot);
            black_box(snapshot.vhds());
            cache.set(&role, Some(snapshot));
        }
    };
    step(vec![KvEvent::Full(first)]);
    let _subscriber = controller::xds::SnapshotSource::subscribe(&cache, &kgw_proto::nats::key_to_role("default.gw"));
    let mut runs = Vec::new();
    for run in 0..plan.one_route_runs.max(5) {
        let events = changes[run % 2].clone();
        let started = Instant::now();
        step(events);
        runs.push(ms(started.elapsed()));
    }
    Ok(runs)
}

/// `controller_apply_one_upstream_ms`: the controller's whole path for one changed value of
/// `kgw_upstreams` (the Upstream of route 0's Service, its endpoints changed), in process:
/// the value decoded into the Upstreams, the virtual hosts and clusters it concerns
/// translated again by parts (as `controller::actor` does), the snapshot published. Beside
/// it, the whole-Proxy path the controller took before (every part made from that Upstream
/// dropped, the Proxy translated whole from its cache).
fn controller_apply_one_upstream(
    plan: &Plan,
    n: usize,
    backends: &Backends,
    options: &gateway::translate::Options,
    settings: &Settings,
) -> Result<(Vec<f64>, Vec<f64>)> {
    use bytes::Bytes;
    use controller::proxies::ProxyStore;
    use kgw_common::bus::KvEvent;
    use prost::Message as _;
    let index = routeset::index(n, backends)?;
    let mut upstreams = kgw_common::upstreams::upstreams(&index);
    let service = routeset::service_of(0, routeset::services_for(n));
    let (key, upstream) = upstreams
        .iter()
        .find(
            |(_, u)| matches!(&u.upstream_type, Some(pb::upstream::UpstreamType::Kube(k)) if k.service_name == service),
        )
        .map(|(k, u)| (k.clone(), u.clone()))
        .ok_or_else(|| anyhow::anyhow!("no Upstream for {service}"))?;
    // Two versions of its endpoints: one more (a pod started), as it was.
    let mut grown = upstream.clone();
    if let Some(pb::upstream::UpstreamType::Kube(kube)) = &mut grown.upstream_type {
        kube.endpoints.push(pb::Endpoint {
            address: "127.0.0.99".into(),
            port: u32::from(backends.port),
            ready: true,
            ..Default::default()
        });
    }
    let versions = [
        Bytes::from(grown.encode_to_vec()),
        Bytes::from(upstream.encode_to_vec()),
    ];
    let mut values = BTreeMap::new();
    for (key, proxy) in &gateway::translate::translate(&index, options).proxies {
        let (head, parts) = kgw_common::proxy_parts::split(key, proxy);
        values.insert(key.clone(), Bytes::from(head.encode_to_vec()));
        values.extend(parts.into_iter().map(|(k, p)| (k, Bytes::from(p.encode_to_vec()))));
    }
    let mut store = ProxyStore::default();
    let mut translator = IncrementalTranslator::default();
    let cache = controller::xds::SnapshotCache::default();
    for key in store.apply(vec![KvEvent::Full(values)]).into_keys() {
        let (Some(head), Some(proxy)) = (store.head(&key), store.assemble(&key)) else {
            continue;
        };
        let translated = translator.translate_whole(&key, Some(&head), &proxy, &upstreams, settings);
        cache.set(
            &kgw_proto::nats::key_to_role(&key),
            Some(std::sync::Arc::new(translated.snapshot)),
        );
    }
    let _subscriber = controller::xds::SnapshotSource::subscribe(&cache, &kgw_proto::nats::key_to_role("default.gw"));
    let apply = |upstreams: &mut BTreeMap<String, pb::Upstream>, bytes: &Bytes| -> Result<()> {
        upstreams.insert(key.clone(), pb::Upstream::decode(bytes.as_ref())?);
        Ok(())
    };
    let changed = std::collections::BTreeSet::from([key.clone()]);
    let (mut runs, mut whole_runs) = (Vec::new(), Vec::new());
    for run in 0..plan.one_route_runs.max(5) {
        let started = Instant::now();
        apply(&mut upstreams, &versions[run % 2])?;
        // As the actor does (`controller::actor`, `on_upstreams`).
        let head = |key: &str| store.head(key);
        let lookup = |key: &str, listener: &str, name: &str| store.virtual_host(key, listener, name);
        let changes = translator.translate_upstream_changes(&changed, &head, &lookup, &upstreams, settings);
        for (key, translated) in changes.translated {
            cache.set(
                &kgw_proto::nats::key_to_role(&key),
                Some(std::sync::Arc::new(translated.snapshot)),
            );
        }
        for key in changes.whole {
            let (Some(head), Some(proxy)) = (store.head(&key), store.assemble(&key)) else {
                continue;
            };
            let translated = translator.translate_whole(&key, Some(&head), &proxy, &upstreams, settings);
            cache.set(
                &kgw_proto::nats::key_to_role(&key),
                Some(std::sync::Arc::new(translated.snapshot)),
            );
        }
        runs.push(ms(started.elapsed()));
    }
    // Before: the Proxies naming it translated whole.
    for run in 0..plan.one_route_runs.max(5) {
        let started = Instant::now();
        apply(&mut upstreams, &versions[run % 2])?;
        translator.upstreams_changed(&changed);
        for key in translator.proxies_naming(&changed) {
            let (Some(head), Some(proxy)) = (store.head(&key), store.assemble(&key)) else {
                continue;
            };
            let translated = translator.translate_whole(&key, Some(&head), &proxy, &upstreams, settings);
            let snapshot = std::sync::Arc::new(translated.snapshot);
            black_box(snapshot.vhds());
            cache.set(&kgw_proto::nats::key_to_role(&key), Some(snapshot));
        }
        whole_runs.push(ms(started.elapsed()));
    }
    Ok((runs, whole_runs))
}

/// Route 0 of a set of `n` in `variant`.
fn route_zero(n: usize, variant: usize, shape: Shape) -> String {
    routeset::shaped_route_yaml(
        shape,
        &routeset::route_name(0),
        &routeset::service_of(0, routeset::services_for(n)),
        variant,
    )
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

/// The gateway's own figures for one changed route, per run.
struct GatewayRuns {
    /// Incremental translation + encoding of the changed KV values.
    incremental: Vec<f64>,
    /// The incremental translation alone.
    incremental_translate: Vec<f64>,
    /// For comparison: the full translation, and encoding every value, of the same index.
    full_translate: Vec<f64>,
    full_encode: Vec<f64>,
    /// Cloning the whole index (what the actor did per batch for the webhook).
    index_clone: Vec<f64>,
    /// Cloning the map of encoded values (what the actor hands the KV writer per change).
    values_clone: Vec<f64>,
}

/// The gateway's time for one changed route through its incremental translator (every
/// resource translated once before): one run per version change. Checks the result
/// against the full translation.
fn gateway_one_route(
    plan: &Plan,
    index: &mut Index,
    versions: &[String],
    options: &gateway::translate::Options,
) -> Result<GatewayRuns> {
    use gateway::translate::{EncodedProxies, Incremental, encode_proxies, translate};
    let mut incremental = Incremental::new(options.clone());
    let mut encoded = EncodedProxies::default();
    incremental.apply(index, []);
    encoded.update(incremental.output(), incremental.changed());
    let mut runs = GatewayRuns {
        incremental: Vec::new(),
        incremental_translate: Vec::new(),
        full_translate: Vec::new(),
        full_encode: Vec::new(),
        index_clone: Vec::new(),
        values_clone: Vec::new(),
    };
    // Version 1 in the index, so that each run (from version 0 on) changes the route.
    for version in versions.iter().rev() {
        let keys = apply_yaml_keys(index, version)?;
        incremental.apply(index, &keys);
        encoded.update(incremental.output(), incremental.changed());
    }
    for run in 0..plan.one_route_runs {
        let keys = apply_yaml_keys(index, &versions[run % 2])?;
        let started = Instant::now();
        incremental.apply(index, &keys);
        let translated = started.elapsed();
        black_box(encoded.update(incremental.output(), incremental.changed()));
        runs.incremental.push(ms(started.elapsed()));
        runs.incremental_translate.push(ms(translated));
        let started = Instant::now();
        let output = translate(index, options);
        runs.full_translate.push(ms(started.elapsed()));
        runs.full_encode.push(time(|| encode_proxies(&output)));
        runs.index_clone.push(time(|| index.clone()));
        runs.values_clone.push(time(|| encoded.values().clone()));
        ensure!(
            *incremental.output() == output && *encoded.values() == encode_proxies(&output),
            "the incremental translation differs from the full one"
        );
    }
    Ok(runs)
}

/// `apply_yaml`, returning the keys of the resources it changed.
fn apply_yaml_keys(index: &mut Index, text: &str) -> Result<Vec<ResourceKey>> {
    use serde::Deserialize as _;
    let mut keys = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        if let Some((key, resource)) = decode(serde_yaml::Value::deserialize(doc)?)? {
            index.apply(&Change::Upsert(key.clone(), resource));
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Two versions of route 0 of the set of `n` routes: runs alternate between them, so that
/// each one translates a real change.
fn route_zero_versions(n: usize, shape: Shape) -> Vec<String> {
    (1..=2)
        .map(|v| {
            routeset::shaped_route_yaml(
                shape,
                &routeset::route_name(0),
                &routeset::service_of(0, routeset::services_for(n)),
                v,
            )
        })
        .collect()
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

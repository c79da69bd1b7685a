//! The incremental translation against the full one: random sequences of changes (a seeded
//! generator, so a failure replays) to Gateways, GatewayClasses, HTTPRoutes, Services,
//! RouteOptions, ReferenceGrants, BackendTLSPolicies and their CA ConfigMaps; after every step the incremental output (Proxies,
//! status, encoded values) must equal the full translation of the same index.
use kgw_common::resources::{Change, Index, ResourceKey, decode};
use serde_json::{Value, json};

use super::Incremental;
use crate::translate::{EncodedProxies, Options, encode_proxies, translate};

/// SplitMix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const NAMESPACES: [&str; 2] = ["default", "apps"];
const GATEWAYS: [(&str, &str); 3] = [("default", "gw"), ("default", "gw2"), ("apps", "gw3")];
const CLASSES: [&str; 2] = ["kgw", "other"];
const HOSTS: [&str; 6] = [
    "a.example",
    "b.example",
    "x.a.example",
    "*.example",
    "*.a.example",
    "c.other",
];
const ROUTES: usize = 10;
const SERVICES: usize = 4;
const OPTIONS: usize = 3;

/// A resource from its JSON form, as the config source decodes it.
fn mk(value: Value) -> Change {
    let doc = serde_yaml::to_value(&value).expect("yaml value");
    let (key, resource) = decode(doc).expect("valid resource").expect("known kind");
    Change::Upsert(key, resource)
}

fn mk_class(rng: &mut Rng, name: &str) -> Change {
    let controller = if rng.chance(80) {
        "kgateway.dev/kgateway"
    } else {
        "example.com/other"
    };
    mk(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": name}, "spec": {"controllerName": controller},
    }))
}

fn mk_gateway(rng: &mut Rng, namespace: &str, name: &str) -> Change {
    let listeners: Vec<Value> = (0..1 + rng.below(3))
        .map(|i| {
            let mut listener = json!({
                "name": format!("l{}", if rng.chance(10) { 0 } else { i }),
                "port": rng.pick(&[80, 8080, 81]),
                "protocol": if rng.chance(90) { "HTTP" } else { "TCP" },
            });
            if rng.chance(50) {
                listener["hostname"] = json!(rng.pick(&["a.example", "*.example", "b.example", "*.a.example"]));
            }
            if rng.chance(50) {
                listener["allowedRoutes"] = json!({"namespaces": {"from": rng.pick(&["All", "Same"])}});
            }
            listener
        })
        .collect();
    mk(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": if rng.chance(85) { "kgw" } else { "other" }, "listeners": listeners},
    }))
}

fn mk_route(rng: &mut Rng, namespace: &str, name: &str) -> Change {
    let parents: Vec<Value> = (0..1 + rng.below(2))
        .map(|_| {
            let (gw_ns, gw) = rng.pick(&GATEWAYS);
            let mut parent = json!({"name": gw});
            if gw_ns != namespace || rng.chance(20) {
                parent["namespace"] = json!(gw_ns);
            }
            if rng.chance(25) {
                parent["sectionName"] = json!(rng.pick(&["l0", "l1"]));
            }
            if rng.chance(10) {
                parent["port"] = json!(rng.pick(&[80, 8080]));
            }
            parent
        })
        .collect();
    let hostnames: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(&HOSTS)).collect();
    let rules: Vec<Value> = (0..1 + rng.below(3)).map(|_| mk_rule(rng, namespace)).collect();
    let mut route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace,
                     "creationTimestamp": format!("2024-01-0{}T00:00:00Z", 1 + rng.below(3))},
        "spec": {"parentRefs": parents, "rules": rules},
    });
    if !hostnames.is_empty() {
        route["spec"]["hostnames"] = json!(hostnames);
    }
    mk(route)
}

fn mk_rule(rng: &mut Rng, namespace: &str) -> Value {
    let matches: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut m = json!({"path": {
                "type": rng.pick(&["PathPrefix", "Exact", "RegularExpression"]),
                "value": rng.pick(&["/", "/a", "/a/b", "/b"]),
            }});
            if rng.chance(30) {
                m["method"] = json!(rng.pick(&["GET", "POST"]));
            }
            if rng.chance(30) {
                m["headers"] = json!([{"name": "X-Env", "value": "dev"}]);
            }
            m
        })
        .collect();
    let backends: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut backend = json!({"name": format!("s{}", rng.below(SERVICES)), "port": 80});
            if rng.chance(15) {
                backend["namespace"] = json!(rng.pick(&NAMESPACES));
            }
            if rng.chance(10) {
                backend.as_object_mut().map(|b| b.remove("port"));
            }
            if rng.chance(5) {
                backend["kind"] = json!("Upstream");
                backend["group"] = json!("gloo.solo.io");
            }
            if rng.chance(30) {
                backend["weight"] = json!(rng.below(3));
            }
            backend
        })
        .collect();
    let mut filters = Vec::new();
    if rng.chance(30) {
        filters.push(json!({"type": "ExtensionRef", "extensionRef": {
            "group": "gateway.solo.io", "kind": "RouteOption", "name": format!("ro{}", rng.below(OPTIONS)),
        }}));
    }
    if rng.chance(10) {
        filters.push(json!({"type": "RequestRedirect", "requestRedirect": {"hostname": "elsewhere.example"}}));
    }
    if rng.chance(15) {
        filters.push(json!({"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "x-route", "value": namespace}],
        }}));
    }
    json!({"matches": matches, "backendRefs": backends, "filters": filters})
}

fn mk_service(namespace: &str, name: &str) -> Change {
    mk(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))
}

/// A BackendTLSPolicy on a Service (or its port `http`) with a CA from ConfigMap `ca0`/`ca1`.
fn mk_backend_tls_policy(rng: &mut Rng, namespace: &str, name: &str) -> Change {
    let mut target = json!({"group": "", "kind": "Service", "name": format!("s{}", rng.below(SERVICES))});
    if rng.chance(40) {
        target["sectionName"] = json!("http");
    }
    mk(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRefs": [target], "validation": {
            "hostname": rng.pick(&["a.example", "b.example"]),
            "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": format!("ca{}", rng.below(2))}],
        }},
    }))
}

/// A CA ConfigMap: a certificate, or (sometimes) none.
fn mk_config_map(rng: &mut Rng, namespace: &str, name: &str) -> Change {
    let ca = if rng.chance(70) { TEST_CA } else { "" };
    mk(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"ca.crt": ca},
    }))
}

/// Any well-formed PEM certificate block will do: the gateway checks the PEM framing.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVGb3JUZXN0czAKBggqhkjOPQQDAjAP\n-----END CERTIFICATE-----\n";

fn mk_route_option(rng: &mut Rng, namespace: &str, name: &str) -> Change {
    let targets: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut target = json!({
                "group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                "name": format!("r{}", rng.below(ROUTES)),
            });
            if rng.chance(20) {
                target["sectionName"] = json!("rule-0");
            }
            target
        })
        .collect();
    let mut options = json!({"prefixRewrite": rng.pick(&["/v1", "/v2"])});
    if rng.chance(40) {
        options["timeout"] = json!(rng.pick(&["5s", "250ms", "soon"]));
    }
    mk(json!({
        "apiVersion": "gateway.solo.io/v1", "kind": "RouteOption",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRefs": targets, "options": options},
    }))
}

fn mk_reference_grant(namespace: &str) -> Change {
    mk(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "grant", "namespace": namespace},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }))
}

/// One random change: an upsert, or (a third of the time) the deletion of the same key.
fn random_change(rng: &mut Rng) -> Change {
    let namespace = rng.pick(&NAMESPACES);
    let change = match rng.below(100) {
        0..=44 => {
            let name = format!("r{}", rng.below(ROUTES));
            mk_route(rng, namespace, &name)
        }
        45..=59 => {
            let (namespace, name) = rng.pick(&GATEWAYS);
            mk_gateway(rng, namespace, name)
        }
        60..=64 => {
            let name = rng.pick(&CLASSES);
            mk_class(rng, name)
        }
        65..=79 => mk_service(namespace, &format!("s{}", rng.below(SERVICES))),
        80..=89 => {
            let name = format!("ro{}", rng.below(OPTIONS));
            mk_route_option(rng, namespace, &name)
        }
        90..=92 => {
            let name = format!("btp{}", rng.below(3));
            mk_backend_tls_policy(rng, namespace, &name)
        }
        93..=94 => {
            let name = format!("ca{}", rng.below(2));
            mk_config_map(rng, namespace, &name)
        }
        _ => mk_reference_grant(namespace),
    };
    if rng.chance(30) {
        Change::Delete(change.key().clone())
    } else {
        change
    }
}

/// The starting state: classes, gateways, a few routes, services and options.
fn initial(rng: &mut Rng) -> Vec<Change> {
    let mut changes = vec![mk_class(rng, "kgw")];
    for (namespace, name) in GATEWAYS {
        changes.push(mk_gateway(rng, namespace, name));
    }
    for i in 0..ROUTES / 2 {
        let namespace = rng.pick(&NAMESPACES);
        changes.push(mk_route(rng, namespace, &format!("r{i}")));
    }
    for i in 0..SERVICES / 2 {
        changes.push(mk_service("default", &format!("s{i}")));
    }
    changes.push(mk_route_option(rng, "default", "ro0"));
    changes.push(mk_config_map(rng, "default", "ca0"));
    changes.push(mk_backend_tls_policy(rng, "default", "btp0"));
    changes
}

fn check(step: &str, index: &Index, incremental: &Incremental, encoded: &EncodedProxies) {
    let full = translate(index, &Options::default());
    assert_eq!(
        incremental.output().proxies,
        full.proxies,
        "proxies differ after {step}"
    );
    assert_eq!(incremental.output().status, full.status, "status differs after {step}");
    assert_eq!(
        *encoded.values(),
        encode_proxies(&full),
        "encoded values differ after {step}"
    );
}

#[test]
fn incremental_equals_full_after_every_step() {
    for seed in 0..40 {
        let mut rng = Rng(seed);
        let mut index = Index::default();
        let mut incremental = Incremental::new(Options::default());
        let mut encoded = EncodedProxies::default();
        let changes = initial(&mut rng);
        changes.iter().for_each(|c| index.apply(c));
        incremental.apply(&index, changes.iter().map(Change::key));
        encoded.update(incremental.output(), incremental.changed());
        check(&format!("seed {seed}: initial"), &index, &incremental, &encoded);
        for step in 0..150 {
            let batch: Vec<Change> = (0..1 + rng.below(3)).map(|_| random_change(&mut rng)).collect();
            batch.iter().for_each(|c| index.apply(c));
            let keys: Vec<&ResourceKey> = batch.iter().map(Change::key).collect();
            let status_before = incremental.output().status.clone();
            let encoded_before = encoded.values().clone();
            incremental.apply(&index, keys.iter().copied());
            let proxies_changed = encoded.update(incremental.output(), incremental.changed());
            let what = format!("seed {seed} step {step}: {keys:?}");
            check(&what, &index, &incremental, &encoded);
            // The updates it lists bring the values before to the values after.
            let mut replayed = encoded_before.clone();
            for (key, value) in encoded.updates() {
                match value {
                    Some(value) => replayed.insert(key.clone(), value.clone()),
                    None => replayed.remove(key),
                };
            }
            assert_eq!(replayed, *encoded.values(), "{what}");
            // What it says changed is what changed.
            assert_eq!(proxies_changed, encoded_before != *encoded.values(), "{what}");
            let status = &incremental.output().status;
            let public_changed = status.gateway_classes != status_before.gateway_classes
                || status.gateways != status_before.gateways
                || status.http_routes != status_before.http_routes
                || status.route_options != status_before.route_options
                || status.backend_tls_policies != status_before.backend_tls_policies;
            assert_eq!(incremental.changed().status, public_changed, "{what}");
            let routes_changed = status
                .http_routes
                .keys()
                .chain(status_before.http_routes.keys())
                .filter(|key| status.http_routes.get(*key) != status_before.http_routes.get(*key));
            for key in routes_changed {
                assert!(incremental.changed().route_status.contains(key), "{what}: {key}");
            }
        }
    }
}

/// Nothing changed: nothing translated again, nothing reported changed.
#[test]
fn an_empty_batch_changes_nothing() {
    let mut rng = Rng(7);
    let mut index = Index::default();
    let changes = initial(&mut rng);
    changes.iter().for_each(|c| index.apply(c));
    let mut incremental = Incremental::new(Options::default());
    incremental.apply(&index, changes.iter().map(Change::key));
    incremental.apply(&index, []);
    let changed = incremental.changed();
    assert_eq!(changed.retranslated_routes, 0);
    assert!(changed.proxies.is_empty() && changed.virtual_hosts.is_empty() && !changed.status);
}

/// Many routes on one hostname and many with one of their own, then edits, additions and
/// removals: the patched Proxy equals the full translation, a changed route re-translates
/// only itself, and every virtual host holds room for its routes alone (the translator
/// keeps one copy of each route, in the Proxy, for as long as the route lives).
#[test]
fn large_and_spread_hosts_patch_in_place_without_spare_room() {
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "kgw", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    });
    let class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "kgw"}, "spec": {"controllerName": "kgateway.dev/kgateway"},
    });
    let route = |i: usize, host: &str, rules: usize| {
        let rules: Vec<Value> = (0..rules)
            .map(|r| {
                json!({"matches": [{"path": {"type": "PathPrefix", "value": format!("/r{i}/{r}")}}],
                "backendRefs": [{"name": "s0", "port": 80}]})
            })
            .collect();
        mk(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("r{i}"), "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host], "rules": rules},
        }))
    };
    let host = |i: usize| {
        if i.is_multiple_of(2) {
            "one.example".to_string()
        } else {
            format!("r{i}.example")
        }
    };
    let mut changes = vec![mk(class), mk(gateway), mk_service("default", "s0")];
    changes.extend((0..60).map(|i| route(i, &host(i), 1)));
    let mut index = Index::default();
    changes.iter().for_each(|c| index.apply(c));
    let mut incremental = Incremental::new(Options::default());
    let mut encoded = EncodedProxies::default();
    incremental.apply(&index, changes.iter().map(Change::key));
    encoded.update(incremental.output(), incremental.changed());
    check("initial", &index, &incremental, &encoded);
    let edits: Vec<Vec<Change>> = vec![
        vec![route(4, "one.example", 2), route(7, "r7.example", 3)],
        vec![route(60, "one.example", 1), route(61, "r61.example", 1)],
        vec![route(3, "one.example", 1)],
        vec![Change::Delete(route(10, "", 0).key().clone())],
    ];
    for (step, batch) in edits.iter().enumerate() {
        batch.iter().for_each(|c| index.apply(c));
        incremental.apply(&index, batch.iter().map(Change::key));
        encoded.update(incremental.output(), incremental.changed());
        assert_eq!(incremental.changed().retranslated_routes, batch.len(), "step {step}");
        assert!(
            incremental.changed().proxies.is_empty(),
            "step {step}: patched, not rebuilt"
        );
        check(&format!("edit {step}"), &index, &incremental, &encoded);
    }
    // one.example has 32 routes now: in pages, and the last edit (one route removed) wrote
    // its part, an index page and a route page at most, and deleted as many pages.
    assert!(
        encoded.values().keys().any(|k| k.contains("._p.")),
        "one.example in pages"
    );
    let updates = encoded.updates();
    let written = updates.iter().filter(|(_, v)| v.is_some()).count();
    assert!(
        written <= 3 && updates.len() <= 6,
        "{:?}",
        updates.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let proxy = incremental.output().proxies.values().next().expect("a proxy");
    for listener in &proxy.listeners {
        let Some(kgw_proto::v1::listener::ListenerType::HttpListener(http)) = &listener.listener_type else {
            continue;
        };
        for vhost in http.virtual_hosts.iter().filter(|v| v.routes.len() == 1) {
            assert_eq!(vhost.routes.capacity(), 1, "{}", vhost.name);
        }
    }
}

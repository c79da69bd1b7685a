//! The suite's status checks, evaluated against the status our gateway publishes for the
//! directory source (NATS KV `kgw_status`, one document per resource, shaped as the API
//! server would show it: `metadata.generation` and the Gateway API `status`).
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::world::CONTROLLER_NAME;

/// The status documents, by `<kind>.<namespace>.<name>` (`gatewayclass.<name>`).
#[derive(Clone, Debug, Default)]
pub struct StatusView {
    docs: BTreeMap<String, Value>,
}

impl StatusView {
    pub fn new(entries: &BTreeMap<String, bytes::Bytes>) -> Self {
        let docs = entries
            .iter()
            .filter_map(|(key, value)| {
                let yaml: serde_yaml::Value = serde_yaml::from_slice(value).ok()?;
                Some((key.clone(), serde_json::to_value(yaml).ok()?))
            })
            .collect();
        Self { docs }
    }

    /// The document of `kind` `nn`. cases.json abbreviates a 253-character name as
    /// `<prefix>…(253 chars)`: that matches the one name with the prefix and length.
    fn get(&self, kind: &str, nn: &str) -> Option<&Value> {
        if let Some((prefix, rest)) = nn.split_once('…') {
            let length: usize = rest.trim_start_matches('(').split(' ').next()?.parse().ok()?;
            let key_prefix = format!("{kind}.{}", prefix.replacen('/', ".", 1));
            let name_start = key_prefix.len() - prefix.rsplit('/').next()?.len();
            return self
                .docs
                .range(key_prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&key_prefix))
                .find(|(k, _)| k.len() - name_start == length)
                .map(|(_, v)| v);
        }
        self.docs.get(&format!("{kind}.{}", nn.replacen('/', ".", 1)))
    }

    /// `metadata.generation` in the status document of `kind` (`gateway`, `httproute`,
    /// `gatewayclass`) `nn`.
    pub fn generation(&self, kind: &str, nn: &str) -> Option<i64> {
        self.get(kind, nn).and_then(|d| d["metadata"]["generation"].as_i64())
    }

    /// Whether the view holds a status for route `nn`.
    pub fn has_route(&self, nn: &str) -> bool {
        self.get("httproute", nn).is_some()
    }
}

/// Checks one of the suite's status checks (cases.json `conventions.status_checks`).
/// `Err`: what differs.
pub fn check(view: &StatusView, check: &Value) -> Result<(), String> {
    let text = |field: &str| check.get(field).and_then(Value::as_str).unwrap_or("");
    match text("check") {
        "gateway_and_routes_accepted" => {
            let gateway = text("gateway");
            gateway_generations_current(view, gateway)?;
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            let typed_address = gw["status"]["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["type"].as_str().is_some_and(|t| !t.is_empty())));
            if !typed_address {
                return Err(format!("Gateway {gateway}: status.addresses has no typed address"));
            }
            for listener in gw["status"]["listeners"].as_array().into_iter().flatten() {
                for ty in ["ResolvedRefs", "Accepted", "Programmed"] {
                    condition_in(&listener["conditions"], ty, "True", None, None)
                        .map_err(|e| format!("Gateway {gateway} listener {}: {e}", listener["name"]))?;
                }
            }
            for route in check["routes"].as_array().into_iter().flatten() {
                let route = route.as_str().unwrap_or("");
                let parent = route_parent(view, route, gateway, "Gateway")?;
                condition_in(
                    &parent["conditions"],
                    "Accepted",
                    "True",
                    Some("Accepted"),
                    generation_of(view, "httproute", route),
                )
                .map_err(|e| format!("HTTPRoute {route} parent {gateway}: {e}"))?;
            }
            Ok(())
        }
        "route_condition" => {
            let (route, parent) = (text("route"), text("parent"));
            let kind = check["parent_kind"].as_str().unwrap_or("Gateway");
            let entry = route_parent(view, route, parent, kind)?;
            let c = &check["condition"];
            expect_condition(&entry["conditions"], c, generation_of(view, "httproute", route))
                .map_err(|e| format!("HTTPRoute {route} parent {parent}: {e}"))
        }
        "route_parents" => {
            let route = text("route");
            for expected in check["parents"].as_array().into_iter().flatten() {
                let parent_ref = &expected["parentRef"];
                let parent = format!(
                    "{}/{}",
                    parent_ref["namespace"].as_str().unwrap_or(""),
                    parent_ref["name"].as_str().unwrap_or("")
                );
                let entry = route_parent(view, route, &parent, parent_ref["kind"].as_str().unwrap_or("Gateway"))?;
                for c in expected["conditions"].as_array().into_iter().flatten() {
                    expect_condition(&entry["conditions"], c, generation_of(view, "httproute", route))
                        .map_err(|e| format!("HTTPRoute {route} parent {parent}: {e}"))?;
                }
            }
            Ok(())
        }
        "gateway_listeners_exact" => {
            let gateway = text("gateway");
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            listeners_exact(&format!("Gateway {gateway}"), gw, check)
        }
        "gateway_listener_conditions" => {
            let gateway = text("gateway");
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            listener_conditions(
                &format!("Gateway {gateway}"),
                gw,
                text("listener"),
                &check["conditions"],
            )
        }
        "gateway_condition" => {
            let gateway = text("gateway");
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            let c = &check["condition"];
            expect_condition(&gw["status"]["conditions"], c, gw["metadata"]["generation"].as_i64())
                .map_err(|e| format!("Gateway {gateway}: {e}"))
        }
        "gateway_address" => {
            let gateway = text("gateway");
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            let has = gw["status"]["addresses"].as_array().is_some_and(|a| !a.is_empty());
            has.then_some(())
                .ok_or(format!("Gateway {gateway}: no status.addresses"))
        }
        "route_no_accepted_parents" => {
            let route = text("route");
            let Some(doc) = view.get("httproute", route) else {
                return Ok(());
            };
            let parents = doc["status"]["parents"].as_array().cloned().unwrap_or_default();
            let ours: Vec<&Value> = parents
                .iter()
                .filter(|p| p["controllerName"] == CONTROLLER_NAME)
                .collect();
            match ours.as_slice() {
                [] => Ok(()),
                [one] if condition_in(&one["conditions"], "Accepted", "False", None, None).is_ok() => Ok(()),
                _ => Err(format!("HTTPRoute {route}: a parent is accepted: {}", json!(ours))),
            }
        }
        "gateway_zero_routes" => {
            let gateway = text("gateway");
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            let listeners = gw["status"]["listeners"].as_array().cloned().unwrap_or_default();
            match listeners.as_slice() {
                [] => Ok(()),
                [one] if one["attachedRoutes"] == 0 => Ok(()),
                _ => Err(format!("Gateway {gateway}: listeners {}", json!(listeners))),
            }
        }
        "namespaces_ready" => {
            for namespace in check["namespaces"].as_array().into_iter().flatten() {
                let prefix = format!("gateway.{}.", namespace.as_str().unwrap_or(""));
                for (key, doc) in view
                    .docs
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                {
                    let generation = doc["metadata"]["generation"].as_i64();
                    for ty in ["Accepted", "Programmed"] {
                        condition_in(&doc["status"]["conditions"], ty, "True", None, generation)
                            .map_err(|e| format!("{key}: {e}"))?;
                    }
                }
            }
            Ok(())
        }
        "latest_observed_generation" => {
            let kind = text("kind").to_ascii_lowercase();
            let name = text("name");
            let doc = view.get(&kind, name).ok_or(format!("{kind} {name} has no status"))?;
            let generation = doc["metadata"]["generation"].as_i64();
            let mut all = Vec::new();
            collect_conditions(&doc["status"], &mut all);
            match all.iter().find(|c| c["observedGeneration"].as_i64() != generation) {
                Some(stale) => Err(format!(
                    "{kind} {name}: condition {stale} not at generation {generation:?}"
                )),
                None => Ok(()),
            }
        }
        "gatewayclass_accepted_any" => {
            let class = text("gatewayclass");
            let doc = view
                .docs
                .get(&format!("gatewayclass.{class}"))
                .ok_or(format!("GatewayClass {class} has no status"))?;
            let found = doc["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Accepted");
            found
                .then_some(())
                .ok_or(format!("GatewayClass {class}: no Accepted condition"))
        }
        "gateway_attached_listener_sets" => {
            let gateway = text("gateway");
            let gw = view
                .get("gateway", gateway)
                .ok_or(format!("Gateway {gateway} has no status"))?;
            let got = gw["status"]["attachedListenerSets"].as_i64().unwrap_or(0);
            let want = check["count"].as_i64().unwrap_or(0);
            (got == want).then_some(()).ok_or(format!(
                "Gateway {gateway}: attachedListenerSets {got}, expected {want}"
            ))
        }
        "listenerset_condition" => {
            let set = text("listenerset");
            let doc = view
                .get("listenerset", set)
                .ok_or(format!("ListenerSet {set} has no status"))?;
            let c = &check["condition"];
            expect_condition(&doc["status"]["conditions"], c, doc["metadata"]["generation"].as_i64())
                .map_err(|e| format!("ListenerSet {set}: {e}"))
        }
        "listenerset_listener_conditions" => {
            let set = text("listenerset");
            let doc = view
                .get("listenerset", set)
                .ok_or(format!("ListenerSet {set} has no status"))?;
            listener_conditions(
                &format!("ListenerSet {set}"),
                doc,
                text("listener"),
                &check["conditions"],
            )
        }
        "listenerset_listeners_exact" => {
            let set = text("listenerset");
            let doc = view
                .get("listenerset", set)
                .ok_or(format!("ListenerSet {set} has no status"))?;
            listeners_exact(&format!("ListenerSet {set}"), doc, check)
        }
        "routes_and_parent_accepted" => {
            let parent = text("parent");
            let kind = check["parent_kind"].as_str().unwrap_or("Gateway");
            for route in check["routes"].as_array().into_iter().flatten() {
                let route = route.as_str().unwrap_or("");
                let entry = route_parent(view, route, parent, kind)?;
                condition_in(
                    &entry["conditions"],
                    "Accepted",
                    "True",
                    Some("Accepted"),
                    generation_of(view, "httproute", route),
                )
                .map_err(|e| format!("HTTPRoute {route} parent {kind} {parent}: {e}"))?;
            }
            Ok(())
        }
        "backendtlspolicy_ancestor_condition" => {
            let (policy, gateway) = (text("policy"), text("ancestor_gateway"));
            let doc = view
                .get("backendtlspolicy", policy)
                .ok_or(format!("BackendTLSPolicy {policy} has no status"))?;
            let (gw_ns, gw_name) = gateway.split_once('/').unwrap_or(("", gateway));
            let policy_ns = policy.split_once('/').map(|(ns, _)| ns).unwrap_or("");
            // Our entry whose ancestorRef names the Gateway (namespace omitted: the policy's).
            let entry = doc["status"]["ancestors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["controllerName"] == CONTROLLER_NAME)
                .find(|a| {
                    let r = &a["ancestorRef"];
                    r["name"] == gw_name && r["namespace"].as_str().unwrap_or(policy_ns) == gw_ns
                })
                .ok_or(format!(
                    "BackendTLSPolicy {policy}: no status.ancestors entry of ours for Gateway {gateway}"
                ))?;
            let c = &check["condition"];
            expect_condition(&entry["conditions"], c, doc["metadata"]["generation"].as_i64())
                .map_err(|e| format!("BackendTLSPolicy {policy} ancestor {gateway}: {e}"))
        }
        other => Err(format!("status check `{other}` is not evaluated by this runner")),
    }
}

/// Listener `name` in `status.listeners` of `doc` (a Gateway's or a ListenerSet's, `what`)
/// has each of the `wanted` conditions, at the document's generation.
fn listener_conditions(what: &str, doc: &Value, name: &str, wanted: &Value) -> Result<(), String> {
    let got = doc["status"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == name)
        .ok_or(format!("{what}: no listener {name} in status"))?;
    for c in wanted.as_array().into_iter().flatten() {
        expect_condition(&got["conditions"], c, doc["metadata"]["generation"].as_i64())
            .map_err(|e| format!("{what} listener {name}: {e}"))?;
    }
    Ok(())
}

/// `status.listeners` of `doc` is exactly the check's `listeners`: count, names,
/// attachedRoutes, supportedKinds and the listed conditions.
fn listeners_exact(what: &str, doc: &Value, check: &Value) -> Result<(), String> {
    let actual = doc["status"]["listeners"].as_array().cloned().unwrap_or_default();
    let expected = check["listeners"].as_array().cloned().unwrap_or_default();
    if actual.len() != expected.len() {
        return Err(format!(
            "{what}: {} listeners in status, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    for want in &expected {
        let name = want["name"].as_str().unwrap_or("");
        let got = actual
            .iter()
            .find(|l| l["name"] == want["name"])
            .ok_or(format!("{what}: no listener {name} in status"))?;
        if got["attachedRoutes"] != want["attachedRoutes"] {
            return Err(format!(
                "{what} listener {name}: attachedRoutes {}, expected {}",
                got["attachedRoutes"], want["attachedRoutes"]
            ));
        }
        let kinds: Vec<&str> = got["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kind"].as_str())
            .collect();
        let want_kinds: Vec<&str> = want["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let kinds_ok = if want_kinds.is_empty() {
            kinds.is_empty()
        } else {
            want_kinds.iter().all(|k| kinds.contains(k))
        };
        if !kinds_ok {
            return Err(format!(
                "{what} listener {name}: supportedKinds {kinds:?}, expected {want_kinds:?}"
            ));
        }
        for c in want["conditions"].as_array().into_iter().flatten() {
            expect_condition(&got["conditions"], c, doc["metadata"]["generation"].as_i64())
                .map_err(|e| format!("{what} listener {name}: {e}"))?;
        }
    }
    Ok(())
}

fn collect_conditions<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "conditions" {
                    out.extend(inner.as_array().into_iter().flatten());
                } else {
                    collect_conditions(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_conditions(i, out)),
        _ => {}
    }
}

fn generation_of(view: &StatusView, kind: &str, nn: &str) -> Option<i64> {
    view.get(kind, nn).and_then(|d| d["metadata"]["generation"].as_i64())
}

/// Every Gateway condition at the Gateway's generation.
fn gateway_generations_current(view: &StatusView, gateway: &str) -> Result<(), String> {
    let gw = view
        .get("gateway", gateway)
        .ok_or(format!("Gateway {gateway} has no status"))?;
    let generation = gw["metadata"]["generation"].as_i64();
    for c in gw["status"]["conditions"].as_array().into_iter().flatten() {
        if c["observedGeneration"].as_i64() != generation {
            return Err(format!(
                "Gateway {gateway}: condition {} not at generation {generation:?}",
                c["type"]
            ));
        }
    }
    Ok(())
}

/// The route's parent entry of ours for `parent` (`namespace/name`) of `kind`, with group
/// and kind spelled out and the namespace present unless the route is in the parent's.
fn route_parent<'a>(view: &'a StatusView, route: &str, parent: &str, kind: &str) -> Result<&'a Value, String> {
    let doc = view
        .get("httproute", route)
        .ok_or(format!("HTTPRoute {route} has no status"))?;
    let (parent_ns, parent_name) = parent.split_once('/').unwrap_or(("", parent));
    let route_ns = route.split_once('/').map(|(ns, _)| ns).unwrap_or("");
    let parents = doc["status"]["parents"].as_array().into_iter().flatten();
    let mut candidates = parents.filter(|p| {
        let r = &p["parentRef"];
        let namespace_ok = match r["namespace"].as_str() {
            Some(ns) => ns == parent_ns,
            None => route_ns == parent_ns,
        };
        r["name"] == parent_name && namespace_ok
    });
    let entry = candidates.next().ok_or(format!(
        "HTTPRoute {route}: no status.parents entry for {kind} {parent}"
    ))?;
    if entry["controllerName"] != CONTROLLER_NAME {
        return Err(format!("HTTPRoute {route}: controllerName {}", entry["controllerName"]));
    }
    let r = &entry["parentRef"];
    if r["group"] != "gateway.networking.k8s.io" || r["kind"] != kind {
        return Err(format!(
            "HTTPRoute {route}: parentRef group/kind {}/{}",
            r["group"], r["kind"]
        ));
    }
    Ok(entry)
}

/// `conditions` hold the condition a check describes as `{type, status, reason}` (reason
/// null: any), at `generation` when known.
fn expect_condition(conditions: &Value, wanted: &Value, generation: Option<i64>) -> Result<(), String> {
    condition_in(
        conditions,
        wanted["type"].as_str().unwrap_or(""),
        wanted["status"].as_str().unwrap_or(""),
        wanted["reason"].as_str(),
        generation,
    )
}

/// The condition `ty` in `conditions` has `status` (and `reason` when given) at
/// `generation` (when known).
fn condition_in(
    conditions: &Value,
    ty: &str,
    status: &str,
    reason: Option<&str>,
    generation: Option<i64>,
) -> Result<(), String> {
    let found = conditions
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty)
        .ok_or(format!("no {ty} condition"))?;
    let got = |f: &str| found[f].as_str().unwrap_or("").to_string();
    if got("status") != status || reason.is_some_and(|r| got("reason") != r) {
        return Err(format!(
            "{ty}={}/{} ({}), expected {status}/{}",
            got("status"),
            got("reason"),
            got("message"),
            reason.unwrap_or("any")
        ));
    }
    if let Some(generation) = generation
        && found["observedGeneration"].as_i64() != Some(generation)
    {
        return Err(format!(
            "{ty} at observedGeneration {}, expected {generation}",
            found["observedGeneration"]
        ));
    }
    Ok(())
}

//! The edits some status tests make between their checks (cases.json `mutation` checks),
//! done as the Go tests do them: on the test's own documents, by test name and order.
use anyhow::{Result, bail};
use serde_yaml::Value;

use super::world;

/// What a mutation changed: the status key prefix (`gateway`, `httproute`, `gatewayclass`,
/// `backendtlspolicy`)
/// and `namespace/name` (or the name alone, cluster-scoped) of the edited object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutated {
    pub kind: &'static str,
    pub name: String,
}

/// Applies the `nth` mutation (0-based) of `test` to `docs`.
pub fn apply(test: &str, nth: usize, docs: &mut [Value]) -> Result<Mutated> {
    match (test, nth) {
        ("HTTPRouteObservedGenerationBump", 0) => {
            let route = find(docs, "HTTPRoute", "observed-generation-bump")?;
            let backend = route
                .get_mut("spec")
                .and_then(|s| s.get_mut("rules"))
                .and_then(|r| r.get_mut(0))
                .and_then(|r| r.get_mut("backendRefs"))
                .and_then(|b| b.get_mut(0))
                .and_then(Value::as_mapping_mut);
            let Some(backend) = backend else {
                bail!("no spec.rules[0].backendRefs[0]")
            };
            backend.insert("name".into(), "infra-backend-v2".into());
            Ok(mutated("httproute", route))
        }
        ("GatewayModifyListeners", 0) => {
            let gateway = find(docs, "Gateway", "gateway-add-listener")?;
            push_listener(
                gateway,
                serde_json::json!({"name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com",
                    "allowedRoutes": {"namespaces": {"from": "All"}}}),
            )?;
            Ok(mutated("gateway", gateway))
        }
        ("GatewayModifyListeners", 1) => {
            let gateway = find(docs, "Gateway", "gateway-remove-listener")?;
            let listeners = gateway
                .get_mut("spec")
                .and_then(|s| s.get_mut("listeners"))
                .and_then(Value::as_sequence_mut);
            let Some(listeners) = listeners else {
                bail!("no spec.listeners")
            };
            listeners.retain(|l| l.get("name").and_then(Value::as_str) != Some("https"));
            Ok(mutated("gateway", gateway))
        }
        ("GatewayObservedGenerationBump", 0) => {
            let gateway = find(docs, "Gateway", "gateway-observed-generation-bump")?;
            push_listener(
                gateway,
                serde_json::json!({"name": "alternate", "hostname": "foo.com", "port": 80, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}}}),
            )?;
            Ok(mutated("gateway", gateway))
        }
        ("GatewayClassObservedGenerationBump", 0) => {
            let class = find(docs, "GatewayClass", "gatewayclass-observed-generation-bump")?;
            let Some(spec) = class.get_mut("spec").and_then(Value::as_mapping_mut) else {
                bail!("no spec")
            };
            spec.insert("description".into(), "new".into());
            Ok(Mutated {
                kind: "gatewayclass",
                name: "gatewayclass-observed-generation-bump".into(),
            })
        }
        ("GatewayStaticAddresses", n @ (0 | 1)) => {
            let gateway = find(docs, "Gateway", "gateway-static-addresses")?;
            let addresses = gateway
                .get_mut("spec")
                .and_then(|s| s.get_mut("addresses"))
                .and_then(Value::as_sequence_mut);
            let Some(addresses) = addresses else {
                bail!("no spec.addresses")
            };
            if n == 0 {
                addresses.retain(|a| a.get("type").and_then(Value::as_str) != Some("test/fake-invalid-type"));
            } else {
                addresses.retain(|a| a.get("value").and_then(Value::as_str) != Some(world::UNUSABLE_ADDRESS));
            }
            Ok(mutated("gateway", gateway))
        }
        ("BackendTLSPolicyObservedGenerationBump", 0) => {
            let policy = find(docs, "BackendTLSPolicy", "observed-generation-bump")?;
            let validation = policy
                .get_mut("spec")
                .and_then(|s| s.get_mut("validation"))
                .and_then(Value::as_mapping_mut);
            let Some(validation) = validation else {
                bail!("no spec.validation")
            };
            validation.insert("hostname".into(), "foo.example.com".into());
            Ok(mutated("backendtlspolicy", policy))
        }
        _ => bail!("mutation {nth} of {test} is not one the runner knows"),
    }
}

fn mutated(kind: &'static str, doc: &Value) -> Mutated {
    let (ns, name) = world::nn(doc);
    Mutated {
        kind,
        name: format!("{ns}/{name}"),
    }
}

fn find<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> Result<&'a mut Value> {
    docs.iter_mut()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some(kind) && world::nn(d).1 == name)
        .ok_or_else(|| anyhow::anyhow!("no {kind} {name} in the test's manifests"))
}

fn push_listener(gateway: &mut Value, listener: serde_json::Value) -> Result<()> {
    let listeners = gateway
        .get_mut("spec")
        .and_then(|s| s.get_mut("listeners"))
        .and_then(Value::as_sequence_mut);
    let Some(listeners) = listeners else {
        bail!("no spec.listeners")
    };
    let listener: Value = serde_yaml::to_value(listener)?;
    listeners.push(listener);
    Ok(())
}

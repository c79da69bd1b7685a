//! Status checks that cases.json leaves as "see Go file", transcribed from the suite's Go
//! tests (conformance/tests/listenerset-{hostname,protocol}-conflict.go) into the checks
//! the runner evaluates.
use serde_json::{Value, json};

const NS: &str = "gateway-conformance-infra";

fn accepted_listener() -> Value {
    json!([
        {"type": "Accepted", "status": "True", "reason": null},
        {"type": "ResolvedRefs", "status": "True", "reason": null},
        {"type": "Programmed", "status": "True", "reason": null},
    ])
}

fn set_condition(set: &str, ty: &str, status: &str, reason: Option<&str>) -> Value {
    json!({"check": "listenerset_condition", "listenerset": format!("{NS}/{set}"),
           "condition": {"type": ty, "status": status, "reason": reason}})
}

fn set_listener(set: &str, listener: &str, conditions: Value) -> Value {
    json!({"check": "listenerset_listener_conditions", "listenerset": format!("{NS}/{set}"),
           "listener": listener, "conditions": conditions})
}

/// The checks of a ListenerSet conflict test: `kind` is `hostname` or `protocol`.
fn conflict_checks(kind: &str) -> Vec<Value> {
    let (reason, accepted_reason) = match kind {
        "hostname" => ("HostnameConflict", None),
        _ => ("ProtocolConflict", Some("Conflicted")),
    };
    let conflicted = json!([
        {"type": "Accepted", "status": "False", "reason": accepted_reason},
        {"type": "Programmed", "status": "False", "reason": null},
        {"type": "Conflicted", "status": "True", "reason": reason},
    ]);
    let gateway = format!("{NS}/gateway-with-listenerset-{kind}-conflict");
    let set = |suffix: &str| format!("listenerset-with-{kind}-conflict-with-{suffix}");
    let with_gateway = format!("{kind}-conflict-with-gateway-listener");
    let with_set = format!("{kind}-conflict-with-listener-set-listener");
    let not_valid = |name: &str| {
        vec![
            set_condition(name, "Accepted", "False", Some("ListenersNotValid")),
            set_condition(
                name,
                "Programmed",
                "False",
                (kind == "hostname").then_some("ListenersNotValid"),
            ),
        ]
    };
    let mut checks = vec![
        json!({"check": "namespaces_ready", "namespaces": [NS]}),
        json!({"check": "gateway_condition", "gateway": gateway,
               "condition": {"type": "Accepted", "status": "True", "reason": null}}),
        json!({"check": "gateway_listener_conditions", "gateway": gateway, "listener": "gateway-listener",
               "conditions": accepted_listener()}),
        json!({"check": "gateway_listener_conditions", "gateway": gateway, "listener": with_gateway,
               "conditions": accepted_listener()}),
        json!({"check": "gateway_attached_listener_sets", "gateway": gateway, "count": 2}),
        set_condition(&set("gateway-1"), "Accepted", "True", None),
        set_condition(&set("gateway-1"), "Programmed", "True", Some("Programmed")),
        set_listener(&set("gateway-1"), "listener-set-1-listener", accepted_listener()),
        set_listener(&set("gateway-1"), &with_gateway, conflicted.clone()),
        set_listener(&set("gateway-1"), &with_set, accepted_listener()),
    ];
    checks.extend(not_valid(&set("gateway-2")));
    checks.push(set_listener(&set("gateway-2"), &with_gateway, conflicted.clone()));
    checks.push(set_condition(&set("listener-set-1"), "Accepted", "True", None));
    checks.push(set_condition(
        &set("listener-set-1"),
        "Programmed",
        "True",
        Some("Programmed"),
    ));
    checks.push(set_listener(
        &set("listener-set-1"),
        "listener-set-2-listener",
        accepted_listener(),
    ));
    checks.push(set_listener(&set("listener-set-1"), &with_set, conflicted.clone()));
    checks.extend(not_valid(&set("listener-set-2")));
    checks.push(set_listener(&set("listener-set-2"), &with_set, conflicted));
    checks
}

/// The checks to evaluate for `test` instead of its cases.json ones, when those only say
/// "see Go file" and the Go test is transcribed here.
pub fn replacement(test: &str) -> Option<Vec<Value>> {
    match test {
        "ListenerSetHostnameConflict" => Some(conflict_checks("hostname")),
        "ListenerSetProtocolConflict" => Some(conflict_checks("protocol")),
        _ => None,
    }
}

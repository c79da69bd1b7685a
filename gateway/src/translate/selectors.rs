//! Label selectors over namespaces (a listener's `allowedRoutes.namespaces.selector`).
use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::GatewayListenersAllowedRoutesNamespacesSelector as Selector;

/// Whether namespace `name` with `labels` matches `selector`. Every namespace carries
/// `kubernetes.io/metadata.name: <name>`, as the API server sets it, even when the source
/// holds no Namespace object for it.
pub(super) fn matches(selector: &Selector, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
    let mut all = labels.cloned().unwrap_or_default();
    all.insert("kubernetes.io/metadata.name".into(), name.into());
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| all.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = all.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator the API would have refused: matches nothing.
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_expressions_and_the_implicit_name_label() {
        let labels = BTreeMap::from([("gateway-conformance".to_string(), "backend".to_string())]);
        let by_label: Selector =
            serde_json::from_str(r#"{"matchLabels":{"gateway-conformance":"backend"}}"#).expect("selector");
        assert!(matches(&by_label, "web", Some(&labels)));
        assert!(!matches(&by_label, "web", None));
        let by_name: Selector = serde_json::from_str(
            r#"{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"In","values":["a","b"]}]}"#,
        )
        .expect("selector");
        assert!(matches(&by_name, "b", None));
        assert!(!matches(&by_name, "c", None));
    }
}

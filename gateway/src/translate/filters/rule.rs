//! What a rule says besides its filters: `retry`, `timeouts`, its backendRefs' filters, and
//! the fields not translated yet (reported on the route's status, never ignored silently);
//! and the redirect port the Gateway API derives from the listener.
use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesBackendRefsFilters, HttpRouteRulesFilters,
};
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, route_filter::Kind};

/// The rule's `retry` and `timeouts` as filters written by `origin` (after the rule's own
/// filters: they are single-valued and nothing else sets them but RouteOption timeouts).
pub(super) fn retry_and_timeouts(
    origin: &pb::ResourceRef,
    rule_index: usize,
    rule: &HttpRouteRules,
) -> Vec<pb::RouteFilter> {
    let mut out = Vec::new();
    let mut push = |field: &str, kind: Kind| {
        out.push(pb::RouteFilter {
            origin: Some(origin.clone()),
            origin_field: format!("spec.rules[{rule_index}].{field}"),
            attached_by: String::new(),
            kind: Some(kind),
        });
    };
    if let Some(retry) = &rule.retry {
        let backoff = retry.backoff.as_deref().map(|text| (text, duration_ms(text)));
        match backoff {
            Some((text, None)) => push("retry", invalid_duration("retry.backoff", text)),
            _ => push(
                "retry",
                Kind::Retry(pb::Retry {
                    num_retries: retry.attempts.map(|a| a.clamp(0, i64::from(u32::MAX)) as u32),
                    status_codes: retry
                        .codes
                        .iter()
                        .flatten()
                        .filter_map(|c| u32::try_from(*c).ok())
                        .collect(),
                    backoff_base_ms: backoff.and_then(|(_, ms)| ms).unwrap_or(0),
                }),
            ),
        }
    }
    if let Some(timeouts) = &rule.timeouts {
        let request = timeouts.request.as_deref().map(|t| (t, duration_ms(t)));
        let backend = timeouts.backend_request.as_deref().map(|t| (t, duration_ms(t)));
        match (request, backend) {
            (Some((text, None)), _) => push("timeouts", invalid_duration("timeouts.request", text)),
            (_, Some((text, None))) => push("timeouts", invalid_duration("timeouts.backendRequest", text)),
            (request, backend) => push(
                "timeouts",
                Kind::Timeouts(pb::Timeouts {
                    request_ms: request.and_then(|(_, ms)| ms),
                    backend_request_ms: backend.and_then(|(_, ms)| ms),
                }),
            ),
        }
    }
    out
}

fn invalid_duration(field: &str, text: &str) -> Kind {
    Kind::Error(pb::FilterError {
        reason: "UnsupportedValue".into(),
        message: format!("{field} {text:?} is not a Gateway API duration"),
    })
}

/// A Gateway API duration (GEP-2257: one to four `<number><h|m|s|ms>`, e.g. `1h30m`,
/// `500ms`, `0s`) → milliseconds; `None` when malformed or beyond u32.
pub(crate) fn duration_ms(text: &str) -> Option<u32> {
    let mut rest = text;
    let mut total: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 || digits > 5 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (factor, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else {
            return None;
        };
        rest = &rest[unit_len..];
        total += number * factor;
        parts += 1;
    }
    (1..=4).contains(&parts).then(|| u32::try_from(total).ok()).flatten()
}

/// The filters of backendRef `backend_index` of rule `rule_index`, written by the route.
/// They are rule filters in all but their type (the same fields), so they are read as
/// such; one that cannot be is an `error`.
pub(crate) fn backend_ref_filters(
    route: &HttpRoute,
    rule_index: usize,
    backend_index: usize,
    backend: &HttpRouteRulesBackendRefs,
    index: &Index,
) -> Vec<pb::RouteFilter> {
    let namespace = route.metadata.namespace.as_deref().unwrap_or("default");
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let origin = super::http_route_ref(namespace, name);
    let mut out = Vec::new();
    for (filter_index, filter) in backend.filters.iter().flatten().enumerate() {
        let field = format!("spec.rules[{rule_index}].backendRefs[{backend_index}].filters[{filter_index}]");
        match as_rule_filter(filter) {
            Some(filter) => out.extend(super::one_filter(&filter, &origin, field, index)),
            None => out.push(pb::RouteFilter {
                origin: Some(origin.clone()),
                origin_field: field,
                attached_by: String::new(),
                kind: Some(Kind::Error(pb::FilterError {
                    reason: "UnsupportedValue".into(),
                    message: "backendRef filter cannot be read".into(),
                })),
            }),
        }
    }
    out
}

fn as_rule_filter(filter: &HttpRouteRulesBackendRefsFilters) -> Option<HttpRouteRulesFilters> {
    serde_json::to_value(filter)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
}

/// Redirects that name no port get the one the Gateway API derives: the scheme's
/// well-known port when they change the scheme, else the listener's declared port. Written
/// out because Envoy would otherwise keep the request's port, or drop it when the host
/// changes (envoyproxy/envoy#17318), and the port Envoy binds may not be the declared one.
pub(crate) fn settle_redirect_ports(filters: &mut [pb::RouteFilter], listener_port: i32) {
    for filter in filters {
        if let Some(Kind::RequestRedirect(redirect)) = &mut filter.kind
            && redirect.port_redirect == 0
        {
            redirect.port_redirect = match redirect.scheme_redirect.as_str() {
                "https" => 443,
                "http" => 80,
                _ => u32::try_from(listener_port).unwrap_or(0),
            };
        }
    }
}

/// Fields of rule `rule_index` that are not translated: (reason, message) for the route's
/// status; the rule is served without them.
pub(crate) fn untranslated(rule_index: usize, rule: &HttpRouteRules) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if rule.session_persistence.is_some() {
        out.push((
            "UnsupportedValue".to_string(),
            format!("spec.rules[{rule_index}].sessionPersistence is not supported yet; the rule is served without it"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::duration_ms;

    #[test]
    fn gateway_api_durations() {
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("0s"), Some(0));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("1m2s3ms"), Some(62_003));
        assert_eq!(duration_ms("1.5s"), None);
        assert_eq!(duration_ms("5"), None);
        assert_eq!(duration_ms(""), None);
        assert_eq!(duration_ms("1h1m1s1ms1h"), None);
    }
}

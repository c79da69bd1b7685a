//! The Envoy forms of what a forwarding route's filters ask for beyond headers and
//! rewrites: retry policy (with the per-try timeout), request mirrors, CORS, and the path
//! rewrites Envoy's `prefix_rewrite` cannot express.
use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::RuntimeFractionalPercent,
            route::v3::{RetryPolicy, retry_policy, route_action},
        },
        extensions::filters::http::cors::v3::CorsPolicy,
        r#type::{
            matcher::v3::{RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher},
            v3::{FractionalPercent, fractional_percent},
        },
    },
    google::protobuf::{Any, BoolValue, Duration, UInt32Value},
};
use envoy_types::util::pack_any;
use kgw_proto::v1 as pb;

/// Name of the CORS HTTP filter every HTTP listener runs (a no-op on routes without a
/// policy) and of its per-route config.
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";

/// What is retried whatever the codes: connection failures, refused streams and resets —
/// a per-try timeout counts as a reset in Envoy — so that the Gateway API's "retry on
/// connection errors" holds without retrying status codes that were not listed (`5xx`
/// and `gateway-error` would retry every 5xx / 502-504).
const RETRY_ON_ALWAYS: &str = "connect-failure,refused-stream,reset";

/// The route's retry policy: from its `retry` filter and/or its per-try timeout (a
/// per-try timeout alone retries nothing: 0 retries).
pub(super) fn retry_policy(retry: Option<&pb::Retry>, per_try_timeout: Option<Duration>) -> Option<RetryPolicy> {
    if retry.is_none() && per_try_timeout.is_none() {
        return None;
    }
    let Some(retry) = retry else {
        return Some(RetryPolicy {
            num_retries: Some(UInt32Value { value: 0 }),
            per_try_timeout,
            ..Default::default()
        });
    };
    let retry_on = if retry.status_codes.is_empty() {
        RETRY_ON_ALWAYS.to_string()
    } else {
        format!("{RETRY_ON_ALWAYS},retriable-status-codes")
    };
    Some(RetryPolicy {
        retry_on,
        num_retries: retry.num_retries.map(|value| UInt32Value { value }),
        retriable_status_codes: retry.status_codes.clone(),
        per_try_timeout,
        retry_back_off: (retry.backoff_base_ms > 0).then(|| retry_policy::RetryBackOff {
            base_interval: Some(super::filters::duration_ms(retry.backoff_base_ms)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A mirror to `cluster`; a share below all of it is given in millionths (Envoy's finest).
pub(super) fn mirror_policy(mirror: &pb::RequestMirror, cluster: String) -> route_action::RequestMirrorPolicy {
    let all = mirror.denominator == 0 || mirror.numerator >= mirror.denominator;
    let runtime_fraction = (!all).then(|| {
        let millionths = u64::from(mirror.numerator) * 1_000_000 / u64::from(mirror.denominator);
        RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: u32::try_from(millionths).unwrap_or(1_000_000),
                denominator: fractional_percent::DenominatorType::Million as i32,
            }),
            runtime_key: String::new(),
        }
    });
    route_action::RequestMirrorPolicy {
        cluster,
        runtime_fraction,
        ..Default::default()
    }
}

/// The per-route config of the CORS filter. Envoy echoes the request's Origin when it
/// matches (so `*` with credentials names the origin, as browsers require) and answers
/// preflights itself.
pub(super) fn cors_policy(cors: &pb::Cors) -> Any {
    let policy = CorsPolicy {
        allow_origin_string_match: cors.allow_origins.iter().map(|o| origin_matcher(o)).collect(),
        allow_methods: cors.allow_methods.join(", "),
        allow_headers: cors.allow_headers.join(", "),
        expose_headers: cors.expose_headers.join(", "),
        max_age: cors.max_age_seconds.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: cors.allow_credentials.then_some(BoolValue { value: true }),
        // A preflight is the gateway's to answer, allowed or not (without CORS headers when
        // the origin is not allowed): the backend never sees one.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    };
    pack_any(policy)
}

/// `*` matches any origin; a `*` inside (`https://*.bar.com`) any run of characters there,
/// several labels included; anything else the origin exactly (case-insensitively: scheme
/// and host are).
fn origin_matcher(origin: &str) -> StringMatcher {
    let pattern = if origin == "*" {
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: ".*".into(),
            ..Default::default()
        })
    } else if origin.contains('*') {
        let regex = origin.split('*').map(regex::escape).collect::<Vec<_>>().join(".*");
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex,
            ..Default::default()
        })
    } else {
        string_matcher::MatchPattern::Exact(origin.to_string())
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: !origin.contains('*'),
    }
}

/// The rewrite of a whole path (Envoy keeps the query out of it).
pub(super) fn full_path_rewrite(path: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: "^.*$".into(),
            ..Default::default()
        }),
        substitution: path.to_string(),
    }
}

/// Replacing matched prefix `prefix` by `/`: Envoy's `prefix_rewrite` would leave `//rest`
/// for `<prefix>/rest`, so the prefix and the slashes after it become one `/`.
pub(super) fn prefix_to_root(prefix: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: format!("^{}/*", regex::escape(prefix.trim_end_matches('/'))),
            ..Default::default()
        }),
        substitution: "/".into(),
    }
}

#[cfg(test)]
mod tests;

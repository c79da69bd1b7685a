//! The Envoy forms of retries, mirrors, CORS origins and path rewrites.
use super::*;

#[test]
fn retry_without_codes_retries_connection_errors_only() {
    let retry = pb::Retry {
        num_retries: Some(3),
        ..Default::default()
    };
    let policy = retry_policy(Some(&retry), None).expect("policy");
    assert_eq!(policy.retry_on, "connect-failure,refused-stream,reset");
    assert_eq!(policy.num_retries, Some(UInt32Value { value: 3 }));
}

#[test]
fn retry_codes_are_the_only_statuses_retried() {
    let retry = pb::Retry {
        num_retries: Some(2),
        status_codes: vec![500],
        backoff_base_ms: 100,
    };
    let policy = retry_policy(Some(&retry), None).expect("policy");
    assert_eq!(
        policy.retry_on,
        "connect-failure,refused-stream,reset,retriable-status-codes"
    );
    assert_eq!(policy.retriable_status_codes, vec![500]);
    assert!(policy.retry_back_off.is_some());
}

#[test]
fn per_try_timeout_alone_does_not_retry() {
    let timeout = super::super::filters::duration_ms(200);
    let policy = retry_policy(None, Some(timeout)).expect("policy");
    assert_eq!(policy.num_retries, Some(UInt32Value { value: 0 }));
    assert_eq!(policy.per_try_timeout, Some(timeout));
    assert!(retry_policy(None, None).is_none());
}

#[test]
fn mirror_fractions_in_millionths() {
    let mirror = |numerator, denominator| pb::RequestMirror {
        destination: None,
        numerator,
        denominator,
    };
    let share = |m: &pb::RequestMirror| {
        mirror_policy(m, "c".into())
            .runtime_fraction
            .and_then(|f| f.default_value)
            .map(|v| v.numerator)
    };
    assert_eq!(share(&mirror(25, 50)), Some(500_000));
    assert_eq!(share(&mirror(20, 100)), Some(200_000));
    assert_eq!(share(&mirror(1, 1)), None);
    assert_eq!(share(&mirror(0, 0)), None);
}

#[test]
fn wildcard_origins_match_several_labels() {
    let matcher = origin_matcher("https://*.bar.com");
    let Some(string_matcher::MatchPattern::SafeRegex(re)) = matcher.match_pattern else {
        panic!("regex expected")
    };
    let re = regex::Regex::new(&format!("^(?:{})$", re.regex)).expect("regex");
    assert!(re.is_match("https://xpto.www.bar.com"));
    assert!(!re.is_match("https://foobar.com"));
}

#[test]
fn prefix_to_root_leaves_one_slash() {
    let rewrite = prefix_to_root("/strip-prefix");
    let re = regex::Regex::new(&rewrite.pattern.expect("pattern").regex).expect("regex");
    assert_eq!(re.replace("/strip-prefix/three", "/"), "/three");
    assert_eq!(re.replace("/strip-prefix", "/"), "/");
}

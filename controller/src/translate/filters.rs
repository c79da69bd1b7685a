//! A Proxy route's typed filters → the Envoy route fields they set: one function per filter
//! kind, and `merge` and `answer`, the one place where their precedence is applied
//! (documented on `RouteFilter` in proto/protos/kgw/v1/proxy.proto).
use envoy_types::pb::{
    envoy::config::{
        core::v3::{HeaderValue, HeaderValueOption, header_value_option},
        route::v3::{RedirectAction, redirect_action, route_action},
    },
    google::protobuf::Duration,
};
use kgw_proto::v1::{self as pb, route_filter::Kind};

/// What a route's filters make of its Envoy route, after precedence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterEffects {
    /// An `error` filter: the route answers 500, whatever else it has.
    pub fails: bool,
    /// The last `request_redirect`: answered instead of the route's action.
    pub redirect: Option<RedirectAction>,
    /// For a forwarding route: the last prefix rewrite ("" none).
    pub prefix_rewrite: String,
    /// For a forwarding route: the last full path rewrite ("" none); it and the prefix
    /// rewrite replace each other.
    pub full_path_rewrite: String,
    /// For a forwarding route: the last host rewrite ("" none).
    pub host_rewrite: String,
    /// For a forwarding route: the last timeout (none: Envoy's default; zero: none at all).
    pub timeout: Option<Duration>,
    /// For a forwarding route: the last per-try (backend request) timeout (none: none).
    pub per_try_timeout: Option<Duration>,
    /// For a forwarding route: the last retry policy.
    pub retry: Option<pb::Retry>,
    /// For a forwarding route: every mirror, in filter order.
    pub mirrors: Vec<pb::RequestMirror>,
    /// The last CORS policy.
    pub cors: Option<pb::Cors>,
    /// Every header change, in filter order.
    pub headers: EnvoyHeaderChanges,
    /// The last list of WASM filters.
    pub wasm_filters: Vec<pb::WasmFilter>,
}

/// The header fields of an Envoy route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvoyHeaderChanges {
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
}

/// The filters' precedence: in list order, single values (timeout, rewrites, redirect, WASM
/// filter list) are replaced by later ones, header changes accumulate, and any error
/// makes the route fail.
pub fn merge(filters: &[pb::RouteFilter]) -> FilterEffects {
    let mut effects = FilterEffects::default();
    for filter in filters {
        match &filter.kind {
            Some(Kind::RequestHeaderModifier(m)) => {
                let (add, remove) = header_modifier(m);
                effects.headers.request_headers_to_add.extend(add);
                effects.headers.request_headers_to_remove.extend(remove);
            }
            Some(Kind::ResponseHeaderModifier(m)) => {
                let (add, remove) = header_modifier(m);
                effects.headers.response_headers_to_add.extend(add);
                effects.headers.response_headers_to_remove.extend(remove);
            }
            Some(Kind::UrlRewrite(rewrite)) => {
                let (prefix, host) = url_rewrite(rewrite);
                if let Some(prefix) = prefix {
                    effects.prefix_rewrite = prefix;
                    effects.full_path_rewrite.clear();
                }
                if let Some(path) = &rewrite.full_path_rewrite {
                    effects.full_path_rewrite = path.clone();
                    effects.prefix_rewrite.clear();
                }
                if let Some(host) = host {
                    effects.host_rewrite = host;
                }
            }
            Some(Kind::RequestRedirect(redirect)) => effects.redirect = Some(request_redirect(redirect)),
            Some(Kind::Timeout(t)) => effects.timeout = timeout(t),
            Some(Kind::Timeouts(t)) => {
                // Zero disables: a zero route timeout turns Envoy's 15 s default off, and no
                // per-try timeout is none.
                if let Some(ms) = t.request_ms {
                    effects.timeout = Some(duration_ms(ms));
                }
                if let Some(ms) = t.backend_request_ms {
                    effects.per_try_timeout = (ms > 0).then(|| duration_ms(ms));
                }
            }
            Some(Kind::Retry(retry)) => effects.retry = Some(retry.clone()),
            Some(Kind::RequestMirror(mirror)) => effects.mirrors.push(mirror.clone()),
            Some(Kind::Cors(cors)) => effects.cors = Some(cors.clone()),
            Some(Kind::Wasm(wasm)) => effects.wasm_filters = wasm.filters.clone(),
            Some(Kind::Error(_)) => effects.fails = true,
            None => {}
        }
    }
    effects
}

/// What a route answers, once its filters are applied.
#[derive(Debug, PartialEq)]
pub enum Answer<'r> {
    /// 500: a filter could not be applied, or the route has no action at all.
    InternalError,
    /// A `request_redirect` filter's redirect, instead of the route's action.
    Redirect(&'r RedirectAction),
    /// The route's own action.
    Own(&'r pb::route::Action),
}

/// The precedence of a route's answer: an `error` filter (500) over a redirect filter over
/// the route's own action.
pub fn answer<'r>(effects: &'r FilterEffects, own: Option<&'r pb::route::Action>) -> Answer<'r> {
    match (effects.fails, &effects.redirect, own) {
        (true, _, _) => Answer::InternalError,
        (false, Some(redirect), _) => Answer::Redirect(redirect),
        (false, None, Some(own)) => Answer::Own(own),
        (false, None, None) => Answer::InternalError,
    }
}

/// A header modifier → Envoy's headers to add (append or overwrite) and to remove.
pub fn header_modifier(m: &pb::HeaderModifier) -> (Vec<HeaderValueOption>, Vec<String>) {
    (
        m.headers_to_add.iter().map(header).collect(),
        m.headers_to_remove.clone(),
    )
}

/// One header to add: `append` appends, else it overwrites.
pub fn header(h: &pb::HeaderValue) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: h.name.clone(),
            value: h.value.clone(),
            ..Default::default()
        }),
        append_action: if h.append {
            header_value_option::HeaderAppendAction::AppendIfExistsOrAdd
        } else {
            header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
        } as i32,
        ..Default::default()
    }
}

/// A URL rewrite → Envoy's `prefix_rewrite` and `host_rewrite_literal`, each `None` when
/// the filter leaves it as it is (an empty value turns an earlier rewrite off).
pub fn url_rewrite(r: &pb::UrlRewrite) -> (Option<String>, Option<String>) {
    (r.prefix_rewrite.clone(), r.host_rewrite.clone())
}

/// The Envoy host rewrite for `host`; none for "".
pub fn host_rewrite_specifier(host: &str) -> Option<route_action::HostRewriteSpecifier> {
    (!host.is_empty()).then(|| route_action::HostRewriteSpecifier::HostRewriteLiteral(host.to_string()))
}

/// A timeout → Envoy's route timeout; 0 is Envoy's default (none set).
pub fn timeout(t: &pb::Timeout) -> Option<Duration> {
    let ms = t.request_timeout_ms;
    (ms > 0).then(|| duration_ms(ms))
}

/// Milliseconds as a protobuf Duration.
pub fn duration_ms(ms: u32) -> Duration {
    Duration {
        seconds: i64::from(ms / 1000),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A redirect → Envoy's; a response code other than 302, 303, 307 or 308 is 301.
pub fn request_redirect(r: &pb::RedirectAction) -> RedirectAction {
    use redirect_action::RedirectResponseCode as Code;
    let response_code = match r.response_code {
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        _ => Code::MovedPermanently,
    };
    RedirectAction {
        host_redirect: r.host_redirect.clone(),
        port_redirect: r.port_redirect,
        scheme_rewrite_specifier: (!r.scheme_redirect.is_empty())
            .then(|| redirect_action::SchemeRewriteSpecifier::SchemeRedirect(r.scheme_redirect.clone())),
        path_rewrite_specifier: match &r.path_rewrite {
            Some(pb::redirect_action::PathRewrite::PathRedirect(p)) => {
                Some(redirect_action::PathRewriteSpecifier::PathRedirect(p.clone()))
            }
            Some(pb::redirect_action::PathRewrite::PrefixRewrite(p)) => {
                Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p.clone()))
            }
            None => None,
        },
        response_code: response_code as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;

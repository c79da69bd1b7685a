//! Proxy virtual hosts and routes → an Envoy RouteConfiguration. Each virtual host is
//! translated on its own ([`virtual_host`], a pure function whose result says what it
//! depended on, so that it can be cached); [`route_configuration`] then settles what
//! depends on the whole listener (its WASM filters).
use std::collections::BTreeMap;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{DataSource, data_source},
            route::v3::{
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteConfiguration,
                RouteMatch, VirtualHost, WeightedCluster, header_matcher, query_parameter_matcher, route, route_action,
                route_match, weighted_cluster,
            },
        },
        r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
    },
    google::protobuf::UInt32Value,
};
use kgw_proto::v1 as pb;

mod pieces;
pub(super) use pieces::{Previous, compact_virtual_host};

use super::{
    Problem, Severity, cluster_name, filters, grpc_json, route_features,
    small::{VecMap, VecSet},
    upstream_tls, wasm,
};

/// What translating one virtual host produced, and what it depended on besides the
/// virtual host itself: equal inputs give an equal translation.
#[derive(Clone, Debug, Default)]
pub struct VirtualHostTranslation {
    /// The Envoy virtual host. Routes that run a WASM filter carry a use marker for it
    /// ([`wasm::use_marker`]) until [`route_configuration`] settles the listener's filters.
    /// `None` once [`Self::compact`]ed: read it with [`Self::to_virtual_host`]. Boxed: a
    /// cached translation holds no empty one (1.2 KB inline).
    virtual_host: Option<Box<VirtualHost>>,
    /// Set by [`Self::compact`]: the canonical bytes stand for `virtual_host`.
    compacted: bool,
    /// Upstreams the routes name and that exist: cluster name → KV key (`<ns>.<name>`).
    pub found_upstreams: VecMap<String, String>,
    /// The TLS of the clusters in `found_upstreams` that are an Upstream's TLS variant.
    pub upstream_tls: VecMap<String, pb::UpstreamTls>,
    /// KV keys of the Upstreams the routes name that do not exist (yet).
    pub missing_upstreams: VecSet<String>,
    /// KV keys of every Upstream the routes name that exists (`found_upstreams` keeps one
    /// per cluster name, and two Upstreams may share one: `a_b`/`c` and `a`/`b_c`).
    pub found_keys: VecSet<String>,
    /// WASM filters this virtual host is the first of its listener to run (Envoy name →
    /// filter).
    pub wasm_added: BTreeMap<String, pb::WasmFilter>,
    /// The listener's WASM filters from earlier virtual hosts that this translation looked
    /// up (Envoy name → the filter, `None`: not run earlier).
    pub wasm_earlier_seen: BTreeMap<String, Option<pb::WasmFilter>>,
    /// Whether a route asks for WASM filters: the translation then depends on the WASM
    /// cache's state ([`wasm::WasmModules`]).
    pub uses_wasm_modules: bool,
    /// In route order.
    pub problems: Vec<Problem>,
    /// The virtual host's deterministic bytes, once asked for (`canonical_bytes`).
    canonical: std::sync::OnceLock<Vec<u8>>,
    /// Of a host translated by pieces ([`pieces`]): one per route, in order.
    pieces: Option<Box<[pieces::RoutePiece]>>,
}

impl crate::xds::tables::CanonicalBytes for VirtualHostTranslation {
    fn canonical_bytes(&self) -> &[u8] {
        VirtualHostTranslation::canonical_bytes(self)
    }
}

impl VirtualHostTranslation {
    /// The virtual host's deterministic encoding (made once): what its route table's
    /// bytes are made of when its listener runs no WASM filter.
    pub fn canonical_bytes(&self) -> &[u8] {
        self.canonical.get_or_init(|| match &self.virtual_host {
            Some(virtual_host) => crate::xds::canonical::virtual_host(virtual_host),
            None => crate::xds::canonical::virtual_host(&VirtualHost::default()),
        })
    }

    /// Keeps only the canonical bytes of a virtual host that asks for no WASM filter (its
    /// route table is packed from bytes), so that a cache holds one form of it, not two:
    /// the typed form is most of a cached translation's memory.
    pub fn compact(&mut self) {
        if self.uses_wasm_modules || self.compacted {
            return;
        }
        self.canonical_bytes();
        self.virtual_host = None;
        self.compacted = true;
    }

    /// Drops the Envoy virtual host, keeping what was found while making it (problems,
    /// Upstreams, WASM filters): for a check that wants the problems alone. What reads the
    /// virtual host afterwards gets an empty one.
    pub(crate) fn forget_routes(&mut self) {
        self.virtual_host = None;
        self.compacted = false;
        self.canonical = std::sync::OnceLock::new();
        self.pieces = None;
    }

    /// A compacted translation of these canonical bytes, made by pieces.
    fn set_compacted(&mut self, bytes: Vec<u8>, pieces: Vec<pieces::RoutePiece>) {
        self.virtual_host = None;
        self.canonical = std::sync::OnceLock::from(bytes);
        self.compacted = true;
        self.pieces = Some(pieces.into_boxed_slice());
    }

    /// The Envoy virtual host (decoded from its bytes when compacted).
    pub fn to_virtual_host(&self) -> VirtualHost {
        if self.compacted {
            decode_virtual_host(self.canonical_bytes())
        } else {
            self.virtual_host.as_deref().cloned().unwrap_or_default()
        }
    }

    /// [`Self::to_virtual_host`], without a copy when not compacted.
    pub fn into_virtual_host(self) -> VirtualHost {
        if self.compacted {
            decode_virtual_host(self.canonical_bytes())
        } else {
            self.virtual_host.map(|boxed| *boxed).unwrap_or_default()
        }
    }

    /// Whether `other` names the same Upstreams as this translation, found or missing,
    /// under the same cluster names and TLS (what [`Self::holds_for`] and the served
    /// references depend on).
    pub fn names_the_same_as(&self, other: &Self) -> bool {
        self.found_upstreams == other.found_upstreams
            && self.found_keys == other.found_keys
            && self.missing_upstreams == other.missing_upstreams
            && self.upstream_tls == other.upstream_tls
    }

    /// Whether the Upstreams this translation looked up are still found (or missing) as
    /// they were, and the listener's earlier WASM filters it looked up are the same.
    /// (A changed Upstream's content is not seen here: see `cache::IncrementalTranslator`.)
    pub fn holds_for(
        &self,
        upstreams: &BTreeMap<String, pb::Upstream>,
        earlier_wasm: &BTreeMap<String, pb::WasmFilter>,
    ) -> bool {
        self.found_keys.iter().all(|key| upstreams.contains_key(key))
            && self.missing_upstreams.iter().all(|key| !upstreams.contains_key(key))
            && self
                .wasm_earlier_seen
                .iter()
                .all(|(name, seen)| earlier_wasm.get(name) == seen.as_ref())
    }
}

/// Bytes this process encoded from a VirtualHost decode; a failure would be a bug, and
/// leaves the virtual host empty rather than stopping the controller.
fn decode_virtual_host(bytes: &[u8]) -> VirtualHost {
    use prost::Message as _;
    VirtualHost::decode(bytes).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot decode a virtual host this process encoded");
        VirtualHost::default()
    })
}

/// What a virtual host's translation reads besides the virtual host.
#[derive(Clone, Copy)]
pub struct VirtualHostInputs<'a> {
    /// Name of the listener the virtual host belongs to (problem paths).
    pub listener: &'a str,
    /// KV key → Upstream.
    pub upstreams: &'a BTreeMap<String, pb::Upstream>,
    /// The WASM cache's state.
    pub wasm_modules: &'a wasm::WasmModules,
    /// The WASM filters earlier virtual hosts of the listener run (Envoy name → filter):
    /// the first to run a filter fixes its config for the listener.
    pub earlier_wasm: &'a BTreeMap<String, pb::WasmFilter>,
}

/// A route's place in problems, `listener/<listener>/vhost/<host>/route/<route>`: written
/// when a problem needs it (most routes have none).
struct RoutePath<'a> {
    listener: &'a str,
    vhost: &'a str,
    route: &'a str,
    text: std::cell::OnceCell<String>,
}

impl<'a> RoutePath<'a> {
    fn new(listener: &'a str, vhost: &'a str, route: &'a str) -> Self {
        Self {
            listener,
            vhost,
            route,
            text: std::cell::OnceCell::new(),
        }
    }

    fn as_str(&self) -> &str {
        self.text
            .get_or_init(|| format!("listener/{}/vhost/{}/route/{}", self.listener, self.vhost, self.route))
    }
}

/// One route of a virtual host translated into `out`: `None` when it is left out.
fn translate_route(
    r: &pb::Route,
    vhost: &str,
    inputs: VirtualHostInputs<'_>,
    out: &mut VirtualHostTranslation,
) -> Option<Route> {
    let path = RoutePath::new(inputs.listener, vhost, &r.name);
    // Envoy NACKs a whole route table for one bad regex: leave the route out.
    let bad_regexes = super::re2::check_route(r, || path.as_str().to_string());
    if !bad_regexes.is_empty() {
        out.problems.extend(bad_regexes);
        return None;
    }
    Some(route(r, &path, inputs, out))
}

/// Translates one virtual host of a listener.
pub(super) fn virtual_host(vhost: &pb::VirtualHost, inputs: VirtualHostInputs<'_>) -> VirtualHostTranslation {
    let mut out = VirtualHostTranslation::default();
    let mut routes = Vec::with_capacity(vhost.routes.len());
    for r in &vhost.routes {
        routes.extend(translate_route(r, &vhost.name, inputs, &mut out));
    }
    out.virtual_host = Some(Box::new(VirtualHost {
        name: vhost.name.clone(),
        domains: vhost.domains.clone(),
        routes,
        ..Default::default()
    }));
    out
}

/// Builds the route table of one listener from its translated virtual hosts (in order);
/// `wasm_used` holds every WASM filter their routes run (Envoy name → filter).
pub(super) fn route_configuration(
    name: &str,
    mut virtual_hosts: Vec<VirtualHost>,
    wasm_used: &BTreeMap<String, pb::WasmFilter>,
) -> RouteConfiguration {
    if !wasm_used.is_empty() {
        add_unrouted_catch_alls(&mut virtual_hosts);
    }
    // The listener runs every WASM filter its routes use; a route that does not use one
    // turns it off (Envoy accepts a bare "disabled" per-route config, not a bare "enabled").
    for route in virtual_hosts.iter_mut().flat_map(|v| v.routes.iter_mut()) {
        for filter in wasm_used.keys() {
            let uses = route
                .typed_per_filter_config
                .get(filter)
                .is_some_and(wasm::is_use_marker);
            if uses {
                route.typed_per_filter_config.remove(filter);
            } else {
                route
                    .typed_per_filter_config
                    .insert(filter.clone(), wasm::disable_on_route());
            }
        }
    }
    RouteConfiguration {
        virtual_hosts,
        ..route_table_head(name)
    }
}

/// Route table `name`'s fields other than its virtual hosts (the incremental translation
/// packs them before the hosts' bytes: `xds::canonical::pack_route_table`).
pub fn route_table_head(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        // Host "a.example:8080" matches domain "a.example", and reaches the backend as sent
        // (the HCM's strip_any_host_port would rewrite it).
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// A request that matches no route runs every listener-level filter (there is no route to
/// turn them off). With WASM filters on the listener, each virtual host (and a `*` one)
/// ends in an explicit 404 route instead, which turns them off like any route that does
/// not use them: a module that fails affects only the routes that use it.
fn add_unrouted_catch_alls(virtual_hosts: &mut Vec<VirtualHost>) {
    let catch_all = || Route {
        name: UNROUTED.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            ..Default::default()
        })),
        ..Default::default()
    };
    for vhost in virtual_hosts.iter_mut() {
        vhost.routes.push(catch_all());
    }
    if !virtual_hosts.iter().any(|v| v.domains.iter().any(|d| d == "*")) {
        virtual_hosts.push(VirtualHost {
            name: UNROUTED.into(),
            domains: vec!["*".into()],
            routes: vec![catch_all()],
            ..Default::default()
        });
    }
}

/// Name of the explicit no-route routes and virtual host.
const UNROUTED: &str = "kgw-unrouted";

/// Translates one route of a virtual host, recording what it depends on into `out`.
fn route(
    r: &pb::Route,
    path: &RoutePath<'_>,
    inputs: VirtualHostInputs<'_>,
    out: &mut VirtualHostTranslation,
) -> Route {
    // One matcher per Envoy route; the gateway emits routes with exactly one.
    let matcher = r.matchers.first().cloned().unwrap_or_default();
    if r.matchers.len() > 1 {
        out.problems.push(Problem {
            severity: Severity::Warning,
            path: path.as_str().into(),
            source: r.source.clone(),
            message: "only the first matcher of a route is used".into(),
        });
    }
    // A destination with TLS has a cluster of its own (see `upstream_tls`).
    let mut resolve = |upstream: &Option<pb::ResourceRef>, tls: Option<&pb::UpstreamTls>| -> String {
        let upstream = upstream.clone().unwrap_or_default();
        let mut name = cluster_name(&upstream);
        if upstream.kind == "Upstream" {
            let key = kgw_proto::nats::key(&upstream.namespace, &upstream.name);
            if let Some(tls) = tls {
                name = upstream_tls::cluster_name(&name, tls);
            }
            if inputs.upstreams.contains_key(&key) {
                if let Some(tls) = tls {
                    out.upstream_tls.insert(name.clone(), tls.clone());
                }
                out.found_keys.insert(key.clone());
                out.found_upstreams.insert(name.clone(), key);
            } else {
                out.missing_upstreams.insert(key);
                out.problems.push(Problem {
                    severity: Severity::Warning,
                    path: path.as_str().into(),
                    source: r.source.clone(),
                    message: format!(
                        "Upstream {}/{} not found (yet); requests get 500 until it exists",
                        upstream.namespace, upstream.name
                    ),
                });
            }
        }
        name
    };
    // The filters of a lone destination (the gateway moves them to the route, but a Proxy
    // may carry them there) apply to all of the route's requests.
    let single_filters = match &r.action {
        Some(pb::route::Action::RouteAction(pb::RouteAction {
            destination: Some(pb::route_action::Destination::Single(d)),
        })) => d.filters.as_slice(),
        _ => &[],
    };
    let effects = if single_filters.is_empty() {
        filters::merge(&r.filters)
    } else {
        filters::merge(&[r.filters.as_slice(), single_filters].concat())
    };
    // JSON to gRPC for a route to one Upstream whose gRPC methods discovery found.
    let mut transcoder = None;
    let action = match filters::answer(&effects, r.action.as_ref()) {
        filters::Answer::InternalError => internal_error(),
        filters::Answer::Redirect(redirect) => route::Action::Redirect(redirect.clone()),
        filters::Answer::Own(pb::route::Action::RouteAction(action)) => {
            let cluster_specifier = match &action.destination {
                Some(pb::route_action::Destination::Single(d)) => {
                    let cluster = resolve(&d.upstream, d.tls.as_ref());
                    transcoder = d
                        .upstream
                        .as_ref()
                        .filter(|u| u.kind == "Upstream")
                        .and_then(|u| inputs.upstreams.get(&kgw_proto::nats::key(&u.namespace, &u.name)))
                        .and_then(grpc_json::route_config);
                    route_action::ClusterSpecifier::Cluster(cluster)
                }
                Some(pb::route_action::Destination::Multi(multi)) => {
                    route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                        clusters: multi
                            .destinations
                            .iter()
                            .map(|w| {
                                let destination = w.destination.clone().unwrap_or_default();
                                // A backendRef's own header changes, only when it is picked.
                                let headers = filters::merge(&destination.filters).headers;
                                weighted_cluster::ClusterWeight {
                                    name: resolve(&destination.upstream, destination.tls.as_ref()),
                                    weight: Some(UInt32Value { value: w.weight }),
                                    request_headers_to_add: headers.request_headers_to_add,
                                    request_headers_to_remove: headers.request_headers_to_remove,
                                    response_headers_to_add: headers.response_headers_to_add,
                                    response_headers_to_remove: headers.response_headers_to_remove,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                }
                None => route_action::ClusterSpecifier::Cluster(super::INVALID_BACKEND_CLUSTER.into()),
            };
            let request_mirror_policies = effects
                .mirrors
                .iter()
                .map(|m| {
                    let upstream = m.destination.as_ref().and_then(|d| d.upstream.clone());
                    let tls = m.destination.as_ref().and_then(|d| d.tls.as_ref());
                    route_features::mirror_policy(m, resolve(&upstream, tls))
                })
                .collect();
            let (prefix_rewrite, regex_rewrite) = path_rewrite(&effects, &matcher);
            route::Action::Route(RouteAction {
                cluster_specifier: Some(cluster_specifier),
                cluster_not_found_response_code: route_action::ClusterNotFoundResponseCode::InternalServerError as i32,
                prefix_rewrite,
                regex_rewrite,
                host_rewrite_specifier: filters::host_rewrite_specifier(&effects.host_rewrite),
                timeout: effects.timeout,
                retry_policy: route_features::retry_policy(effects.retry.as_ref(), effects.per_try_timeout),
                request_mirror_policies,
                ..Default::default()
            })
        }
        filters::Answer::Own(pb::route::Action::DirectResponseAction(direct)) => {
            route::Action::DirectResponse(DirectResponseAction {
                status: direct.status,
                body: (!direct.body.is_empty()).then(|| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(direct.body.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
        filters::Answer::Own(pb::route::Action::RedirectAction(redirect)) => {
            route::Action::Redirect(filters::request_redirect(redirect))
        }
    };
    out.uses_wasm_modules |= !effects.wasm_filters.is_empty();
    let wasm_filters = if effects.wasm_filters.is_empty() {
        wasm::Resolved::default()
    } else {
        wasm::resolve(
            &effects.wasm_filters,
            inputs.wasm_modules,
            path.as_str(),
            &r.source,
            &mut out.problems,
        )
    };
    let mut closed_by = wasm_filters.closed;
    let mut typed_per_filter_config = std::collections::HashMap::new();
    if let Some(config) = transcoder {
        typed_per_filter_config.insert(grpc_json::FILTER_NAME.to_string(), config);
    }
    if let Some(cors) = &effects.cors {
        typed_per_filter_config.insert(
            route_features::CORS_FILTER.to_string(),
            route_features::cors_policy(cors),
        );
    }
    for filter in wasm_filters.run {
        let envoy_name = wasm::filter_name(&filter);
        if !out.wasm_added.contains_key(&envoy_name) {
            out.wasm_earlier_seen
                .entry(envoy_name.clone())
                .or_insert_with(|| inputs.earlier_wasm.get(&envoy_name).cloned());
        }
        let first = out
            .wasm_added
            .get(&envoy_name)
            .or_else(|| inputs.earlier_wasm.get(&envoy_name));
        match first {
            Some(other) if other.sha256 != filter.sha256 || other.config != filter.config => {
                let outcome = if filter.fail_open {
                    "left out here"
                } else {
                    closed_by.get_or_insert_with(|| filter.name.clone());
                    "it fails closed: the route answers 503"
                };
                out.problems.push(Problem {
                    severity: Severity::Error,
                    path: path.as_str().into(),
                    source: r.source.clone(),
                    message: format!(
                        "WASM filter {} is configured differently by another route of this listener; {outcome}",
                        filter.name
                    ),
                });
                continue;
            }
            Some(_) => {}
            None => {
                out.wasm_added.insert(envoy_name.clone(), filter);
            }
        }
        typed_per_filter_config.insert(envoy_name, wasm::use_marker());
    }
    let action = match closed_by {
        // A filter that must run cannot: refuse the route's requests rather than serve them
        // unfiltered (the filter may be an authorization check).
        Some(filter) => {
            typed_per_filter_config.clear();
            route::Action::DirectResponse(DirectResponseAction {
                status: 503,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(format!(
                        "WASM filter {filter} is not available\n"
                    ))),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
        None => action,
    };
    Route {
        name: r.name.clone(),
        r#match: Some(route_match(&matcher)),
        typed_per_filter_config,
        action: Some(action),
        request_headers_to_add: effects.headers.request_headers_to_add,
        request_headers_to_remove: effects.headers.request_headers_to_remove,
        response_headers_to_add: effects.headers.response_headers_to_add,
        response_headers_to_remove: effects.headers.response_headers_to_remove,
        ..Default::default()
    }
}

/// The route's path rewrite: a full path one, or the prefix one (a regex one when the
/// prefix becomes `/`, which `prefix_rewrite` would turn into `//rest`).
fn path_rewrite(
    effects: &filters::FilterEffects,
    matcher: &pb::Matcher,
) -> (
    String,
    Option<envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute>,
) {
    if !effects.full_path_rewrite.is_empty() {
        return (
            String::new(),
            Some(route_features::full_path_rewrite(&effects.full_path_rewrite)),
        );
    }
    match &matcher.path_specifier {
        Some(pb::matcher::PathSpecifier::Prefix(prefix)) if effects.prefix_rewrite == "/" && prefix != "/" => {
            (String::new(), Some(route_features::prefix_to_root(prefix)))
        }
        _ => (effects.prefix_rewrite.clone(), None),
    }
}

/// The answer of a route that cannot be served: 500, no body.
fn internal_error() -> route::Action {
    route::Action::DirectResponse(DirectResponseAction {
        status: 500,
        ..Default::default()
    })
}

fn string_match(value: &str, regex: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(if regex {
            string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                regex: value.to_string(),
                ..Default::default()
            })
        } else {
            string_matcher::MatchPattern::Exact(value.to_string())
        }),
        ..Default::default()
    }
}

fn route_match(m: &pb::Matcher) -> RouteMatch {
    let path_specifier = match &m.path_specifier {
        Some(pb::matcher::PathSpecifier::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(pb::matcher::PathSpecifier::Regex(p)) => route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: p.clone(),
            ..Default::default()
        }),
        Some(pb::matcher::PathSpecifier::Prefix(p)) if p != "/" && p.ends_with('/') => {
            // Gateway API prefixes match whole path segments: "/a/" matches "/a" too.
            route_match::PathSpecifier::PathSeparatedPrefix(p.trim_end_matches('/').to_string())
        }
        Some(pb::matcher::PathSpecifier::Prefix(p)) if p != "/" => {
            route_match::PathSpecifier::PathSeparatedPrefix(p.clone())
        }
        _ => route_match::PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.clone(),
            invert_match: h.invert_match,
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string_match(
                &h.value, h.regex,
            ))),
            ..Default::default()
        })
        .collect();
    if !m.methods.is_empty() {
        let (value, regex) = match m.methods.as_slice() {
            [one] => (one.clone(), false),
            many => (
                many.iter().map(|m| regex::escape(m)).collect::<Vec<_>>().join("|"),
                true,
            ),
        };
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string_match(
                &value, regex,
            ))),
            ..Default::default()
        });
    }
    RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters: m
            .query_parameters
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_match(&q.value, q.regex)),
                ),
            })
            .collect(),
        ..Default::default()
    }
}

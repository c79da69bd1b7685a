//! Large virtual hosts translated route by route: a host of many routes (all routes under
//! one hostname) keeps, per route, where its entry lies in the host's canonical bytes and
//! what its translation found (Upstreams, problems). Its next translation copies the entry
//! of every route that did not change and translates the others alone, so that one new
//! route among 20,000 costs one route's translation and a copy of the host's bytes, not
//! 20,000 translations and an encoding.
//!
//! The bytes are those of [`super::virtual_host`] then
//! [`VirtualHostTranslation::compact`]: the host's name and domains, then each route as
//! field `routes` (`xds::canonical::route_entry`), in order. A host whose routes run a WASM
//! filter is translated whole (its routes depend on one another: the first to run a
//! filter fixes its config).
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use kgw_proto::v1 as pb;
use prost::Message as _;

use super::{VirtualHostInputs, VirtualHostTranslation, translate_route, virtual_host};
use crate::problem::Problem;
use crate::proxies::SameRoutes;

/// Hosts with at least this many routes are translated by pieces: below it, a whole
/// translation is cheap and the pieces would cost more memory than they save time. The
/// unit tests take nearly every host by pieces (their golden files and the incremental =
/// full property test then check this path's bytes).
pub(crate) const PIECES_FROM_ROUTES: usize = if cfg!(test) { 2 } else { 32 };

/// One route's part of a host translated by pieces.
#[derive(Clone, Debug)]
pub(crate) struct RoutePiece {
    /// Its entry in the host's canonical bytes (empty: the route is left out).
    entry: Range<usize>,
    found: Arc<RouteFound>,
}

/// What translating one route found, as [`VirtualHostTranslation`] records it for the host.
#[derive(Debug, Default, PartialEq)]
struct RouteFound {
    found_upstreams: Vec<(String, String)>,
    upstream_tls: Vec<(String, pb::UpstreamTls)>,
    missing_upstreams: Vec<String>,
    found_keys: Vec<String>,
    problems: Vec<Problem>,
}

impl RouteFound {
    fn of(translation: VirtualHostTranslation) -> Self {
        Self {
            found_upstreams: translation.found_upstreams.into_vec(),
            upstream_tls: translation.upstream_tls.into_vec(),
            missing_upstreams: translation.missing_upstreams.into_vec(),
            found_keys: translation.found_keys.into_vec(),
            problems: translation.problems,
        }
    }

    /// Whether a translation of the same route now would find the same: its Upstreams are
    /// found or missing as they were, and none of them is `stale` (changed since).
    fn holds(&self, upstreams: &BTreeMap<String, pb::Upstream>, stale: &BTreeSet<String>) -> bool {
        Self::holds_keys(&self.found_keys, &self.missing_upstreams, upstreams, stale)
    }

    /// Whether `found` are all found and `missing` all missing, none of them `stale`.
    fn holds_keys<'k>(
        found: impl IntoIterator<Item = &'k String>,
        missing: impl IntoIterator<Item = &'k String>,
        upstreams: &BTreeMap<String, pb::Upstream>,
        stale: &BTreeSet<String>,
    ) -> bool {
        found
            .into_iter()
            .all(|key| upstreams.contains_key(key) && !stale.contains(key))
            && missing
                .into_iter()
                .all(|key| !upstreams.contains_key(key) && !stale.contains(key))
    }

    /// Adds what it found to the host's translation, as translating the route there would.
    /// (Many routes name the same Upstreams: what is there already is not copied again.)
    fn add_to(&self, out: &mut VirtualHostTranslation) {
        for (name, key) in &self.found_upstreams {
            if out.found_upstreams.get(name) != Some(key) {
                out.found_upstreams.insert(name.clone(), key.clone());
            }
        }
        for (name, tls) in &self.upstream_tls {
            if out.upstream_tls.get(name) != Some(tls) {
                out.upstream_tls.insert(name.clone(), tls.clone());
            }
        }
        for key in &self.missing_upstreams {
            if !out.missing_upstreams.contains(key) {
                out.missing_upstreams.insert(key.clone());
            }
        }
        for key in &self.found_keys {
            if !out.found_keys.contains(key) {
                out.found_keys.insert(key.clone());
            }
        }
        out.problems.extend(self.problems.iter().cloned());
    }
}

/// The previous translation of a host, to take unchanged routes from.
#[derive(Clone, Copy)]
pub(crate) struct Previous<'a> {
    /// The host it was made from.
    pub(crate) input: &'a pb::VirtualHost,
    pub(crate) translation: &'a VirtualHostTranslation,
    /// Which of the new host's routes are known to equal routes of `input` (the store
    /// copied them from it), if it knows.
    pub(crate) same: Option<&'a SameRoutes>,
}

/// Translates `vhost` as [`virtual_host`] then [`VirtualHostTranslation::compact`] do, by
/// pieces when it has [`PIECES_FROM_ROUTES`] routes or more: the routes equal to one of
/// `previous` whose Upstreams are found or missing as they were and not `stale` are taken
/// from it, the others translated.
pub(crate) fn compact_virtual_host(
    vhost: &pb::VirtualHost,
    inputs: VirtualHostInputs<'_>,
    previous: Option<Previous<'_>>,
    stale: &BTreeSet<String>,
) -> VirtualHostTranslation {
    if vhost.routes.len() >= PIECES_FROM_ROUTES
        && let Some(translation) = by_pieces(vhost, inputs, previous, stale)
    {
        return translation;
    }
    let mut translation = virtual_host(vhost, inputs);
    translation.compact();
    translation
}

/// Finds, among the previous host's routes, one equal to each route asked for: the one at
/// the same offset from the last match first (a host changes by a few routes at a time),
/// else by name.
struct Matcher<'a> {
    routes: &'a [pb::Route],
    pieces: &'a [RoutePiece],
    /// The previous host's canonical bytes, which the pieces' entries index.
    bytes: &'a [u8],
    next: usize,
    by_name: Option<BTreeMap<&'a str, Vec<usize>>>,
    /// Routes known to equal previous ones (copied pages): not compared.
    same: Option<&'a SameRoutes>,
}

impl<'a> Matcher<'a> {
    /// The previous translation's, when it was made by pieces.
    fn of(previous: Previous<'a>) -> Option<Self> {
        let pieces = previous.translation.pieces.as_deref()?;
        (pieces.len() == previous.input.routes.len()).then(|| Self {
            routes: &previous.input.routes,
            pieces,
            bytes: previous.translation.canonical_bytes(),
            next: 0,
            by_name: None,
            same: previous.same,
        })
    }

    /// The piece of a previous route equal to `route`, and its entry's bytes.
    fn find(&mut self, i: usize, route: &pb::Route) -> Option<(&'a RoutePiece, &'a [u8])> {
        let known = self
            .same
            .and_then(|same| same.previous_of(i))
            .filter(|&j| j < self.routes.len());
        let at = if let Some(j) = known {
            j
        } else if self.routes.get(self.next) == Some(route) {
            self.next
        } else {
            let routes = self.routes;
            let same = self.same;
            let by_name = self.by_name.get_or_insert_with(|| {
                // With the copied routes known, the others are looked for among the routes
                // no copy was made of (the pages replaced), not among all of them.
                let candidates = match same {
                    Some(same) => same.not_copied(routes.len()),
                    None => (0..routes.len()).collect(),
                };
                let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for i in candidates {
                    by_name.entry(routes[i].name.as_str()).or_default().push(i);
                }
                by_name
            });
            let same_name = by_name.get(route.name.as_str())?;
            *same_name.iter().find(|&&i| routes[i] == *route)?
        };
        self.next = at + 1;
        let piece = self.pieces.get(at)?;
        Some((piece, self.bytes.get(piece.entry.clone())?))
    }
}

fn by_pieces(
    vhost: &pb::VirtualHost,
    inputs: VirtualHostInputs<'_>,
    previous: Option<Previous<'_>>,
    stale: &BTreeSet<String>,
) -> Option<VirtualHostTranslation> {
    let mut matcher = previous.and_then(Matcher::of);
    // A taken route finds a subset of what the previous host found: when all of that still
    // holds, so does each route's part of it, and the routes need not be checked one by one.
    let all_hold = previous.is_some_and(|p| {
        RouteFound::holds_keys(
            &p.translation.found_keys,
            &p.translation.missing_upstreams,
            inputs.upstreams,
            stale,
        )
    });
    let mut out = VirtualHostTranslation::default();
    let mut bytes = VirtualHost {
        name: vhost.name.clone(),
        domains: vhost.domains.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    bytes.reserve(matcher.as_ref().map_or(0, |m| m.bytes.len()));
    let mut pieces: Vec<RoutePiece> = Vec::with_capacity(vhost.routes.len());
    // The record of the route before, when this translation made it.
    let mut made_before: Option<Arc<RouteFound>> = None;
    for (i, r) in vhost.routes.iter().enumerate() {
        let taken = matcher
            .as_mut()
            .and_then(|m| m.find(i, r))
            .filter(|(piece, _)| all_hold || piece.found.holds(inputs.upstreams, stale));
        let start = bytes.len();
        let found = match taken {
            Some((piece, entry)) => {
                bytes.extend_from_slice(entry);
                made_before = None;
                Arc::clone(&piece.found)
            }
            None => {
                let mut alone = VirtualHostTranslation::default();
                let route = translate_route(r, &vhost.name, inputs, &mut alone);
                if alone.uses_wasm_modules || !alone.wasm_added.is_empty() {
                    return None;
                }
                if let Some(route) = route {
                    crate::xds::canonical::route_entry(&route, &mut bytes);
                }
                // Routes next to each other often find the same (rules of one HTTPRoute
                // to one backend): those translated here share one record. A record taken
                // from the last translation is never shared with a route translated now, so
                // sharing one with it still means the route was taken.
                let found = RouteFound::of(alone);
                let found = match made_before.take() {
                    Some(last) if *last == found => last,
                    _ => Arc::new(found),
                };
                made_before = Some(Arc::clone(&found));
                found
            }
        };
        // What the route before it added, added again, would change nothing.
        let as_before = pieces
            .last()
            .is_some_and(|last| Arc::ptr_eq(&last.found, &found) && found.problems.is_empty());
        if !as_before {
            found.add_to(&mut out);
        }
        pieces.push(RoutePiece {
            entry: start..bytes.len(),
            found,
        });
    }
    out.set_compacted(bytes, pieces);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::wasm::WasmModules;

    const LISTENER: &str = "listener~8080";

    fn upstream_ref(name: &str) -> pb::ResourceRef {
        pb::ResourceRef {
            kind: "Upstream".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn upstream(name: &str, grpc: bool) -> (String, pb::Upstream) {
        let functions = if grpc {
            vec![pb::Function {
                name: "pkg.S/M".into(),
                kind: "grpc".into(),
                spec: Some(pb::function::Spec::Grpc(pb::GrpcFunction {
                    service: "pkg.S".into(),
                    method: "M".into(),
                    ..Default::default()
                })),
            }]
        } else {
            Vec::new()
        };
        let upstream = pb::Upstream {
            metadata: Some(pb::Metadata {
                namespace: "default".into(),
                name: name.into(),
                ..Default::default()
            }),
            upstream_type: Some(pb::upstream::UpstreamType::Static(pb::StaticUpstream {
                hosts: vec![pb::HostPort {
                    address: "127.0.0.1".into(),
                    port: 9001,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            grpc_descriptors: if grpc { vec![1, 2, 3] } else { Vec::new() },
            functions,
            ..Default::default()
        };
        (kgw_proto::nats::key("default", name), upstream)
    }

    /// Route `i`: to Upstream `u<i % 5>` (u4 is never defined), now and then over TLS, with
    /// CORS (a second per-filter config beside a transcoder), to two Upstreams, or with a
    /// bad regex (left out).
    fn mk_route(i: usize) -> pb::Route {
        use pb::matcher::PathSpecifier;
        let path = if i % 17 == 5 {
            PathSpecifier::Regex("(".into())
        } else {
            PathSpecifier::Prefix(format!("/r{i}"))
        };
        let destination = |u: usize| pb::Destination {
            upstream: Some(upstream_ref(&format!("u{u}"))),
            filters: Vec::new(),
            tls: (i % 7 == 3).then(|| pb::UpstreamTls {
                sni: "h.example.com".into(),
                ..Default::default()
            }),
        };
        let target = if i % 11 == 4 {
            pb::route_action::Destination::Multi(pb::MultiDestination {
                destinations: (0..2)
                    .map(|k| pb::WeightedDestination {
                        destination: Some(destination((i + k) % 5)),
                        weight: 1,
                    })
                    .collect(),
            })
        } else {
            pb::route_action::Destination::Single(destination(i % 5))
        };
        let cors = i.is_multiple_of(3).then(|| pb::RouteFilter {
            kind: Some(pb::route_filter::Kind::Cors(pb::Cors {
                allow_origins: vec!["https://a.example".into()],
                ..Default::default()
            })),
            ..Default::default()
        });
        pb::Route {
            name: format!("default/route-{}", i / 2),
            matchers: vec![pb::Matcher {
                path_specifier: Some(path),
                ..Default::default()
            }],
            action: Some(pb::route::Action::RouteAction(pb::RouteAction {
                destination: Some(target),
            })),
            filters: cors.into_iter().collect(),
            ..Default::default()
        }
    }

    fn host(routes: impl IntoIterator<Item = usize>) -> pb::VirtualHost {
        pb::VirtualHost {
            name: "all.example".into(),
            domains: vec!["all.example".into()],
            routes: routes.into_iter().map(mk_route).collect(),
        }
    }

    fn whole(vhost: &pb::VirtualHost, inputs: VirtualHostInputs<'_>) -> VirtualHostTranslation {
        let mut translation = virtual_host(vhost, inputs);
        translation.compact();
        translation
    }

    fn assert_same(by_pieces: &VirtualHostTranslation, whole: &VirtualHostTranslation) {
        assert!(by_pieces.pieces.is_some(), "translated by pieces");
        assert_eq!(by_pieces.canonical_bytes(), whole.canonical_bytes());
        assert_eq!(by_pieces.to_virtual_host(), whole.to_virtual_host());
        assert_eq!(by_pieces.found_upstreams, whole.found_upstreams);
        assert_eq!(by_pieces.upstream_tls, whole.upstream_tls);
        assert_eq!(by_pieces.missing_upstreams, whole.missing_upstreams);
        assert_eq!(by_pieces.found_keys, whole.found_keys);
        assert_eq!(by_pieces.problems, whole.problems);
    }

    /// How many routes of `now` share what they found with `before` (taken, not translated).
    fn taken(now: &VirtualHostTranslation, before: &VirtualHostTranslation) -> usize {
        let (Some(now), Some(before)) = (now.pieces.as_deref(), before.pieces.as_deref()) else {
            return 0;
        };
        now.iter()
            .filter(|p| before.iter().any(|b| Arc::ptr_eq(&p.found, &b.found)))
            .count()
    }

    #[test]
    fn a_host_by_pieces_is_the_whole_translation_and_takes_only_what_still_holds() {
        let wasm = WasmModules::default();
        let no_wasm = BTreeMap::new();
        let mut upstreams: BTreeMap<_, _> = (0..4).map(|u| upstream(&format!("u{u}"), u == 1)).collect();
        let none = BTreeSet::new();
        let vhost = host(0..60);
        fn at<'a>(
            upstreams: &'a BTreeMap<String, pb::Upstream>,
            wasm: &'a WasmModules,
            no_wasm: &'a BTreeMap<String, pb::WasmFilter>,
        ) -> VirtualHostInputs<'a> {
            VirtualHostInputs {
                listener: LISTENER,
                upstreams,
                wasm_modules: wasm,
                earlier_wasm: no_wasm,
            }
        }
        let first = compact_virtual_host(&vhost, at(&upstreams, &wasm, &no_wasm), None, &none);
        assert_same(&first, &whole(&vhost, at(&upstreams, &wasm, &no_wasm)));
        assert!(!first.problems.is_empty(), "bad regexes and u4 are reported");

        // A route replaced, one added at the front, one removed: the other 58 are taken.
        let mut changed = host(0..60);
        changed.routes[10] = mk_route(1000);
        changed.routes.insert(0, mk_route(1001));
        changed.routes.remove(30);
        let previous = Previous {
            input: &vhost,
            translation: &first,
            same: None,
        };
        let second = compact_virtual_host(&changed, at(&upstreams, &wasm, &no_wasm), Some(previous), &none);
        assert_same(&second, &whole(&changed, at(&upstreams, &wasm, &no_wasm)));
        assert_eq!(taken(&second, &first), 58);

        // u4 appears: the routes that named it (missing) are translated again, as are those
        // naming u1 when it is stale (its gRPC methods changed), the others taken.
        upstreams.extend([upstream("u4", false), upstream("u1", false)]);
        let stale = BTreeSet::from([kgw_proto::nats::key("default", "u1")]);
        let previous = Previous {
            input: &changed,
            translation: &second,
            same: None,
        };
        let third = compact_virtual_host(&changed, at(&upstreams, &wasm, &no_wasm), Some(previous), &stale);
        assert_same(&third, &whole(&changed, at(&upstreams, &wasm, &no_wasm)));
        let naming = |u: &[&str]| {
            let keys: Vec<String> = u.iter().map(|u| kgw_proto::nats::key("default", u)).collect();
            changed
                .routes
                .iter()
                .filter(|r| {
                    let mut alone = VirtualHostTranslation::default();
                    translate_route(r, "all.example", at(&upstreams, &wasm, &no_wasm), &mut alone);
                    keys.iter().any(|k| alone.found_keys.contains(k))
                })
                .count()
        };
        assert_eq!(taken(&third, &second), changed.routes.len() - naming(&["u1", "u4"]));
    }

    #[test]
    fn routes_next_to_each_other_finding_the_same_share_one_record() {
        let wasm = WasmModules::default();
        let no_wasm = BTreeMap::new();
        let upstreams: BTreeMap<_, _> = (0..4).map(|u| upstream(&format!("u{u}"), false)).collect();
        let inputs = VirtualHostInputs {
            listener: LISTENER,
            upstreams: &upstreams,
            wasm_modules: &wasm,
            earlier_wasm: &no_wasm,
        };
        let none = BTreeSet::new();
        // Forty routes like route 0 (to u0, with CORS), each its own name and path.
        let mut vhost = host([]);
        vhost.routes = (0..40)
            .map(|k| {
                let mut route = mk_route(0);
                route.name = format!("default/same-{k}");
                route.matchers[0].path_specifier = Some(pb::matcher::PathSpecifier::Prefix(format!("/s{k}")));
                route
            })
            .collect();
        let first = compact_virtual_host(&vhost, inputs, None, &none);
        assert_same(&first, &whole(&vhost, inputs));
        let records = |t: &VirtualHostTranslation| {
            let pieces = t.pieces.as_deref().unwrap_or_default();
            1 + pieces
                .windows(2)
                .filter(|w| !Arc::ptr_eq(&w[0].found, &w[1].found))
                .count()
        };
        assert_eq!(records(&first), 1);

        // One route in the middle to u1 now, one to u4 (missing) at the end: by pieces as whole.
        let previous = vhost.clone();
        vhost.routes[20] = mk_route(1);
        vhost.routes.push(mk_route(4));
        let before = Previous {
            input: &previous,
            translation: &first,
            same: None,
        };
        let second = compact_virtual_host(&vhost, inputs, Some(before), &none);
        assert_same(&second, &whole(&vhost, inputs));
        assert!(second.found_upstreams.len() > first.found_upstreams.len());
        assert!(!second.missing_upstreams.is_empty());
        // The routes before the one changed, the changed one, those after, the added one.
        assert_eq!(records(&second), 4);
        // Sharing a record with the last translation still means taken: 39 of 41 were.
        assert_eq!(taken(&second, &first), 39);
    }

    #[test]
    fn a_small_host_or_one_running_wasm_is_translated_whole() {
        let wasm = WasmModules::default();
        let no_wasm = BTreeMap::new();
        let upstreams = BTreeMap::new();
        let inputs = VirtualHostInputs {
            listener: LISTENER,
            upstreams: &upstreams,
            wasm_modules: &wasm,
            earlier_wasm: &no_wasm,
        };
        let small = host(0..PIECES_FROM_ROUTES - 1);
        assert!(
            compact_virtual_host(&small, inputs, None, &BTreeSet::new())
                .pieces
                .is_none()
        );
        let mut with_wasm = host(0..PIECES_FROM_ROUTES + 3);
        with_wasm.routes[2].filters.push(pb::RouteFilter {
            kind: Some(pb::route_filter::Kind::Wasm(pb::WasmFilters {
                filters: vec![pb::WasmFilter {
                    name: "auth".into(),
                    sha256: "s1".into(),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        });
        let translation = compact_virtual_host(&with_wasm, inputs, None, &BTreeSet::new());
        assert!(translation.pieces.is_none());
        assert!(translation.uses_wasm_modules);
    }
}

use envoy_types::pb::google::protobuf::Any;

use super::*;

fn resources(items: &[(&str, u8)]) -> TypeResources {
    let items: BTreeMap<String, Any> = items
        .iter()
        .map(|(name, byte)| {
            let any = Any {
                type_url: "t".into(),
                value: vec![*byte],
            };
            (name.to_string(), any)
        })
        .collect();
    TypeResources::new(items)
}

fn request<'a>(
    subscribe: &'a [String],
    unsubscribe: &'a [String],
    initial: &'a BTreeMap<String, String>,
) -> SubscriptionRequest<'a> {
    SubscriptionRequest {
        subscribe,
        unsubscribe,
        initial_versions: initial,
    }
}

/// Sends `change` and takes the response back, as the stream does before an answer.
fn send(subscription: &mut Subscription, change: &Change) {
    subscription.sent(InFlight {
        nonce: "1".into(),
        system_version: "v".into(),
        change: change.clone(),
        push: tracing::Span::none(),
    });
    subscription.in_flight = None;
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn updated(change: &Change) -> Vec<&str> {
    change.updated.keys().map(String::as_str).collect()
}

fn removed(change: &Change) -> Vec<&str> {
    change.removed.iter().map(String::as_str).collect()
}

#[test]
fn wildcard_sends_what_changed_and_removes_what_is_gone() {
    let none = BTreeMap::new();
    let mut clusters = Subscription::default();
    clusters.update(request(&[], &[], &none));
    let first = clusters.next_change(&resources(&[("a", 1), ("b", 1)])).expect("first");
    assert_eq!(updated(&first), ["a", "b"]);
    send(&mut clusters, &first);
    clusters.acknowledged(first);
    assert_eq!(clusters.next_change(&resources(&[("a", 1), ("b", 1)])), None);
    let next = clusters
        .next_change(&resources(&[("a", 2), ("c", 1)]))
        .expect("a change");
    assert_eq!((updated(&next), removed(&next)), (vec!["a", "c"], vec!["b"]));
}

#[test]
fn named_subscriptions_learn_of_missing_names_once() {
    let none = BTreeMap::new();
    let mut routes = Subscription::default();
    routes.update(request(&names(&["r1", "missing"]), &[], &none));
    let first = routes.next_change(&resources(&[("r1", 1), ("r2", 1)])).expect("first");
    assert_eq!((updated(&first), removed(&first)), (vec!["r1"], vec!["missing"]));
    send(&mut routes, &first);
    routes.acknowledged(first);
    assert_eq!(routes.next_change(&resources(&[("r1", 1), ("r2", 1)])), None);
    routes.update(request(&[], &names(&["r1"]), &none));
    assert_eq!(routes.next_change(&resources(&[("r1", 2)])), None, "unsubscribed");
}

#[test]
fn a_reconnecting_envoy_gets_only_what_it_lacks() {
    let versions = resources(&[("a", 1), ("b", 1)]).item_versions;
    let initial: BTreeMap<String, String> = [
        ("a".to_string(), versions["a"].clone()),
        ("old".to_string(), "x".to_string()),
    ]
    .into();
    let mut clusters = Subscription::default();
    clusters.update(request(&names(&["*"]), &[], &initial));
    let change = clusters.next_change(&resources(&[("a", 1), ("b", 1)])).expect("change");
    assert_eq!((updated(&change), removed(&change)), (vec!["b"], vec!["old"]));
}

#[test]
fn a_rejected_change_waits_for_a_new_snapshot() {
    let none = BTreeMap::new();
    let mut endpoints = Subscription::default();
    endpoints.update(request(&names(&["e"]), &[], &none));
    let bad = endpoints.next_change(&resources(&[("e", 1)])).expect("first");
    send(&mut endpoints, &bad);
    endpoints.rejected(bad);
    assert_eq!(endpoints.next_change(&resources(&[("e", 1)])), None);
    assert!(endpoints.next_change(&resources(&[("e", 2)])).is_some());
}

/// Virtual hosts of two tables, `t` and `u`; `t/<host>` resolves to `t/a` for host `a`.
struct Hosts(TypeResources);

impl Served for Hosts {
    fn versions(&self) -> &crate::xds::chunked::ChunkMap<String> {
        &self.0.item_versions
    }

    fn lookup(&self, name: &str) -> Lookup<'_> {
        match name {
            "t" | "u" | "empty" => Lookup::Namespace,
            "t/a" | "t/a.example" => Lookup::Alias(Some("t/a")),
            _ => Lookup::Alias(None),
        }
    }

    fn empty_namespaces(&self) -> Vec<&str> {
        vec!["empty"]
    }
}

fn hosts(a: u8) -> Hosts {
    Hosts(resources(&[("t/a", a), ("t/b", 1), ("u/a", 1)]))
}

#[test]
fn a_namespace_brings_its_resources_and_their_changes_only() {
    let none = BTreeMap::new();
    let mut vhosts = Subscription::namespaced();
    vhosts.update(request(&names(&["t"]), &[], &none));
    let first = vhosts.next_change(&hosts(1)).expect("first");
    assert_eq!((updated(&first), removed(&first)), (vec!["t/a", "t/b"], vec![]));
    send(&mut vhosts, &first);
    vhosts.acknowledged(first);
    assert_eq!(vhosts.next_change(&hosts(1)), None);
    let changed = vhosts.next_change(&hosts(2)).expect("t/a changed");
    assert_eq!(updated(&changed), ["t/a"]);
    let gone = vhosts
        .next_change(&Hosts(resources(&[("t/a", 1), ("u/a", 1)])))
        .expect("t/b gone");
    assert_eq!((updated(&gone), removed(&gone)), (vec![], vec!["t/b"]));
}

#[test]
fn on_demand_names_are_answered_once_by_alias_or_without_a_body() {
    let none = BTreeMap::new();
    // A host Envoy lacks: its virtual host, with the requested name as an alias.
    let mut lacking = Subscription::namespaced();
    lacking.update(request(&names(&["t/a.example"]), &[], &none));
    let answer = lacking.next_change(&hosts(1)).expect("an answer");
    assert_eq!(updated(&answer), ["t/a"]);
    assert_eq!(answer.aliases["t/a"], BTreeSet::from(["t/a.example".to_string()]));
    send(&mut lacking, &answer);
    lacking.acknowledged(answer);
    assert_eq!(lacking.next_change(&hosts(1)), None, "answered once");

    // An Envoy that has it (a route miss asks too), or a host nothing matches: no body.
    let mut vhosts = Subscription::namespaced();
    vhosts.update(request(&names(&["t"]), &[], &none));
    let first = vhosts.next_change(&hosts(1)).expect("first");
    send(&mut vhosts, &first);
    vhosts.acknowledged(first);
    vhosts.update(request(&names(&["t/a.example", "t/nowhere"]), &[], &none));
    let answer = vhosts.next_change(&hosts(1)).expect("an answer");
    assert!(answer.updated.is_empty() && answer.removed.is_empty(), "{answer:?}");
    assert_eq!(
        answer.bodiless,
        BTreeSet::from(["t/a.example".to_string(), "t/nowhere".to_string()])
    );
    send(&mut vhosts, &answer);
    vhosts.acknowledged(answer);
    assert_eq!(vhosts.next_change(&hosts(1)), None, "answered once");
    // Asked again after a change: the new version, by alias.
    vhosts.update(request(&names(&["t/a.example"]), &[], &none));
    let again = vhosts.next_change(&hosts(2)).expect("again");
    assert_eq!(updated(&again), ["t/a"]);
    assert_eq!(again.aliases["t/a"], BTreeSet::from(["t/a.example".to_string()]));
}

#[test]
fn an_empty_namespace_is_told_through_a_removed_name() {
    let none = BTreeMap::new();
    let mut vhosts = Subscription::namespaced();
    vhosts.update(request(&names(&["empty"]), &[], &none));
    let first = vhosts.next_change(&hosts(1)).expect("first");
    assert_eq!((updated(&first), removed(&first)), (vec![], vec!["empty/"]));
    send(&mut vhosts, &first);
    vhosts.acknowledged(first);
    assert_eq!(vhosts.next_change(&hosts(1)), None);
}

#[test]
fn envoy_s_vhds_wildcard_outlives_its_on_demand_requests() {
    let none = BTreeMap::new();
    let mut vhosts = Subscription::namespaced();
    vhosts.update(request(&[], &[], &none));
    let first = vhosts.next_change(&hosts(1)).expect("first");
    assert_eq!(
        (updated(&first), removed(&first)),
        (vec!["t/a", "t/b", "u/a"], vec!["empty/"])
    );
    send(&mut vhosts, &first);
    vhosts.acknowledged(first);
    vhosts.update(request(&names(&["t/a.example"]), &[], &none));
    let answer = vhosts.next_change(&hosts(1)).expect("answer");
    assert_eq!(answer.bodiless, BTreeSet::from(["t/a.example".to_string()]));
    send(&mut vhosts, &answer);
    vhosts.acknowledged(answer);
    let changed = vhosts.next_change(&hosts(2)).expect("still every host");
    assert_eq!(updated(&changed), ["t/a"]);
    assert!(changed.aliases.is_empty());
}

#[test]
fn unsubscribing_a_namespace_forgets_its_resources() {
    let none = BTreeMap::new();
    let mut vhosts = Subscription::namespaced();
    vhosts.update(request(&names(&["t", "u"]), &[], &none));
    let first = vhosts.next_change(&hosts(1)).expect("first");
    send(&mut vhosts, &first);
    vhosts.acknowledged(first);
    vhosts.update(request(&[], &names(&["u"]), &none));
    let next = vhosts.next_change(&Hosts(resources(&[("t/a", 1), ("t/b", 1)])));
    assert_eq!(next, None, "u/a is not Envoy's any more: nothing to remove");
}

#[test]
fn naming_resources_ends_a_legacy_wildcard_but_not_an_explicit_one() {
    let none = BTreeMap::new();
    let mut legacy = Subscription::default();
    legacy.update(request(&[], &[], &none));
    legacy.update(request(&names(&["a"]), &[], &none));
    let change = legacy.next_change(&resources(&[("a", 1), ("b", 1)])).expect("a");
    assert_eq!(updated(&change), ["a"]);

    let mut explicit = Subscription::default();
    explicit.update(request(&names(&["*"]), &[], &none));
    explicit.update(request(&names(&["a"]), &[], &none));
    let change = explicit.next_change(&resources(&[("a", 1), ("b", 1)])).expect("all");
    assert_eq!(updated(&change), ["a", "b"]);
}

//! The Proxies as bucket `kgw_proxies` holds them: a head per Proxy and a value per virtual
//! host (the layout in `kgw_proto::nats`). A change to one virtual host is one small event,
//! reported as that virtual host's change ([`ProxyChange::VirtualHosts`]): the translation
//! takes it from there without the whole Proxy. Whole Proxies are assembled only when asked
//! (a head changed, the debug service).
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use kgw_common::{
    bus::KvEvent,
    proxy_parts::{self, PartsSum},
};
use kgw_proto::{
    nats::{PageKind, page_key, page_of, vhost_part_head, vhost_part_key},
    shrink::ShrinkDecoded as _,
    v1::{PageIndex, Proxy, RoutePage, VirtualHost, VirtualHostPart},
};
use prost::Message as _;

use crate::problem::Problem;

mod pages;

pub use pages::SameRoutes;

/// A virtual host as the store hands it on: its part, and for a host in pages, which of its
/// routes are copies of the part handed on before.
#[derive(Clone, Debug)]
pub struct HostPart {
    pub part: Arc<VirtualHostPart>,
    pub same: Option<Arc<SameRoutes>>,
}

impl From<Arc<VirtualHostPart>> for HostPart {
    fn from(part: Arc<VirtualHostPart>) -> Self {
        Self { part, same: None }
    }
}

/// A virtual host of a Proxy: its listener's name and its own.
pub type VirtualHostId = (String, String);

/// What changed of one Proxy in a batch of events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyChange {
    /// Its head is gone: the Proxy is not served.
    Removed,
    /// Its head is new or changed (or the bucket was read again): all of it.
    Whole,
    /// Only these virtual hosts were added, edited or removed.
    VirtualHosts(BTreeSet<VirtualHostId>),
}

/// Heads and parts as read.
#[derive(Default)]
struct Stored {
    heads: BTreeMap<String, Arc<Proxy>>,
    /// Head key → part key → part (a host in pages with its routes: see [`pages`]).
    parts: BTreeMap<String, BTreeMap<String, Arc<VirtualHostPart>>>,
    /// The hosts in pages and their pages.
    pages: pages::Pages,
    /// Part key → which routes of the host in pages handed on last are copies.
    same: BTreeMap<String, Arc<SameRoutes>>,
    /// Counts the batches of events that changed something.
    generation: u64,
    /// Head key → the generation that last changed its head or a part of it.
    changed_at: BTreeMap<String, u64>,
    /// Head key → the problems of its last translation and the generation it translated.
    served: BTreeMap<String, (u64, Arc<Vec<Problem>>)>,
    /// Values left out in the current `apply`, per reason.
    rejected: BTreeMap<Rejected, u64>,
    /// Part key → the sum of the values of the host held (its part, and its pages when in
    /// pages: `proxy_parts::PartsSum`).
    sums: BTreeMap<String, PartsSum>,
    /// Head key → the sum of its hosts' values, kept with `sums`: with the head's value, the
    /// digest of the Proxy held.
    head_sums: BTreeMap<String, PartsSum>,
}

/// Why a value of `kgw_proxies` was left out (counted in `kgw_controller_kv_values_rejected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejected {
    /// It does not decode as the message its key says.
    Undecodable,
    /// A virtual host under another key than its own.
    Misplaced,
    /// A virtual host in pages names a page not read: it waits, and its host stays as it
    /// was until the page arrives.
    MissingPage,
}

impl Rejected {
    /// The metric's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Undecodable => "undecodable",
            Rejected::Misplaced => "misplaced",
            Rejected::MissingPage => "missing_page",
        }
    }
}

/// What the controller can say of the problems of a Proxy it serves
/// ([`ProxiesView::served_problems`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ServedProblems {
    /// It translated what it holds, and holds what the digest names: these problems.
    Found(Arc<Vec<Problem>>),
    /// It holds another state, or has not translated what it holds.
    NotYet,
}

impl Stored {
    fn assemble(&self, head: &str) -> Option<Proxy> {
        let proxy = self.heads.get(head)?;
        let parts = self.parts.get(head).into_iter().flat_map(|parts| parts.values());
        Some(proxy_parts::assemble(proxy, parts.map(Arc::as_ref)))
    }
}

/// Heads and parts as read (see the module doc). Readers outside the actor see them
/// through a [`ProxiesView`].
#[derive(Default)]
pub struct ProxyStore {
    stored: Arc<RwLock<Stored>>,
    /// What the last `apply` left out, per reason.
    rejected: BTreeMap<Rejected, u64>,
}

/// A reader's view of a [`ProxyStore`]: the whole Proxies, assembled when asked.
#[derive(Clone, Default)]
pub struct ProxiesView {
    stored: Arc<RwLock<Stored>>,
}

impl std::fmt::Debug for ProxiesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

fn read(stored: &RwLock<Stored>) -> std::sync::RwLockReadGuard<'_, Stored> {
    stored.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProxiesView {
    /// The keys of the Proxies (those with a head).
    pub fn keys(&self) -> Vec<String> {
        read(&self.stored).heads.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        read(&self.stored).heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole Proxy under `key`.
    pub fn get(&self, key: &str) -> Option<Proxy> {
        // The parts are shared: copied out under the lock, assembled after.
        let (head, parts) = {
            let stored = read(&self.stored);
            let head = Arc::clone(stored.heads.get(key)?);
            let parts: Vec<Arc<VirtualHostPart>> = stored
                .parts
                .get(key)
                .into_iter()
                .flat_map(|parts| parts.values().cloned())
                .collect();
            (head, parts)
        };
        Some(proxy_parts::assemble(&head, parts.iter().map(Arc::as_ref)))
    }

    /// The problems of the last translation of the Proxy under `key`, if that translation
    /// was of what the store holds now, and that is what `digest`
    /// ([`proxy_parts::digest`]) names: the values the asker wrote.
    pub fn served_problems(&self, key: &str, digest: &str) -> ServedProblems {
        // The sum of the values held is kept as they are read: only the head is encoded.
        let held = {
            let stored = read(&self.stored);
            let Some((generation, problems)) = stored.served.get(key) else {
                return ServedProblems::NotYet;
            };
            if stored.changed_at.get(key) != Some(generation) {
                return ServedProblems::NotYet;
            }
            let Some(head) = stored.heads.get(key) else {
                return ServedProblems::NotYet;
            };
            let sum = stored.head_sums.get(key).copied().unwrap_or_default();
            (Arc::clone(problems), Arc::clone(head), sum)
        };
        let (problems, head, sum) = held;
        if sum.digest(&head.encode_to_vec()) == digest {
            ServedProblems::Found(problems)
        } else {
            ServedProblems::NotYet
        }
    }

    /// Every whole Proxy, by key.
    pub fn all(&self) -> BTreeMap<String, Proxy> {
        self.keys()
            .into_iter()
            .filter_map(|key| Some((key.clone(), self.get(&key)?)))
            .collect()
    }
}

impl ProxyStore {
    /// The values left out by the last [`apply`](Self::apply), per reason (for the metrics).
    pub fn take_rejected(&mut self) -> BTreeMap<Rejected, u64> {
        std::mem::take(&mut self.rejected)
    }

    /// What readers outside the actor see.
    pub fn view(&self) -> ProxiesView {
        ProxiesView {
            stored: Arc::clone(&self.stored),
        }
    }

    /// The keys of the Proxies (those with a head).
    pub fn keys(&self) -> Vec<String> {
        read(&self.stored).heads.keys().cloned().collect()
    }

    /// The head of the Proxy under `key` (the Proxy without its virtual hosts).
    pub fn head(&self, key: &str) -> Option<Arc<Proxy>> {
        read(&self.stored).heads.get(key).cloned()
    }

    /// The whole Proxy under `key`, assembled.
    pub fn assemble(&self, key: &str) -> Option<Proxy> {
        read(&self.stored).assemble(key)
    }

    /// The virtual host `name` of listener `listener` of the Proxy under `key`.
    pub fn virtual_host(&self, key: &str, listener: &str, name: &str) -> Option<HostPart> {
        let stored = read(&self.stored);
        let part_key = vhost_part_key(key, listener, name);
        let part = stored.parts.get(key)?.get(&part_key).cloned()?;
        Some(HostPart {
            part,
            same: stored.same.get(&part_key).cloned(),
        })
    }

    /// Calls `f` with each virtual host of each Proxy (a scan of everything: for rare
    /// events, such as an Upstream or a WASM module that changed).
    pub fn for_each_virtual_host(&self, mut f: impl FnMut(&str, &VirtualHost)) {
        let stored = read(&self.stored);
        for (head, parts) in &stored.parts {
            if !stored.heads.contains_key(head) {
                continue;
            }
            for part in parts.values() {
                if let Some(vhost) = &part.virtual_host {
                    f(head, vhost);
                }
            }
        }
    }

    /// The heads, by key.
    pub fn heads(&self) -> BTreeMap<String, Arc<Proxy>> {
        read(&self.stored).heads.clone()
    }

    /// The translation of the Proxy under `key`, of what the store holds now, found
    /// `problems` (`None`: it is not served).
    pub fn record_served(&mut self, key: &str, problems: Option<Vec<Problem>>) {
        let mut stored = self.stored.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match problems {
            Some(problems) => {
                let generation = stored.changed_at.get(key).copied().unwrap_or_default();
                stored.served.insert(key.to_string(), (generation, Arc::new(problems)));
            }
            None => {
                stored.served.remove(key);
            }
        }
    }

    /// Applies `events` (in order) and returns what changed, by Proxy key.
    pub fn apply(&mut self, events: Vec<KvEvent>) -> BTreeMap<String, ProxyChange> {
        let mut stored = self.stored.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before: BTreeSet<String> = stored.heads.keys().cloned().collect();
        let mut changes: BTreeMap<String, ProxyChange> = BTreeMap::new();
        let whole = |changes: &mut BTreeMap<String, ProxyChange>, head: String| {
            changes.insert(head, ProxyChange::Whole);
        };
        for event in events {
            match event {
                KvEvent::Full(all) => {
                    for head in stored.heads.keys() {
                        whole(&mut changes, head.clone());
                    }
                    stored.heads.clear();
                    stored.parts.clear();
                    stored.sums.clear();
                    stored.head_sums.clear();
                    stored.pages.clear();
                    stored.same.clear();
                    // Pages first, as a writer puts them: each host in pages is then handed
                    // on at its part, not tried again at each of its pages.
                    let (pages, others): (Vec<_>, Vec<_>) =
                        all.into_iter().partition(|(key, _)| page_of(key).is_some());
                    for (key, value) in pages.into_iter().chain(others) {
                        if let Some(head) = put(&mut stored, key, &value) {
                            whole(&mut changes, head.0);
                        }
                    }
                }
                KvEvent::Put(key, value, _) => match put(&mut stored, key, &value) {
                    Some((head, None)) => whole(&mut changes, head),
                    Some((head, Some(hosts))) => add_hosts(&mut changes, head, hosts),
                    None => {}
                },
                KvEvent::Delete(key, _) => match delete(&mut stored, key) {
                    Some((head, None)) => whole(&mut changes, head),
                    Some((head, Some(hosts))) => add_hosts(&mut changes, head, hosts),
                    None => {}
                },
            }
        }
        self.rejected = std::mem::take(&mut stored.rejected);
        if !changes.is_empty() {
            stored.generation += 1;
            let generation = stored.generation;
            for head in changes.keys() {
                stored.changed_at.insert(head.clone(), generation);
            }
        }
        changes
            .into_iter()
            .filter_map(|(head, change)| {
                if !stored.heads.contains_key(&head) {
                    // Gone, or parts waiting for their head.
                    return before.contains(&head).then_some((head, ProxyChange::Removed));
                }
                if !before.contains(&head) {
                    return Some((head, ProxyChange::Whole));
                }
                Some((head, change))
            })
            .collect()
    }
}

/// Adds virtual hosts to the change of `head` (a whole change covers them).
fn add_hosts(changes: &mut BTreeMap<String, ProxyChange>, head: String, hosts: Vec<VirtualHostId>) {
    match changes
        .entry(head)
        .or_insert_with(|| ProxyChange::VirtualHosts(BTreeSet::new()))
    {
        ProxyChange::VirtualHosts(set) => set.extend(hosts),
        ProxyChange::Whole | ProxyChange::Removed => {}
    }
}

/// The virtual host a part is.
fn id_of(part: &VirtualHostPart) -> Option<VirtualHostId> {
    let vhost = part.virtual_host.as_ref()?;
    Some((part.listener.clone(), vhost.name.clone()))
}

/// Stores one value. `None`: nothing changed; else the head it belongs to and, for a part,
/// the virtual hosts it changed (`None`: the head changed).
fn put(stored: &mut Stored, key: String, value: &Bytes) -> Option<(String, Option<Vec<VirtualHostId>>)> {
    if let Some((vhost_key, kind, id)) = page_of(&key) {
        let head = vhost_part_head(vhost_key)?.to_string();
        let waiting = match kind {
            PageKind::Routes => {
                let mut page = decode::<RoutePage>(stored, &key, value)?;
                page.shrink_decoded();
                stored.pages.read_routes(vhost_key, id, page)
            }
            PageKind::Index => {
                let index = decode::<PageIndex>(stored, &key, value)?;
                stored.pages.read_index(vhost_key, id, index)
            }
        }?;
        let vhost_key = vhost_key.to_string();
        // Reported when the part was read; the writer puts every page before its part.
        return hand_on(stored, head, vhost_key, waiting, false);
    }
    match vhost_part_head(&key).map(str::to_string) {
        Some(head) => {
            let mut part = decode::<VirtualHostPart>(stored, &key, value)?;
            part.shrink_decoded();
            // A part is found by its listener and name: one stored under another key would
            // be a writer's bug, and is left out (assembled or not, the same Proxy).
            let expected = part
                .virtual_host
                .as_ref()
                .map(|vhost| vhost_part_key(&head, &part.listener, &vhost.name));
            if expected.as_deref() != Some(key.as_str()) {
                tracing::error!(
                    key,
                    "a virtual host of kgw_proxies under another key than its own; ignored"
                );
                stored.reject(Rejected::Misplaced);
                return None;
            }
            if !part.index_pages.is_empty() {
                if stored.pages.is_written(&key, &part) {
                    return None;
                }
                return hand_on(stored, head, key, part, true);
            }
            stored.pages.forget(&key);
            stored.same.remove(&key);
            let mut sum = PartsSum::default();
            sum.add(&key, value);
            stored.hold_sum(&head, &key, Some(sum));
            let parts = stored.parts.entry(head.clone()).or_default();
            if parts.get(&key).is_some_and(|old| **old == part) {
                return None;
            }
            let mut ids: Vec<VirtualHostId> = id_of(&part).into_iter().collect();
            if let Some(old) = parts.insert(key, Arc::new(part)) {
                ids.extend(id_of(&old));
            }
            Some((head, Some(ids)))
        }
        None => {
            let proxy = decode::<Proxy>(stored, &key, value)?;
            if stored.heads.get(&key).is_some_and(|old| **old == proxy) {
                return None;
            }
            stored.heads.insert(key.clone(), Arc::new(proxy));
            Some((key, None))
        }
    }
}

/// A part in pages handed on once its every page is read (until then it waits, and the
/// host stays as it was; `report` says so in the log and the metrics).
fn hand_on(
    stored: &mut Stored,
    head: String,
    key: String,
    part: VirtualHostPart,
    report: bool,
) -> Option<(String, Option<Vec<VirtualHostId>>)> {
    let previous = stored.parts.get(&head).and_then(|parts| parts.get(&key)).cloned();
    let (whole, same) = match stored.pages.resolve(&key, part, previous.as_ref()) {
        Ok(resolved) => resolved,
        Err(missing) => {
            if report {
                // A writer puts pages before the part that names them: a part read before
                // its pages is a writer's bug or a page lost.
                tracing::warn!(
                    key,
                    page = page_key(&key, missing.kind, missing.id),
                    "a virtual host of kgw_proxies names a page not read; the host stays as it was until the page arrives"
                );
                stored.reject(Rejected::MissingPage);
            }
            return None;
        }
    };
    match same {
        Some(same) => stored.same.insert(key.clone(), Arc::new(same)),
        None => stored.same.remove(&key),
    };
    let sum = stored.pages.paged(&key).map(|paged| paged.sum(&key));
    stored.hold_sum(&head, &key, sum);
    let mut ids: Vec<VirtualHostId> = id_of(&whole).into_iter().collect();
    ids.extend(previous.as_deref().and_then(id_of));
    stored
        .parts
        .entry(head.clone())
        .or_default()
        .insert(key, Arc::new(whole));
    Some((head, Some(ids)))
}

fn delete(stored: &mut Stored, key: String) -> Option<(String, Option<Vec<VirtualHostId>>)> {
    if let Some((vhost_key, kind, id)) = page_of(&key) {
        stored.pages.delete_page(vhost_key, kind, id);
        return None;
    }
    match vhost_part_head(&key).map(str::to_string) {
        Some(head) => {
            stored.pages.forget(&key);
            stored.same.remove(&key);
            stored.hold_sum(&head, &key, None);
            let parts = stored.parts.get_mut(&head)?;
            let old = parts.remove(&key)?;
            if parts.is_empty() {
                stored.parts.remove(&head);
            }
            Some((head, Some(id_of(&old).into_iter().collect())))
        }
        None => {
            stored.heads.remove(&key)?;
            Some((key, None))
        }
    }
}

fn decode<T: prost::Message + Default>(stored: &mut Stored, key: &str, bytes: &[u8]) -> Option<T> {
    match T::decode(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(key, %error, "cannot decode a value of kgw_proxies; ignored");
            stored.reject(Rejected::Undecodable);
            None
        }
    }
}

impl Stored {
    /// The host under `part_key` of the Proxy under `head` is now held as `sum` (`None`:
    /// no longer held).
    fn hold_sum(&mut self, head: &str, part_key: &str, sum: Option<PartsSum>) {
        let old = match sum {
            Some(sum) => self.sums.insert(part_key.to_string(), sum),
            None => self.sums.remove(part_key),
        };
        let head_sum = self.head_sums.entry(head.to_string()).or_default();
        if let Some(old) = old {
            head_sum.remove_sum(&old);
        }
        if let Some(sum) = sum {
            head_sum.add_sum(&sum);
        }
        if *head_sum == PartsSum::default() {
            // No host held (or none left): nothing kept for a Proxy gone.
            self.head_sums.remove(head);
        }
    }

    fn reject(&mut self, reason: Rejected) {
        *self.rejected.entry(reason).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use kgw_proto::v1::{HttpListener, Listener, Route, VirtualHost, listener::ListenerType};
    use prost::Message as _;

    use super::*;

    fn proxy(hosts: &[(&str, &str)]) -> Proxy {
        let virtual_hosts = hosts
            .iter()
            .map(|(host, route)| VirtualHost {
                name: host.to_string(),
                domains: vec![host.to_string()],
                routes: vec![Route {
                    name: route.to_string(),
                    ..Default::default()
                }],
            })
            .collect();
        Proxy {
            listeners: vec![Listener {
                name: "listener~8080".into(),
                listener_type: Some(ListenerType::HttpListener(HttpListener { virtual_hosts })),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn values(key: &str, proxy: &Proxy) -> BTreeMap<String, Bytes> {
        let (head, parts) = proxy_parts::split(key, proxy);
        let mut out = BTreeMap::from([(key.to_string(), Bytes::from(head.encode_to_vec()))]);
        out.extend(parts.into_iter().map(|(k, p)| (k, Bytes::from(p.encode_to_vec()))));
        out
    }

    fn put(key: &str, value: &Bytes) -> KvEvent {
        KvEvent::Put(key.to_string(), value.clone(), None)
    }

    fn hosts(ids: &[(&str, &str)]) -> ProxyChange {
        ProxyChange::VirtualHosts(ids.iter().map(|(l, n)| (l.to_string(), n.to_string())).collect())
    }

    #[test]
    fn a_full_read_then_one_host_at_a_time() {
        let mut store = ProxyStore::default();
        let first = proxy(&[("a", "r1"), ("b", "r2")]);
        let changed = store.apply(vec![KvEvent::Full(values("default.gw", &first))]);
        assert_eq!(
            changed,
            BTreeMap::from([("default.gw".to_string(), ProxyChange::Whole)])
        );
        assert_eq!(store.assemble("default.gw"), Some(first.clone()));

        // One host edited: one part written, that host changes.
        let edited = proxy(&[("a", "r1"), ("b", "r2-edited")]);
        let new_values = values("default.gw", &edited);
        let (key, value) = new_values
            .iter()
            .find(|(k, v)| values("default.gw", &first).get(*k) != Some(*v))
            .expect("one value differs");
        assert_eq!(
            store.apply(vec![put(key, value)]),
            BTreeMap::from([("default.gw".to_string(), hosts(&[("listener~8080", "b")]))])
        );
        assert_eq!(store.view().get("default.gw"), Some(edited));

        // The same value again changes nothing.
        assert!(store.apply(vec![put(key, value)]).is_empty());

        // A host removed: its part deleted.
        let (gone, _) = values("default.gw", &first)
            .into_iter()
            .find(|(k, _)| k.contains("._vh.") && k.ends_with("/a"))
            .expect("host a's key");
        assert_eq!(
            store.apply(vec![KvEvent::Delete(gone, None)]),
            BTreeMap::from([("default.gw".to_string(), hosts(&[("listener~8080", "a")]))])
        );
        assert_eq!(store.assemble("default.gw"), Some(proxy(&[("b", "r2-edited")])));
        assert_eq!(
            store
                .virtual_host("default.gw", "listener~8080", "b")
                .map(|p| p.part.listener.clone()),
            Some("listener~8080".to_string())
        );
    }

    /// A Proxy with host `a` of one route and host `big` of `n` routes.
    fn big_proxy(n: usize, extra: Option<usize>) -> Proxy {
        let mut proxy = proxy(&[("a", "r1"), ("big", "r0")]);
        if let Some(ListenerType::HttpListener(http)) = proxy.listeners[0].listener_type.as_mut() {
            let big = &mut http.virtual_hosts[1];
            big.routes = (0..n)
                .map(|i| Route {
                    name: format!("default/route-{i}/rule-0"),
                    ..Default::default()
                })
                .collect();
            if let Some(at) = extra {
                big.routes.insert(
                    at,
                    Route {
                        name: "default/new/rule-0".into(),
                        ..Default::default()
                    },
                );
            }
        }
        proxy
    }

    /// The events a writer sends to go from `before` to `after`, in its order.
    fn writes(before: &BTreeMap<String, Bytes>, after: &BTreeMap<String, Bytes>) -> Vec<KvEvent> {
        kgw_common::bus::writes_between(before, after)
    }

    /// The Proxy under `default.gw` as assembled, without the head's stamp (the gateway's
    /// hash of the head, which `big_proxy` does not have).
    fn assembled(store: &ProxyStore) -> Option<Proxy> {
        store.assemble("default.gw").map(|proxy| Proxy {
            source_hash: String::new(),
            ..proxy
        })
    }

    #[test]
    fn a_host_in_pages_is_handed_on_whole_once_its_pages_are_read() {
        let mut store = ProxyStore::default();
        let view = store.view();
        let first = proxy_parts::values("default.gw", &big_proxy(200, None));
        assert!(first.keys().any(|k| k.contains("._p.")), "host big is in pages");
        // A full read: the host in pages handed on whole.
        let changed = store.apply(vec![KvEvent::Full(first.clone())]);
        assert_eq!(
            changed,
            BTreeMap::from([("default.gw".to_string(), ProxyChange::Whole)])
        );
        assert_eq!(assembled(&store), Some(big_proxy(200, None)));
        store.record_served("default.gw", Some(Vec::new()));
        let digest = proxy_parts::digests(&first)["default.gw"].clone();
        assert_eq!(
            view.served_problems("default.gw", &digest),
            ServedProblems::Found(Arc::new(Vec::new())),
            "the digest of the values written names the host in pages as held"
        );

        // One route inserted: a route page, an index page, the part, and the pages they
        // replace deleted; host `big` changes once.
        let second = proxy_parts::values("default.gw", &big_proxy(200, Some(100)));
        let events = writes(&first, &second);
        assert!(events.len() <= 8, "{} writes", events.len());
        let base = store
            .virtual_host("default.gw", "listener~8080", "big")
            .expect("big")
            .part;
        let mut seen = Vec::new();
        for event in events {
            seen.push(store.apply(vec![event]));
        }
        // The routes of the pages both parts name are known copies of the previous part's.
        let now = store.virtual_host("default.gw", "listener~8080", "big").expect("big");
        let same = now.same.as_deref().expect("copies recorded");
        assert!(same.relative_to(&base));
        let (old_routes, new_routes) = (
            &base.virtual_host.as_ref().unwrap().routes,
            &now.part.virtual_host.as_ref().unwrap().routes,
        );
        let copied: Vec<usize> = (0..new_routes.len())
            .filter(|&i| same.previous_of(i).is_some())
            .collect();
        assert!(
            copied.len() >= 200 - 2 * kgw_proto::nats::PAGE_ROUTES_MAX,
            "{} copied",
            copied.len()
        );
        assert!(
            copied
                .iter()
                .all(|&i| new_routes[i] == old_routes[same.previous_of(i).unwrap()])
        );
        assert!(same.previous_of(100).is_none(), "the new route is no copy");
        let big = BTreeMap::from([("default.gw".to_string(), hosts(&[("listener~8080", "big")]))]);
        assert_eq!(seen.iter().filter(|c| !c.is_empty()).collect::<Vec<_>>(), vec![&big]);
        assert_eq!(assembled(&store), Some(big_proxy(200, Some(100))));
        store.record_served("default.gw", Some(Vec::new()));
        let digest = proxy_parts::digests(&second)["default.gw"].clone();
        assert_eq!(
            view.served_problems("default.gw", &digest),
            ServedProblems::Found(Arc::new(Vec::new()))
        );

        // A part whose new page is not read yet: the host stays as it was until it is.
        let third = proxy_parts::values("default.gw", &big_proxy(200, None));
        let (pages, rest): (Vec<_>, Vec<_>) = writes(&second, &third)
            .into_iter()
            .partition(|e| matches!(e, KvEvent::Put(k, ..) if kgw_proto::nats::page_of(k).is_some()));
        assert!(!pages.is_empty());
        assert!(store.take_rejected().is_empty());
        assert!(store.apply(rest).is_empty(), "the part waits for its pages");
        assert_eq!(
            store.take_rejected(),
            BTreeMap::from([(Rejected::MissingPage, 1)]),
            "a part read before its pages is counted"
        );
        assert_eq!(assembled(&store), Some(big_proxy(200, Some(100))));
        assert_eq!(store.apply(pages), big);
        assert!(store.take_rejected().is_empty(), "pages arriving are no news");
        assert_eq!(assembled(&store), Some(big_proxy(200, None)));

        // A new page and the part naming it in one batch, as the controller's actor merges
        // one (`coalesce`): the page first, as written, though the part's key comes first.
        // Handed on at once, nothing reported missing.
        let fourth = proxy_parts::values("default.gw", &big_proxy(200, Some(150)));
        let batch = kgw_common::bus::coalesce(writes(&third, &fourth));
        let first_part = batch
            .iter()
            .position(|e| matches!(e, KvEvent::Put(k, ..) if k.ends_with("/big")))
            .expect("the part is put");
        let first_page = batch
            .iter()
            .position(|e| matches!(e, KvEvent::Put(k, ..) if kgw_proto::nats::page_of(k).is_some()))
            .expect("a page is put");
        assert!(first_page < first_part, "the batch puts the pages before their part");
        assert_eq!(store.apply(batch), big);
        assert!(store.take_rejected().is_empty(), "no page is missing in that batch");
        assert_eq!(assembled(&store), Some(big_proxy(200, Some(150))));
        let third = fourth;

        // The same part again changes nothing; the host back to a few routes, inline.
        let (key, value) = third.iter().find(|(k, _)| k.ends_with("/big")).expect("part");
        assert!(store.apply(vec![put(key, value)]).is_empty());
        let small = proxy_parts::values("default.gw", &big_proxy(3, None));
        assert_eq!(store.apply(writes(&third, &small)), big);
        assert_eq!(assembled(&store), Some(big_proxy(3, None)));
    }

    fn problem(message: &str) -> Problem {
        Problem {
            severity: crate::problem::Severity::Warning,
            path: "listener/listener~8080/vhost/a".into(),
            source: None,
            message: message.into(),
        }
    }

    #[test]
    fn served_problems_only_for_the_state_translated_and_named() {
        let mut store = ProxyStore::default();
        let view = store.view();
        let first = values("default.gw", &proxy(&[("a", "r1"), ("b", "r2")]));
        let first_digest = proxy_parts::digests(&first)["default.gw"].clone();
        store.apply(vec![KvEvent::Full(first.clone())]);
        assert_eq!(
            view.served_problems("default.gw", &first_digest),
            ServedProblems::NotYet,
            "not translated"
        );

        store.record_served("default.gw", Some(vec![problem("one")]));
        assert_eq!(
            view.served_problems("default.gw", &first_digest),
            ServedProblems::Found(Arc::new(vec![problem("one")])),
            "the digest of the values the gateway wrote names what the store decoded"
        );
        assert_eq!(view.served_problems("default.gw", "other"), ServedProblems::NotYet);
        assert_eq!(
            view.served_problems("default.other", &first_digest),
            ServedProblems::NotYet
        );

        // A part changes: not translated yet, whatever the digest.
        let edited = values("default.gw", &proxy(&[("a", "r1"), ("b", "r2-edited")]));
        let edited_digest = proxy_parts::digests(&edited)["default.gw"].clone();
        let (key, value) = edited
            .iter()
            .find(|(k, v)| first.get(*k) != Some(*v))
            .expect("a part differs");
        store.apply(vec![put(key, value)]);
        assert_eq!(
            view.served_problems("default.gw", &first_digest),
            ServedProblems::NotYet
        );
        assert_eq!(
            view.served_problems("default.gw", &edited_digest),
            ServedProblems::NotYet
        );
        store.record_served("default.gw", Some(Vec::new()));
        assert_eq!(
            view.served_problems("default.gw", &edited_digest),
            ServedProblems::Found(Arc::new(Vec::new()))
        );
        // The same value again changes nothing: still translated.
        store.apply(vec![put(key, value)]);
        assert_eq!(
            view.served_problems("default.gw", &edited_digest),
            ServedProblems::Found(Arc::new(Vec::new()))
        );
        // Not served any more.
        store.record_served("default.gw", None);
        assert_eq!(
            view.served_problems("default.gw", &edited_digest),
            ServedProblems::NotYet
        );
    }

    #[test]
    fn a_deleted_head_removes_the_proxy_and_late_parts_wait_for_a_head() {
        let mut store = ProxyStore::default();
        let first = proxy(&[("a", "r1")]);
        store.apply(vec![KvEvent::Full(values("default.gw", &first))]);
        let changed = store.apply(vec![KvEvent::Delete("default.gw".into(), None)]);
        assert_eq!(
            changed,
            BTreeMap::from([("default.gw".to_string(), ProxyChange::Removed)])
        );
        assert!(store.view().is_empty());

        // Parts before their head: nothing until the head arrives.
        let other = values("default.other", &proxy(&[("x", "r9")]));
        let (parts, head): (Vec<_>, Vec<_>) = other.iter().partition(|(k, _)| k.contains("._vh."));
        assert!(store.apply(parts.iter().map(|(k, v)| put(k, v)).collect()).is_empty());
        let changed = store.apply(head.iter().map(|(k, v)| put(k, v)).collect());
        assert_eq!(
            changed,
            BTreeMap::from([("default.other".to_string(), ProxyChange::Whole)])
        );
        assert_eq!(store.view().all()["default.other"], proxy(&[("x", "r9")]));
    }
}

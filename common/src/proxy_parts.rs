//! A Proxy in KV as a head and one value per virtual host (the layout in
//! [`kgw_proto::nats`]): the gateway [`split`]s, the controller [`assemble`]s, and
//! `assemble(split(p)) == p` for a Proxy whose virtual hosts are ordered by name, as the
//! gateway makes them.
use std::collections::BTreeMap;

use bytes::Bytes;
use kgw_proto::{
    nats::{PAGED_FROM_ROUTES, PageKind, index_starts, page_id, page_key, page_starts, vhost_part_key},
    v1::{HttpListener, Listener, Proxy, Route, VirtualHost, VirtualHostPart, listener::ListenerType},
};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, fixed64, key_len, message};

/// The head (the Proxy without its virtual hosts) and each virtual host with its key.
pub fn split(head_key: &str, proxy: &Proxy) -> (Proxy, BTreeMap<String, VirtualHostPart>) {
    let mut head = proxy.clone();
    let mut parts = BTreeMap::new();
    for listener in &mut head.listeners {
        let Some(ListenerType::HttpListener(http)) = listener.listener_type.as_mut() else {
            continue;
        };
        for vhost in std::mem::take(&mut http.virtual_hosts) {
            let key = vhost_part_key(head_key, &listener.name, &vhost.name);
            parts.insert(
                key,
                VirtualHostPart {
                    listener: listener.name.clone(),
                    virtual_host: Some(vhost),
                    index_pages: Vec::new(),
                },
            );
        }
    }
    (head, parts)
}

/// The KV values of virtual host `vhost` of listener `listener` of the Proxy under
/// `head_key`, as the gateway writes them: its part under its key, and for a host of
/// [`PAGED_FROM_ROUTES`] routes or more, its routes in route pages and index pages under
/// keys of their own (the layout in [`kgw_proto::nats`]): the part first, then the index
/// pages, then the route pages, each level in order. Encoded from the host as it is: no
/// route is copied.
pub fn encode_virtual_host(head_key: &str, listener: &str, vhost: &VirtualHost) -> Vec<(String, Bytes)> {
    let key = vhost_part_key(head_key, listener, &vhost.name);
    if vhost.routes.len() < PAGED_FROM_ROUTES {
        return vec![(key, encode_part(listener, vhost, &[]))];
    }
    let starts = page_starts(vhost.routes.iter().map(|r| r.name.as_str()));
    let mut pages = Vec::with_capacity(starts.len());
    let mut page_ids = Vec::with_capacity(starts.len());
    for (start, end) in runs(&starts, vhost.routes.len()) {
        let page = encode_page(&vhost.routes[start..end]);
        let id = page_id(&page);
        pages.push((page_key(&key, PageKind::Routes, id), page));
        page_ids.push(id);
    }
    let index_runs = runs(&index_starts(&page_ids), page_ids.len());
    let mut values = Vec::with_capacity(1 + index_runs.len() + pages.len());
    let mut index_ids = Vec::with_capacity(index_runs.len());
    let mut indexes = Vec::with_capacity(index_runs.len());
    for (start, end) in index_runs {
        let index = encode_index(&page_ids[start..end]);
        let id = page_id(&index);
        indexes.push((page_key(&key, PageKind::Index, id), index));
        index_ids.push(id);
    }
    let header = VirtualHost {
        name: vhost.name.clone(),
        domains: vhost.domains.clone(),
        routes: Vec::new(),
    };
    values.push((key, encode_part(listener, &header, &index_ids)));
    values.extend(indexes);
    values.extend(pages);
    values
}

/// Consecutive runs `(start, end)` of `len` items, each beginning at one of `starts`.
fn runs(starts: &[usize], len: usize) -> Vec<(usize, usize)> {
    let ends = starts.iter().skip(1).copied().chain([len]);
    starts.iter().copied().zip(ends).collect()
}

/// One Proxy's values as the gateway writes them: its head under `key` (the Proxy without
/// its virtual hosts, stamped with the hash of its own content), then each virtual host's
/// values ([`encode_virtual_host`]). Encoded from the Proxy as it is: neither it nor a
/// virtual host is copied for this.
pub fn encode_proxy(key: &str, proxy: &Proxy) -> Vec<(String, Bytes)> {
    use prost::Message as _;
    use sha2::{Digest as _, Sha256};
    let mut head = Proxy {
        metadata: proxy.metadata.clone(),
        listeners: proxy.listeners.iter().map(listener_head).collect(),
        source_hash: String::new(),
        backend_client_certificate: proxy.backend_client_certificate.clone(),
    };
    head.source_hash = hex::encode(&Sha256::digest(head.encode_to_vec())[..8]);
    let mut values = vec![(key.to_string(), Bytes::from(head.encode_to_vec()))];
    for listener in &proxy.listeners {
        let Some(ListenerType::HttpListener(http)) = &listener.listener_type else {
            continue;
        };
        for vhost in &http.virtual_hosts {
            values.extend(encode_virtual_host(key, &listener.name, vhost));
        }
    }
    values
}

/// A listener of a Proxy's head: without its virtual hosts.
fn listener_head(listener: &Listener) -> Listener {
    Listener {
        name: listener.name.clone(),
        bind_address: listener.bind_address.clone(),
        bind_port: listener.bind_port,
        listener_type: listener.listener_type.as_ref().map(|t| match t {
            ListenerType::HttpListener(_) => ListenerType::HttpListener(HttpListener {
                virtual_hosts: Vec::new(),
            }),
        }),
        ssl_configurations: listener.ssl_configurations.clone(),
        sources: listener.sources.clone(),
        client_validation: listener.client_validation.clone(),
    }
}

/// Every KV value of the Proxy under `head_key` ([`encode_proxy`]), by key.
pub fn values(head_key: &str, proxy: &Proxy) -> BTreeMap<String, Bytes> {
    encode_proxy(head_key, proxy).into_iter().collect()
}

/// `VirtualHostPart { listener, virtual_host: Some(vhost), index_pages }` encoded, without
/// copying the host into one (the same bytes: fields in order, an empty string left out).
fn encode_part(listener: &str, vhost: &VirtualHost, index_pages: &[u64]) -> Bytes {
    let mut len = message::encoded_len(2, vhost) + fixed64::encoded_len_packed(4, index_pages);
    if !listener.is_empty() {
        len += string_len(1, listener);
    }
    let mut buf = Vec::with_capacity(len);
    if !listener.is_empty() {
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(listener.len() as u64, &mut buf);
        buf.extend_from_slice(listener.as_bytes());
    }
    message::encode(2, vhost, &mut buf);
    fixed64::encode_packed(4, index_pages, &mut buf);
    Bytes::from(buf)
}

/// The encoded length of string field `tag` holding `value`.
fn string_len(tag: u32, value: &str) -> usize {
    key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
}

/// `RoutePage { routes }` encoded from the routes where they are.
fn encode_page(routes: &[Route]) -> Bytes {
    let mut buf = Vec::with_capacity(message::encoded_len_repeated(1, routes));
    for route in routes {
        message::encode(1, route, &mut buf);
    }
    Bytes::from(buf)
}

/// `PageIndex { route_pages }` encoded.
fn encode_index(route_pages: &[u64]) -> Bytes {
    let mut buf = Vec::with_capacity(fixed64::encoded_len_packed(1, route_pages));
    fixed64::encode_packed(1, route_pages, &mut buf);
    Bytes::from(buf)
}

/// The Proxy of `head` with the virtual hosts of `parts` in their listeners, ordered by
/// name. A part naming a listener the head does not have (a head written before the parts
/// of a change reach the reader) is left out until they agree.
pub fn assemble<'a>(head: &Proxy, parts: impl IntoIterator<Item = &'a VirtualHostPart>) -> Proxy {
    let mut proxy = head.clone();
    let mut by_listener: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for part in parts {
        if let Some(vhost) = &part.virtual_host {
            by_listener.entry(part.listener.as_str()).or_default().push(vhost);
        }
    }
    for listener in &mut proxy.listeners {
        let Some(ListenerType::HttpListener(http)) = listener.listener_type.as_mut() else {
            continue;
        };
        let mut vhosts: Vec<_> = by_listener
            .remove(listener.name.as_str())
            .unwrap_or_default()
            .into_iter()
            .cloned()
            .collect();
        vhosts.sort_by(|a, b| a.name.cmp(&b.name));
        http.virtual_hosts = vhosts;
    }
    proxy
}

/// The digest of a Proxy as stored in `kgw_proxies`: hex sha256 over its head's value and
/// the [`PartsSum`] of its other values (each virtual host's part and pages, by key and
/// value). The gateway computes it from the bytes it wrote, the controller from what it
/// holds; equal digests mean the controller holds what the gateway wrote. A sum, not a
/// hash of the values in order, so that both keep it up to date value by value: a change
/// to one host costs a few hashes, not the whole Proxy's bytes.
pub fn digest<'a>(head: &[u8], parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sum = PartsSum::default();
    for (key, value) in parts {
        sum.add(key, value);
    }
    sum.digest(head)
}

/// The sum of a Proxy's values but its head ([`digest`]): each value's sha256 (of its key
/// and bytes, length-prefixed; of its key alone for a page, whose key names its content) as
/// four 64-bit words, added word by word (wrapping). Values are added and taken out in any
/// order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartsSum([u64; 4]);

impl PartsSum {
    /// Adds the value `value` under `key`.
    pub fn add(&mut self, key: &str, value: &[u8]) {
        self.add_leaf(Self::leaf(key, value));
    }

    /// Takes out the value `value` under `key` (added before).
    pub fn remove(&mut self, key: &str, value: &[u8]) {
        self.remove_leaf(Self::leaf(key, value));
    }

    /// Adds the page under `key` (its key names its content: see [`Self::leaf`]).
    pub fn add_page(&mut self, key: &str) {
        self.add_leaf(Self::leaf(key, &[]));
    }

    /// Adds every value of `other`.
    pub fn add_sum(&mut self, other: &PartsSum) {
        self.add_leaf(other.0);
    }

    /// Takes out every value of `other` (added before).
    pub fn remove_sum(&mut self, other: &PartsSum) {
        self.remove_leaf(other.0);
    }

    /// The digest of a Proxy with this sum and the head `head`.
    pub fn digest(&self, head: &[u8]) -> String {
        use sha2::{Digest as _, Sha256};
        let mut hasher = Sha256::new();
        hasher.update((head.len() as u64).to_le_bytes());
        hasher.update(head);
        for word in self.0 {
            hasher.update(word.to_le_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// One value's words. A page's value is left out: its key holds its digest, and the
    /// controller, which takes unchanged pages from the host it holds, has no bytes of them.
    fn leaf(key: &str, value: &[u8]) -> [u64; 4] {
        use sha2::{Digest as _, Sha256};
        let mut hasher = Sha256::new();
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        if kgw_proto::nats::page_of(key).is_none() {
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value);
        }
        let hash = hasher.finalize();
        let mut words = [0_u64; 4];
        for (word, bytes) in words.iter_mut().zip(hash.chunks_exact(8)) {
            let mut eight = [0_u8; 8];
            eight.copy_from_slice(bytes);
            *word = u64::from_le_bytes(eight);
        }
        words
    }

    fn add_leaf(&mut self, leaf: [u64; 4]) {
        for (word, add) in self.0.iter_mut().zip(leaf) {
            *word = word.wrapping_add(add);
        }
    }

    fn remove_leaf(&mut self, leaf: [u64; 4]) {
        for (word, sub) in self.0.iter_mut().zip(leaf) {
            *word = word.wrapping_sub(sub);
        }
    }
}

/// The [`digest`] of every Proxy among `values` (a `kgw_proxies` bucket's keys and values),
/// by head key.
pub fn digests<V: AsRef<[u8]>>(values: &BTreeMap<String, V>) -> BTreeMap<String, String> {
    let mut parts: BTreeMap<&str, Vec<(&str, &[u8])>> = BTreeMap::new();
    for (key, value) in values {
        if let Some(head) = kgw_proto::nats::vhost_part_head(key) {
            parts.entry(head).or_default().push((key.as_str(), value.as_ref()));
        }
    }
    values
        .iter()
        .filter(|(key, _)| kgw_proto::nats::vhost_part_head(key).is_none() && !key.contains(".part."))
        .map(|(key, head)| {
            let own = parts.remove(key.as_str()).unwrap_or_default();
            (key.clone(), digest(head.as_ref(), own))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kgw_proto::v1::{HttpListener, Listener, Route, VirtualHost};

    use super::*;

    fn vhost(name: &str, route: &str) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: vec![name.into()],
            routes: vec![Route {
                name: route.into(),
                ..Default::default()
            }],
        }
    }

    fn http_listener(name: &str, vhosts: Vec<VirtualHost>) -> Listener {
        Listener {
            name: name.into(),
            bind_port: 8080,
            listener_type: Some(ListenerType::HttpListener(HttpListener { virtual_hosts: vhosts })),
            ..Default::default()
        }
    }

    fn proxy() -> Proxy {
        Proxy {
            listeners: vec![
                http_listener(
                    "listener~8080",
                    vec![vhost("a.example", "r1"), vhost("b.example", "r2")],
                ),
                http_listener("listener~8443", vec![vhost("a.example", "r3")]),
            ],
            ..Default::default()
        }
    }

    fn values(key: &str, proxy: &Proxy) -> BTreeMap<String, Vec<u8>> {
        use prost::Message as _;
        let (head, parts) = split(key, proxy);
        let mut out = BTreeMap::from([(key.to_string(), head.encode_to_vec())]);
        out.extend(parts.into_iter().map(|(k, p)| (k, p.encode_to_vec())));
        out
    }

    #[test]
    fn digests_name_each_proxy_by_its_head_and_parts() {
        let mut all = values("default.gw", &proxy());
        // A Proxy whose key sorts between the first one's head and its parts.
        all.extend(values("default.gw-x", &Proxy::default()));
        let before = digests(&all);
        assert_eq!(before.keys().collect::<Vec<_>>(), ["default.gw", "default.gw-x"]);
        assert_eq!(before, digests(&all), "the same bytes, the same digest");
        assert_eq!(
            before["default.gw-x"],
            digests(&values("default.gw-x", &Proxy::default()))["default.gw-x"],
            "a Proxy's digest reads only its own values"
        );
        // One route edited: that Proxy's digest changes, the other's does not.
        let mut edited = proxy();
        if let Some(ListenerType::HttpListener(http)) = &mut edited.listeners[0].listener_type {
            http.virtual_hosts[1].routes[0].name = "r2-edited".into();
        }
        let mut after = values("default.gw", &edited);
        after.extend(values("default.gw-x", &Proxy::default()));
        let changed = digests(&after);
        assert_ne!(changed["default.gw"], before["default.gw"]);
        assert_eq!(changed["default.gw-x"], before["default.gw-x"]);
    }

    #[test]
    fn a_proxy_digest_is_kept_value_by_value() {
        let values: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("d.gw._vh.h{i}"), vec![i as u8; i])).collect();
        let all = digest(b"head", values.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        assert_eq!(
            all,
            digest(b"head", values.iter().rev().map(|(k, v)| (k.as_str(), v.as_slice()))),
            "in any order"
        );
        // One value taken out and put back changed: the sum follows.
        let mut sum = PartsSum::default();
        for (k, v) in &values {
            sum.add(k, v);
        }
        assert_eq!(sum.digest(b"head"), all);
        sum.remove(&values[7].0, &values[7].1);
        assert_ne!(sum.digest(b"head"), all);
        sum.add(&values[7].0, b"edited");
        let mut edited = values.clone();
        edited[7].1 = b"edited".to_vec();
        assert_eq!(
            sum.digest(b"head"),
            digest(b"head", edited.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        );
        assert_ne!(sum.digest(b"head"), sum.digest(b"other head"));
        // A value moved to another key is another Proxy.
        let mut moved = values.clone();
        moved[3].0 = "d.gw._vh.moved".into();
        assert_ne!(
            all,
            digest(b"head", moved.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        );
    }

    fn routes(names: impl IntoIterator<Item = String>) -> Vec<Route> {
        names
            .into_iter()
            .map(|name| Route {
                name,
                ..Default::default()
            })
            .collect()
    }

    /// The routes of a host's values: its part's, or its pages' in the order its index
    /// pages list them; checks that every page's id is its digest.
    fn routes_of(values: &BTreeMap<String, Bytes>, key: &str) -> Vec<Route> {
        use kgw_proto::v1::{PageIndex, RoutePage};
        use prost::Message as _;
        let part = VirtualHostPart::decode(&values[key][..]).expect("part");
        if part.index_pages.is_empty() {
            return part.virtual_host.map(|v| v.routes).unwrap_or_default();
        }
        assert!(part.virtual_host.as_ref().is_some_and(|v| v.routes.is_empty()));
        let page = |kind, id| {
            let value = &values[&page_key(key, kind, id)];
            assert_eq!(page_id(value), id, "a page's id is its digest");
            value.clone()
        };
        part.index_pages
            .iter()
            .flat_map(|&id| PageIndex::decode(page(PageKind::Index, id)).expect("index").route_pages)
            .flat_map(|id| RoutePage::decode(page(PageKind::Routes, id)).expect("page").routes)
            .collect()
    }

    #[test]
    fn a_large_host_is_written_in_pages_and_a_new_route_writes_one() {
        let names = |n: usize| (0..n).map(|i| format!("default/route-{i}/rule-0"));
        let host = |routes: Vec<Route>| VirtualHost {
            name: "listener~8080~example.com".into(),
            domains: vec!["example.com".into()],
            routes,
        };
        let proxy_of = |vhost: VirtualHost| Proxy {
            listeners: vec![http_listener("listener~8080", vec![vhost])],
            ..Default::default()
        };
        let key = vhost_part_key("default.gw", "listener~8080", "listener~8080~example.com");

        // Below the threshold: the part as `split` gives it, routes inline.
        let small = proxy_of(host(routes(names(PAGED_FROM_ROUTES - 1))));
        let (_, parts) = split("default.gw", &small);
        assert_eq!(
            super::values("default.gw", &small)[&key],
            Bytes::from(prost::Message::encode_to_vec(&parts[&key]))
        );

        let before = super::values("default.gw", &proxy_of(host(routes(names(1000)))));
        let pages = before.keys().filter(|k| k.contains("._p.")).count();
        assert!((1000 / 32..=1000 / 8).contains(&pages), "{pages} pages");
        let indexes = before.keys().filter(|k| k.contains("._i.")).count();
        assert!((1..=pages / 4).contains(&indexes), "{indexes} index pages");
        assert_eq!(routes_of(&before, &key), routes(names(1000)));
        assert!(before.values().all(|v| v.len() < 8 * 1024), "every value is small");

        // A route inserted in the middle: one route page, one or two index pages and the
        // part change, a few KB at any size.
        for n in [1000, 20_000] {
            let before = super::values("default.gw", &proxy_of(host(routes(names(n)))));
            let mut inserted = routes(names(n));
            inserted.insert(n / 2, routes(["default/new/rule-0".to_string()]).remove(0));
            let after = super::values("default.gw", &proxy_of(host(inserted.clone())));
            assert_eq!(routes_of(&after, &key), inserted);
            let written: Vec<&String> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .collect();
            let deleted = before.keys().filter(|k| !after.contains_key(*k)).count();
            assert!(
                written.len() <= 5 && written.contains(&&key),
                "{n}: written {written:?}"
            );
            assert!(deleted <= 4, "{n}: {deleted} deleted");
            let bytes: usize = written.iter().map(|k| after[*k].len()).sum();
            assert!(bytes < 4 * 1024, "{bytes} bytes written for one route among {n}");
        }
    }

    #[test]
    fn split_then_assemble_is_the_proxy() {
        let (head, parts) = split("default.gw", &proxy());
        assert_eq!(parts.len(), 3, "one value per virtual host: {:?}", parts.keys());
        for listener in &head.listeners {
            let Some(ListenerType::HttpListener(http)) = &listener.listener_type else {
                panic!("http listener");
            };
            assert!(http.virtual_hosts.is_empty(), "the head holds no virtual host");
        }
        assert_eq!(assemble(&head, parts.values()), proxy());
        // Whatever order the parts arrive in.
        assert_eq!(assemble(&head, parts.values().rev()), proxy());
    }

    #[test]
    fn a_changed_host_changes_only_its_own_value() {
        let (head, before) = split("default.gw", &proxy());
        let mut edited = proxy();
        if let Some(ListenerType::HttpListener(http)) = edited.listeners[0].listener_type.as_mut() {
            http.virtual_hosts[1].routes[0].name = "r2-edited".into();
        }
        let (head_after, after) = split("default.gw", &edited);
        assert_eq!(head, head_after);
        let changed: Vec<&String> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
    }

    #[test]
    fn parts_of_an_unknown_listener_wait() {
        let (head, mut parts) = split("default.gw", &proxy());
        parts.insert(
            "default.gw._vh.x".into(),
            VirtualHostPart {
                listener: "listener~9999".into(),
                virtual_host: Some(vhost("c.example", "r4")),
                index_pages: Vec::new(),
            },
        );
        assert_eq!(assemble(&head, parts.values()), proxy());
    }

    mod encoded {
        use super::*;
        use kgw_proto::v1 as pb;
        use prost::Message as _;
        use sha2::Digest as _;

        fn numbered_vhost(name: &str, routes: usize) -> pb::VirtualHost {
            pb::VirtualHost {
                name: name.into(),
                domains: vec![name.into()],
                routes: (0..routes)
                    .map(|i| pb::Route {
                        name: format!("r{i}"),
                        ..Default::default()
                    })
                    .collect(),
            }
        }

        /// The parts and the head are what `split` gives, encoded (the head stamped).
        #[test]
        fn values_are_the_split_proxy_encoded() {
            let listener = |name: &str, vhosts: Vec<pb::VirtualHost>| pb::Listener {
                name: name.into(),
                bind_port: 8080,
                listener_type: Some(ListenerType::HttpListener(pb::HttpListener { virtual_hosts: vhosts })),
                sources: vec![pb::ResourceRef {
                    kind: "Gateway".into(),
                    namespace: "default".into(),
                    name: "gw/http".into(),
                }],
                ..Default::default()
            };
            let proxy = pb::Proxy {
                metadata: Some(pb::Metadata {
                    namespace: "default".into(),
                    name: "gw".into(),
                    labels: BTreeMap::from([("created_by".into(), "kgw-gateway".into())]),
                }),
                listeners: vec![
                    listener("listener~8080", vec![numbered_vhost("a", 2), numbered_vhost("b", 0)]),
                    listener("", vec![numbered_vhost("c", 1)]),
                    pb::Listener {
                        name: "other".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            };
            let (mut head, parts) = split("default.gw", &proxy);
            head.source_hash = hex::encode(&sha2::Sha256::digest(head.encode_to_vec())[..8]);
            let mut expected: BTreeMap<String, Bytes> = parts
                .into_iter()
                .map(|(key, part)| (key, Bytes::from(part.encode_to_vec())))
                .collect();
            expected.insert("default.gw".into(), Bytes::from(head.encode_to_vec()));
            let values: BTreeMap<String, Bytes> = encode_proxy("default.gw", &proxy).into_iter().collect();
            assert_eq!(values, expected);
        }
    }
}

//! A Proxy in KV as a head and one value per virtual host (the layout in
//! [`kgw_proto::nats`]): the gateway [`split`]s, the controller [`assemble`]s, and
//! `assemble(split(p)) == p` for a Proxy whose virtual hosts are ordered by name, as the
//! gateway makes them.
use std::collections::BTreeMap;

use bytes::Bytes;
use kgw_proto::{
    nats::{PAGED_FROM_ROUTES, page_starts, route_page_id, route_page_key, vhost_part_key},
    v1::{Proxy, Route, VirtualHost, VirtualHostPart, listener::ListenerType},
};
use prost::encoding::{message, string};

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
                    pages: Vec::new(),
                },
            );
        }
    }
    (head, parts)
}

/// The KV values of virtual host `vhost` of listener `listener` of the Proxy under
/// `head_key`, as the gateway writes them: its part under its key, and for a host of
/// [`PAGED_FROM_ROUTES`] routes or more, its routes in pages under keys of their own (the
/// layout in [`kgw_proto::nats`]). Encoded from the host as it is: no route is copied.
pub fn encode_virtual_host(head_key: &str, listener: &str, vhost: &VirtualHost) -> Vec<(String, Bytes)> {
    let key = vhost_part_key(head_key, listener, &vhost.name);
    if vhost.routes.len() < PAGED_FROM_ROUTES {
        return vec![(key, encode_part(listener, vhost, &[]))];
    }
    let starts = page_starts(vhost.routes.iter().map(|r| r.name.as_str()));
    let ends = starts.iter().skip(1).copied().chain([vhost.routes.len()]);
    let mut values = Vec::with_capacity(starts.len() + 1);
    let mut ids = Vec::with_capacity(starts.len());
    for (start, end) in starts.iter().copied().zip(ends) {
        let page = encode_page(&vhost.routes[start..end]);
        let id = route_page_id(&page);
        values.push((route_page_key(&key, &id), page));
        ids.push(id);
    }
    let header = VirtualHost {
        name: vhost.name.clone(),
        domains: vhost.domains.clone(),
        routes: Vec::new(),
    };
    values.insert(0, (key, encode_part(listener, &header, &ids)));
    values
}

/// Every KV value of the Proxy under `head_key`, as the gateway writes them (its head as
/// [`split`] gives it, its virtual hosts as [`encode_virtual_host`] does), by key.
pub fn values(head_key: &str, proxy: &Proxy) -> BTreeMap<String, Bytes> {
    use prost::Message as _;
    let mut head = proxy.clone();
    let mut out = BTreeMap::new();
    for listener in &mut head.listeners {
        if let Some(ListenerType::HttpListener(http)) = listener.listener_type.as_mut() {
            for vhost in std::mem::take(&mut http.virtual_hosts) {
                out.extend(encode_virtual_host(head_key, &listener.name, &vhost));
            }
        }
    }
    out.insert(head_key.to_string(), Bytes::from(head.encode_to_vec()));
    out
}

/// `VirtualHostPart { listener, virtual_host: Some(vhost), pages }` encoded, without
/// copying the host into one (the same bytes: fields in order, an empty string left out).
fn encode_part(listener: &str, vhost: &VirtualHost, pages: &[String]) -> Bytes {
    let listener = listener.to_string();
    let mut len = message::encoded_len(2, vhost) + string::encoded_len_repeated(3, pages);
    if !listener.is_empty() {
        len += string::encoded_len(1, &listener);
    }
    let mut buf = Vec::with_capacity(len);
    if !listener.is_empty() {
        string::encode(1, &listener, &mut buf);
    }
    message::encode(2, vhost, &mut buf);
    string::encode_repeated(3, pages, &mut buf);
    Bytes::from(buf)
}

/// `RoutePage { routes }` encoded from the routes where they are.
pub fn encode_page(routes: &[Route]) -> Bytes {
    let mut buf = Vec::with_capacity(message::encoded_len_repeated(1, routes));
    for route in routes {
        message::encode(1, route, &mut buf);
    }
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
/// each virtual host's (key and value, each length-prefixed), the parts in key order. The
/// gateway computes it from the bytes it wrote, the controller from what it read, encoded
/// again (prost gives a decoded value back its bytes: fields in number order, maps sorted);
/// equal digests mean the controller holds what the gateway wrote.
pub fn digest<'a>(head: &[u8], parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(head);
    for (key, value) in parts {
        field(key.as_bytes());
        field(value);
    }
    hex::encode(hasher.finalize())
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

    fn routes(names: impl IntoIterator<Item = String>) -> Vec<Route> {
        names
            .into_iter()
            .map(|name| Route {
                name,
                ..Default::default()
            })
            .collect()
    }

    /// The routes of a host's values: its part's, or its pages' in the order it lists them.
    fn routes_of(values: &BTreeMap<String, Bytes>, key: &str) -> Vec<Route> {
        use prost::Message as _;
        let part = VirtualHostPart::decode(&values[key][..]).expect("part");
        if part.pages.is_empty() {
            return part.virtual_host.map(|v| v.routes).unwrap_or_default();
        }
        assert!(part.virtual_host.as_ref().is_some_and(|v| v.routes.is_empty()));
        part.pages
            .iter()
            .flat_map(|id| {
                let page = &values[&kgw_proto::nats::route_page_key(key, id)];
                assert_eq!(kgw_proto::nats::route_page_id(page), *id, "a page's id is its digest");
                kgw_proto::v1::RoutePage::decode(&page[..]).expect("page").routes
            })
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
        assert_eq!(routes_of(&before, &key), routes(names(1000)));
        assert!(before.values().all(|v| v.len() < 8 * 1024), "every value is small");

        // A route inserted in the middle: one page and the part change.
        let mut inserted = routes(names(1000));
        inserted.insert(500, routes(["default/new/rule-0".to_string()]).remove(0));
        let after = super::values("default.gw", &proxy_of(host(inserted.clone())));
        assert_eq!(routes_of(&after, &key), inserted);
        let written: Vec<&String> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        let deleted = before.keys().filter(|k| !after.contains_key(*k)).count();
        assert!(written.len() <= 3 && written.contains(&&key), "written: {written:?}");
        assert!(deleted <= 2, "{deleted} deleted");
        let bytes: usize = written.iter().map(|k| after[*k].len()).sum();
        assert!(bytes < 8 * 1024, "{bytes} bytes written for one route among 1,000");
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
                pages: Vec::new(),
            },
        );
        assert_eq!(assemble(&head, parts.values()), proxy());
    }
}

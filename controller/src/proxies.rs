//! The Proxies as bucket `kgw_proxies` holds them: a head per Proxy and a value per virtual
//! host (the layout in `kgw_proto::nats`), assembled into whole Proxies. A change to one
//! virtual host is one small event; the Proxy it belongs to is assembled again.
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kgw_common::{bus::KvEvent, proxy_parts};
use kgw_proto::{
    nats::vhost_part_head,
    v1::{Proxy, VirtualHostPart},
};

/// Heads and parts as read, and the Proxies they make.
#[derive(Default)]
pub(crate) struct ProxyStore {
    heads: BTreeMap<String, Proxy>,
    /// Head key → part key → part.
    parts: BTreeMap<String, BTreeMap<String, VirtualHostPart>>,
    assembled: BTreeMap<String, Proxy>,
}

impl ProxyStore {
    /// The whole Proxies, by head key.
    pub(crate) fn proxies(&self) -> &BTreeMap<String, Proxy> {
        &self.assembled
    }

    /// Applies `events` (in order) and returns the keys of the Proxies that changed
    /// (added, edited or removed).
    pub(crate) fn apply(&mut self, events: Vec<KvEvent>) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        for event in events {
            match event {
                KvEvent::Full(all) => {
                    touched.extend(self.heads.keys().cloned());
                    self.heads.clear();
                    self.parts.clear();
                    for (key, value) in all {
                        touched.insert(self.put(key, &value));
                    }
                }
                KvEvent::Put(key, value, _) => {
                    touched.insert(self.put(key, &value));
                }
                KvEvent::Delete(key, _) => {
                    touched.insert(self.delete(key));
                }
            }
        }
        touched.into_iter().filter(|head| self.reassemble(head)).collect()
    }

    /// Stores one value; returns the head it belongs to.
    fn put(&mut self, key: String, value: &Bytes) -> String {
        match vhost_part_head(&key).map(str::to_string) {
            Some(head) => {
                if let Some(part) = decode::<VirtualHostPart>(&key, value) {
                    self.parts.entry(head.clone()).or_default().insert(key, part);
                }
                head
            }
            None => {
                if let Some(proxy) = decode::<Proxy>(&key, value) {
                    self.heads.insert(key.clone(), proxy);
                }
                key
            }
        }
    }

    fn delete(&mut self, key: String) -> String {
        match vhost_part_head(&key).map(str::to_string) {
            Some(head) => {
                if let Some(parts) = self.parts.get_mut(&head) {
                    parts.remove(&key);
                    if parts.is_empty() {
                        self.parts.remove(&head);
                    }
                }
                head
            }
            None => {
                self.heads.remove(&key);
                key
            }
        }
    }

    /// Assembles `head` again; true when the Proxy changed.
    fn reassemble(&mut self, head: &str) -> bool {
        let fresh = self.heads.get(head).map(|proxy| {
            let parts = self.parts.get(head).into_iter().flat_map(|parts| parts.values());
            proxy_parts::assemble(proxy, parts)
        });
        match fresh {
            Some(proxy) if self.assembled.get(head) == Some(&proxy) => false,
            Some(proxy) => {
                self.assembled.insert(head.to_string(), proxy);
                true
            }
            None => self.assembled.remove(head).is_some(),
        }
    }
}

fn decode<T: prost::Message + Default>(key: &str, bytes: &[u8]) -> Option<T> {
    match T::decode(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(key, %error, "cannot decode a value of kgw_proxies; ignored");
            None
        }
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

    #[test]
    fn a_full_read_then_one_host_at_a_time() {
        let mut store = ProxyStore::default();
        let first = proxy(&[("a", "r1"), ("b", "r2")]);
        let changed = store.apply(vec![KvEvent::Full(values("default.gw", &first))]);
        assert_eq!(changed, BTreeSet::from(["default.gw".to_string()]));
        assert_eq!(store.proxies()["default.gw"], first);

        // One host edited: one part written, the Proxy changes.
        let edited = proxy(&[("a", "r1"), ("b", "r2-edited")]);
        let new_values = values("default.gw", &edited);
        let (key, value) = new_values
            .iter()
            .find(|(k, v)| values("default.gw", &first).get(*k) != Some(*v))
            .expect("one value differs");
        assert_eq!(
            store.apply(vec![put(key, value)]),
            BTreeSet::from(["default.gw".to_string()])
        );
        assert_eq!(store.proxies()["default.gw"], edited);

        // The same value again changes nothing.
        assert!(store.apply(vec![put(key, value)]).is_empty());

        // A host removed: its part deleted.
        let (gone, _) = values("default.gw", &first)
            .into_iter()
            .find(|(k, _)| k.contains("._vh.") && k.ends_with("/a"))
            .expect("host a's key");
        store.apply(vec![KvEvent::Delete(gone, None)]);
        assert_eq!(store.proxies()["default.gw"], proxy(&[("b", "r2-edited")]));
    }

    #[test]
    fn a_deleted_head_removes_the_proxy_and_late_parts_wait_for_a_head() {
        let mut store = ProxyStore::default();
        let first = proxy(&[("a", "r1")]);
        store.apply(vec![KvEvent::Full(values("default.gw", &first))]);
        let changed = store.apply(vec![KvEvent::Delete("default.gw".into(), None)]);
        assert_eq!(changed, BTreeSet::from(["default.gw".to_string()]));
        assert!(store.proxies().is_empty());

        // Parts before their head: nothing until the head arrives.
        let other = values("default.other", &proxy(&[("x", "r9")]));
        let (parts, head): (Vec<_>, Vec<_>) = other.iter().partition(|(k, _)| k.contains("._vh."));
        assert!(store.apply(parts.iter().map(|(k, v)| put(k, v)).collect()).is_empty());
        store.apply(head.iter().map(|(k, v)| put(k, v)).collect());
        assert_eq!(store.proxies()["default.other"], proxy(&[("x", "r9")]));
    }
}

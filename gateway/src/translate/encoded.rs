//! The Proxies as KV values (the layout in `kgw_proto::nats`): each Proxy's head under its
//! key, stamped with the hash of its own content, and each of its virtual hosts under a
//! key of its own, so that a change to one host changes one value. [`EncodedProxies`]
//! keeps the bytes and encodes again only the parts a translation changed.
use std::collections::BTreeMap;

use bytes::Bytes;
use kgw_common::proxy_parts::{encode_proxy, encode_virtual_host};
use kgw_proto::{
    nats::{page_of, pages_prefix, vhost_part_head, vhost_part_key},
    v1::{self as pb, listener::ListenerType},
};

use super::{Changed, Output};

/// Every Proxy of `output` encoded from scratch (the reference for [`EncodedProxies`]).
pub fn encode_proxies(output: &Output) -> BTreeMap<String, Bytes> {
    output
        .proxies
        .iter()
        .flat_map(|(key, proxy)| encode_proxy(key, proxy))
        .collect()
}

/// The encoded Proxies, kept up to date part by part. A Proxy's values are its head's key
/// and the keys after it that [`vhost_part_head`] gives it (Gateway names have no `_`, so
/// no other Proxy's key falls among them).
#[derive(Debug, Default)]
pub struct EncodedProxies {
    values: BTreeMap<String, Bytes>,
    /// What the last `update` put (`Some`) or removed (`None`), in order.
    updates: Vec<(String, Option<Bytes>)>,
}

impl EncodedProxies {
    pub fn values(&self) -> &BTreeMap<String, Bytes> {
        &self.values
    }

    /// What the last [`update`](Self::update) put (`Some`) or removed (`None`): replayed on
    /// the values before it, they give the values after it.
    pub fn updates(&self) -> &[(String, Option<Bytes>)] {
        &self.updates
    }

    /// Encodes again what `changed` names in `output`; whether any value changed.
    pub fn update(&mut self, output: &Output, changed: &Changed) -> bool {
        let mut any = false;
        self.updates.clear();
        for key in &changed.proxies {
            let old: BTreeMap<String, Bytes> = self
                .keys_of(key)
                .into_iter()
                .filter_map(|k| self.values.remove(&k).map(|v| (k, v)))
                .collect();
            let fresh: BTreeMap<String, Bytes> = output
                .proxies
                .get(key)
                .map(|proxy| encode_proxy(key, proxy).into_iter().collect())
                .unwrap_or_default();
            any |= old != fresh;
            let removed = old.into_keys().filter(|k| !fresh.contains_key(k));
            self.updates.extend(removed.map(|k| (k, None)));
            self.updates
                .extend(fresh.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
            self.values.extend(fresh);
        }
        for (proxy_key, listener, vhost) in &changed.virtual_hosts {
            if changed.proxies.contains(proxy_key) {
                continue;
            }
            let part_key = vhost_part_key(proxy_key, listener, vhost);
            // The host's part and its pages, before and now.
            let old: BTreeMap<String, Bytes> = self
                .host_keys(&part_key)
                .into_iter()
                .filter_map(|k| self.values.remove(&k).map(|v| (k, v)))
                .collect();
            let fresh: BTreeMap<String, Bytes> = output
                .proxies
                .get(proxy_key)
                .and_then(|proxy| find_vhost(proxy, listener, vhost))
                .map(|found| encode_virtual_host(proxy_key, listener, found).into_iter().collect())
                .unwrap_or_default();
            let mut old = old;
            for (key, value) in fresh {
                match old.remove(&key) {
                    // A page that stays keeps its bytes (its key is its content's digest, so
                    // they are not compared): the writer sees the same bytes and skips it.
                    Some(kept) if page_of(&key).is_some() || kept == value => {
                        self.values.insert(key, kept);
                    }
                    _ => {
                        any = true;
                        self.updates.push((key.clone(), Some(value.clone())));
                        self.values.insert(key, value);
                    }
                }
            }
            any |= !old.is_empty();
            self.updates.extend(old.into_keys().map(|k| (k, None)));
        }
        any
    }
}

impl EncodedProxies {
    /// The keys of Proxy `key`'s values: its head and its virtual host parts.
    fn keys_of(&self, key: &str) -> Vec<String> {
        let head = self.values.get_key_value(key).map(|(k, _)| k.clone());
        // A part's key is its head's, a mark, and one token (see `vhost_part_key`).
        let prefix = vhost_part_key(key, "", "");
        let prefix = prefix.trim_end_matches(|c| c != '.');
        let parts = self
            .values
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix) && vhost_part_head(k) == Some(key))
            .cloned();
        head.into_iter().chain(parts).collect()
    }
}

impl EncodedProxies {
    /// The keys of a virtual host's values: its part's and its pages'.
    fn host_keys(&self, part_key: &str) -> Vec<String> {
        let pages = pages_prefix(part_key);
        let part = self.values.get_key_value(part_key).map(|(k, _)| k.clone());
        let page_keys = self
            .values
            .range::<str, _>((std::ops::Bound::Included(pages.as_str()), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&pages))
            .cloned();
        part.into_iter().chain(page_keys).collect()
    }
}

/// Virtual host `name` of listener `listener` (virtual hosts ordered by name).
fn find_vhost<'a>(proxy: &'a pb::Proxy, listener: &str, name: &str) -> Option<&'a pb::VirtualHost> {
    let listener = proxy.listeners.iter().find(|l| l.name == listener)?;
    let Some(ListenerType::HttpListener(http)) = &listener.listener_type else {
        return None;
    };
    let i = http
        .virtual_hosts
        .binary_search_by(|v| v.name.as_str().cmp(name))
        .ok()?;
    http.virtual_hosts.get(i)
}

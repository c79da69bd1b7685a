//! The Proxies as KV values (the layout in `kgw_proto::nats`): each Proxy's head under its
//! key, stamped with the hash of its own content, and each of its virtual hosts under a
//! key of its own, so that a change to one host changes one value. [`EncodedProxies`]
//! keeps the bytes and encodes again only the parts a translation changed.
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kgw_proto::{
    nats::vhost_part_key,
    v1::{self as pb, listener::ListenerType},
};
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{Changed, Output};

/// One Proxy's values: its head, then its virtual host parts.
fn encode_proxy(key: &str, proxy: &pb::Proxy) -> Vec<(String, Bytes)> {
    let (mut head, parts) = kgw_common::proxy_parts::split(key, proxy);
    head.source_hash.clear();
    head.source_hash = hex::encode(&Sha256::digest(head.encode_to_vec())[..8]);
    let mut values = vec![(key.to_string(), Bytes::from(head.encode_to_vec()))];
    values.extend(
        parts
            .into_iter()
            .map(|(part_key, part)| (part_key, Bytes::from(part.encode_to_vec()))),
    );
    values
}

/// Every Proxy of `output` encoded from scratch (the reference for [`EncodedProxies`]).
pub fn encode_proxies(output: &Output) -> BTreeMap<String, Bytes> {
    output
        .proxies
        .iter()
        .flat_map(|(key, proxy)| encode_proxy(key, proxy))
        .collect()
}

/// The encoded Proxies, kept up to date part by part.
#[derive(Debug, Default)]
pub struct EncodedProxies {
    values: BTreeMap<String, Bytes>,
    /// Proxy key → the keys of its values.
    keys_of: BTreeMap<String, BTreeSet<String>>,
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
                .keys_of
                .remove(key)
                .unwrap_or_default()
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
            if !fresh.is_empty() {
                self.keys_of.insert(key.clone(), fresh.keys().cloned().collect());
            }
            self.values.extend(fresh);
        }
        for (proxy_key, listener, vhost) in &changed.virtual_hosts {
            if changed.proxies.contains(proxy_key) {
                continue;
            }
            let part_key = vhost_part_key(proxy_key, listener, vhost);
            let fresh = output
                .proxies
                .get(proxy_key)
                .and_then(|proxy| find_vhost(proxy, listener, vhost))
                .map(|vhost| {
                    let part = pb::VirtualHostPart {
                        listener: listener.clone(),
                        virtual_host: Some(vhost.clone()),
                    };
                    Bytes::from(part.encode_to_vec())
                });
            self.updates.push((part_key.clone(), fresh.clone()));
            let keys = self.keys_of.entry(proxy_key.clone()).or_default();
            let unchanged = match fresh {
                Some(bytes) => {
                    keys.insert(part_key.clone());
                    self.values
                        .insert(part_key, bytes.clone())
                        .is_some_and(|old| old == bytes)
                }
                None => {
                    keys.remove(&part_key);
                    self.values.remove(&part_key).is_none()
                }
            };
            any |= !unchanged;
        }
        any
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

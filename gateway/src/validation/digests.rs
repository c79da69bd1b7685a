//! The digests of the Proxies as written (`kgw_common::proxy_parts::digest`), kept from one
//! state of the values to the next: only the values that changed are hashed again (the
//! writer's unchanged values are the same bytes), so a background check costs a walk over
//! the keys, not a hash of every Proxy's bytes.
use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;
use kgw_common::{bus::same_bytes, proxy_parts::PartsSum};
use kgw_proto::nats::vhost_part_head;

/// The values last summed and their sums per Proxy.
#[derive(Default)]
pub(super) struct DigestCache {
    values: Arc<BTreeMap<String, Bytes>>,
    /// Head key → the sum of its other values.
    sums: BTreeMap<String, PartsSum>,
}

impl DigestCache {
    /// The digest of every Proxy among `values` (a `kgw_proxies` bucket's keys and values),
    /// by head key: what `proxy_parts::digests` gives.
    pub(super) fn digests(&mut self, values: &Arc<BTreeMap<String, Bytes>>) -> BTreeMap<String, String> {
        if !Arc::ptr_eq(&self.values, values) {
            self.update(values);
            self.values = Arc::clone(values);
        }
        values
            .iter()
            .filter(|(key, _)| vhost_part_head(key).is_none() && !key.contains(".part."))
            .map(|(key, head)| {
                let sum = self.sums.get(key).copied().unwrap_or_default();
                (key.clone(), sum.digest(head))
            })
            .collect()
    }

    /// Takes the values that changed since the last state out of the sums, and puts the new
    /// ones in (a merge walk over both, in key order).
    fn update(&mut self, values: &BTreeMap<String, Bytes>) {
        let old_values = Arc::clone(&self.values);
        let (mut old, mut new) = (old_values.iter().peekable(), values.iter().peekable());
        loop {
            let (gone, came) = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(o), Some(n)) if o.0 == n.0 => {
                    let (o, n) = (old.next(), new.next());
                    match (o, n) {
                        (Some(o), Some(n)) if !same_bytes(o.1, n.1) => (Some(o), Some(n)),
                        _ => continue,
                    }
                }
                (Some(o), Some(n)) if o.0 < n.0 => (old.next(), None),
                (Some(_), None) => (old.next(), None),
                _ => (None, new.next()),
            };
            if let Some((key, value)) = gone
                && let Some(head) = vhost_part_head(key)
            {
                self.sums.entry(head.to_string()).or_default().remove(key, value);
            }
            if let Some((key, value)) = came
                && let Some(head) = vhost_part_head(key)
            {
                self.sums.entry(head.to_string()).or_default().add(key, value);
            }
        }
        self.sums
            .retain(|head, sum| *sum != PartsSum::default() || values.contains_key(head));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(values: &[(&str, &str)]) -> Arc<BTreeMap<String, Bytes>> {
        Arc::new(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn digests_follow_the_values_as_a_digest_of_all_of_them_would() {
        let mut cache = DigestCache::default();
        let states = [
            state(&[
                ("d.a", "head a"),
                ("d.a._vh.x", "x1"),
                ("d.a._vh.y", "y1"),
                ("d.b", "head b"),
            ]),
            state(&[
                ("d.a", "head a"),
                ("d.a._vh.x", "x2"),
                ("d.a._vh.y", "y1"),
                ("d.b", "head b"),
            ]),
            state(&[
                ("d.a", "head a2"),
                ("d.a._vh.y", "y1"),
                ("d.b", "head b"),
                ("d.b._vh.z", "z"),
            ]),
            state(&[("d.b", "head b"), ("d.b._vh.z", "z")]),
            state(&[]),
        ];
        for values in &states {
            assert_eq!(
                cache.digests(values),
                kgw_common::proxy_parts::digests(values),
                "{values:?}"
            );
            assert_eq!(cache.digests(values), kgw_common::proxy_parts::digests(values), "again");
        }
        assert!(cache.sums.is_empty(), "nothing kept for Proxies gone");
    }
}

//! Sorted vectors as maps and sets, for what a virtual host's translation records (the
//! Upstreams its routes name): mostly one or two entries, held per cached virtual host,
//! where a `BTreeMap` would allocate a node for eleven.
use std::borrow::Borrow;

/// A map kept as a vector sorted by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn position<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// Sets `key`'s value; the one it replaces, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.position(key).ok().map(|at| &self.0[at].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.position(key).is_ok()
    }
}

impl<K, V> VecMap<K, V> {
    /// Its entries, in key order.
    pub fn into_vec(self) -> Vec<(K, V)> {
        self.0
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// A set kept as a sorted vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecSet<K>(Vec<K>);

impl<K> Default for VecSet<K> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord> VecSet<K> {
    /// Adds `key`; whether it was new.
    pub fn insert(&mut self, key: K) -> bool {
        match self.0.binary_search(&key) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, key);
                true
            }
        }
    }

    pub fn contains<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|k| k.borrow().cmp(key)).is_ok()
    }
}

impl<K> VecSet<K> {
    /// Its keys, in order.
    pub fn into_vec(self) -> Vec<K> {
        self.0
    }

    /// In order.
    pub fn iter(&self) -> std::slice::Iter<'_, K> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, K> IntoIterator for &'a VecSet<K> {
    type Item = &'a K;
    type IntoIter = std::slice::Iter<'a, K>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn they_behave_as_the_btree_collections() {
        let mut map = VecMap::default();
        let mut reference = BTreeMap::new();
        let mut set = VecSet::default();
        let mut reference_set = BTreeSet::new();
        for (i, key) in ["c", "a", "b", "a", "d", "c"].into_iter().enumerate() {
            assert_eq!(map.insert(key.to_string(), i), reference.insert(key.to_string(), i));
            assert_eq!(set.insert(key.to_string()), reference_set.insert(key.to_string()));
        }
        assert!(map.iter().eq(reference.iter()));
        assert!(set.iter().eq(reference_set.iter()));
        assert_eq!(map.get("a"), reference.get("a"));
        assert!(map.contains_key("d") && !map.contains_key("e"));
        assert!(set.contains("b") && !set.contains("e"));
        assert_eq!((map.len(), set.len()), (4, 4));
        assert!(map.keys().eq(reference.keys()) && map.values().eq(reference.values()));
    }
}

//! A sorted map by name that snapshots share: its entries sit in chunks of at most a few
//! hundred behind `Arc`s, so a copy costs a pointer per chunk and a change copies one
//! chunk. A snapshot made from the previous one with one resource changed thus costs what
//! changed, not what the role has (the VHDS index of thousands of virtual hosts).
use std::{collections::BTreeMap, sync::Arc};

/// Entries per chunk before it splits in two.
const CHUNK: usize = 256;

/// A `BTreeMap<String, V>` whose clones share their chunks (see the module doc).
#[derive(Clone, Debug)]
pub struct ChunkMap<V> {
    /// In key order, none empty; each chunk's keys all sort before the next chunk's.
    chunks: Vec<Arc<BTreeMap<String, V>>>,
    len: usize,
}

impl<V> Default for ChunkMap<V> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<V: PartialEq> PartialEq for ChunkMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<V> std::ops::Index<&str> for ChunkMap<V> {
    type Output = V;

    fn index(&self, key: &str) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

impl<V: Clone> FromIterator<(String, V)> for ChunkMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let sorted: BTreeMap<String, V> = iter.into_iter().collect();
        let len = sorted.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut chunk = BTreeMap::new();
        for (key, value) in sorted {
            chunk.insert(key, value);
            if chunk.len() == CHUNK {
                chunks.push(Arc::new(std::mem::take(&mut chunk)));
            }
        }
        if !chunk.is_empty() {
            chunks.push(Arc::new(chunk));
        }
        Self { chunks, len }
    }
}

impl<V> ChunkMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `key` if any does: the last whose first key is at most `key`.
    fn chunk_of(&self, key: &str) -> usize {
        let after = self
            .chunks
            .partition_point(|chunk| chunk.first_key_value().is_some_and(|(first, _)| first.as_str() <= key));
        after.saturating_sub(1)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.chunks.get(self.chunk_of(key))?.get(key)
    }

    pub fn get_key_value(&self, key: &str) -> Option<(&String, &V)> {
        self.chunks.get(self.chunk_of(key))?.get_key_value(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.iter().map(|(key, _)| key)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// The entries from `key` on (included), in key order.
    pub fn range_from<'a>(&'a self, key: &str) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
        let first = self.chunk_of(key);
        let from = key.to_string();
        self.chunks
            .get(first)
            .into_iter()
            .flat_map(move |chunk| chunk.range(from.clone()..))
            .chain(self.chunks.iter().skip(first + 1).flat_map(|chunk| chunk.iter()))
    }
}

impl<V: Clone> ChunkMap<V> {
    /// Inserts `value` under `key`; the value it replaces, if any. Copies one chunk when
    /// another map shares it.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::default());
        }
        let i = self.chunk_of(&key);
        let chunk = Arc::make_mut(&mut self.chunks[i]);
        let old = chunk.insert(key, value);
        if old.is_none() {
            self.len += 1;
            if chunk.len() > 2 * CHUNK {
                let middle = chunk.keys().nth(CHUNK).cloned().unwrap_or_default();
                let upper = chunk.split_off(&middle);
                self.chunks.insert(i + 1, Arc::new(upper));
            }
        }
        old
    }

    /// Removes `key`; its value, if it was there.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.chunk_of(key);
        if !self.chunks.get(i)?.contains_key(key) {
            return None;
        }
        let chunk = Arc::make_mut(&mut self.chunks[i]);
        let old = chunk.remove(key);
        if chunk.is_empty() {
            self.chunks.remove(i);
        }
        self.len -= 1;
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn behaves_as_a_btree_map_and_clones_stay_apart() {
        let mut rng = 7;
        let mut map = ChunkMap::default();
        let mut reference = BTreeMap::new();
        let mut earlier: Vec<(ChunkMap<u64>, BTreeMap<String, u64>)> = Vec::new();
        for step in 0..20_000u64 {
            let key = format!("k{:05}", next(&mut rng) % 3000);
            if next(&mut rng).is_multiple_of(4) {
                assert_eq!(map.remove(&key), reference.remove(&key));
            } else {
                assert_eq!(map.insert(key.clone(), step), reference.insert(key, step));
            }
            if step.is_multiple_of(2000) {
                earlier.push((map.clone(), reference.clone()));
            }
        }
        assert_eq!(map.len(), reference.len());
        assert!(map.iter().eq(reference.iter()));
        for probe in ["k00000", "k01500", "k02999", "k1", "a", "z"] {
            assert_eq!(map.get(probe), reference.get(probe));
            assert!(map.range_from(probe).eq(reference.range(probe.to_string()..)));
        }
        for (copy, reference) in earlier {
            assert!(
                copy.iter().eq(reference.iter()),
                "a clone is not changed by later edits"
            );
        }
        let rebuilt: ChunkMap<u64> = reference.clone().into_iter().collect();
        assert_eq!(rebuilt, map);
    }
}

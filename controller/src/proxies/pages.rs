//! A large virtual host as `kgw_proxies` holds it: its part lists index pages, which list
//! pages of routes, each a value of its own (the layout in `kgw_proto::nats`). The store
//! keeps one copy of the host's routes, in the part it hands on (routes in order, as if
//! written whole); a new part takes the pages it names from the pages read since (moved)
//! or, for a page it named before, from the host's routes (copied), and waits while one is
//! missing. So a change to one route decodes one page, and the translation never sees a
//! host half written.
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Weak};

use kgw_common::proxy_parts::PartsSum;
use kgw_proto::nats::{PageKind, page_key};
use kgw_proto::v1::{PageIndex, RoutePage, VirtualHost, VirtualHostPart};

/// Which routes of a host handed on are copies of routes of the part handed on before it
/// (`base`): the routes of the pages both name. The translation takes their last
/// translation without comparing them; it holds only while `base` is the part that
/// translation was made from.
#[derive(Debug)]
pub struct SameRoutes {
    base: Weak<VirtualHostPart>,
    /// Runs of routes: (first index in the new host, first in `base`, length), in order.
    runs: Vec<(usize, usize, usize)>,
}

impl SameRoutes {
    /// Whether these are relative to `part`.
    pub fn relative_to(&self, part: &Arc<VirtualHostPart>) -> bool {
        std::ptr::eq(self.base.as_ptr(), Arc::as_ptr(part))
    }

    /// The routes of `base` (of `len`) that no route of the new host copies, in order: those
    /// of the pages replaced, where a changed route's previous self lies.
    pub fn not_copied(&self, len: usize) -> Vec<usize> {
        let mut copied: Vec<(usize, usize)> = self.runs.iter().map(|&(_, old, n)| (old, old + n)).collect();
        copied.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for (start, end) in copied {
            out.extend(at..start.min(len));
            at = at.max(end);
        }
        out.extend(at..len);
        out
    }

    /// The index in `base` of a copy of route `i` of the new host.
    pub fn previous_of(&self, i: usize) -> Option<usize> {
        let at = self.runs.partition_point(|&(start, _, _)| start <= i).checked_sub(1)?;
        let (start, old, len) = self.runs[at];
        (i < start + len).then(|| old + (i - start))
    }
}

/// A host in pages, as handed on.
pub(super) struct Paged {
    /// The part as written: its listener, name, domains and index page ids, no routes.
    written: Arc<VirtualHostPart>,
    /// The route page ids each index page of `written` lists, by index page id.
    indexes: BTreeMap<u64, Arc<[u64]>>,
    /// The route page ids in order: the lists of `written`'s index pages, one after another.
    route_pages: Vec<u64>,
    /// Where each route page's routes lie in the host's routes (as `route_pages`).
    ranges: Vec<Range<usize>>,
}

/// Pages of one host read and not yet taken into it, by id.
#[derive(Default)]
struct ReadPages {
    indexes: BTreeMap<u64, Arc<[u64]>>,
    routes: BTreeMap<u64, RoutePage>,
}

/// The hosts in pages and their pages, by key.
#[derive(Default)]
pub(super) struct Pages {
    paged: BTreeMap<String, Arc<Paged>>,
    /// Parts read whose pages are not all read yet, by part key.
    waiting: BTreeMap<String, VirtualHostPart>,
    /// Pages read and not yet taken into their host, by the host's key.
    read: BTreeMap<String, ReadPages>,
}

/// Why a part waits: the first page it names that is neither read nor in its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Missing {
    pub(super) kind: PageKind,
    pub(super) id: u64,
}

impl Pages {
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether `part` is the part handed on under `key`, as written.
    pub(super) fn is_written(&self, key: &str, part: &VirtualHostPart) -> bool {
        self.paged.get(key).is_some_and(|p| *p.written == *part)
    }

    /// The host under `key` is gone or no longer in pages.
    pub(super) fn forget(&mut self, key: &str) {
        self.paged.remove(key);
        self.waiting.remove(key);
    }

    /// A route page of the host under `vhost_key` read. Its host's part if that was waiting.
    pub(super) fn read_routes(&mut self, vhost_key: &str, id: u64, page: RoutePage) -> Option<VirtualHostPart> {
        self.read_of(vhost_key).routes.insert(id, page);
        self.waiting.remove(vhost_key)
    }

    /// An index page of the host under `vhost_key` read. Its host's part if that was waiting.
    pub(super) fn read_index(&mut self, vhost_key: &str, id: u64, index: PageIndex) -> Option<VirtualHostPart> {
        self.read_of(vhost_key).indexes.insert(id, index.route_pages.into());
        self.waiting.remove(vhost_key)
    }

    fn read_of(&mut self, vhost_key: &str) -> &mut ReadPages {
        self.read.entry(vhost_key.to_string()).or_default()
    }

    /// A page deleted (the writer deletes a page once no part names it).
    pub(super) fn delete_page(&mut self, vhost_key: &str, kind: PageKind, id: u64) {
        let Some(read) = self.read.get_mut(vhost_key) else {
            return;
        };
        match kind {
            PageKind::Index => read.indexes.remove(&id).map(drop),
            PageKind::Routes => read.routes.remove(&id).map(drop),
        };
        if read.indexes.is_empty() && read.routes.is_empty() {
            self.read.remove(vhost_key);
        }
    }

    /// `part` (in pages) with its routes, taken from the pages read and from `previous`
    /// (the part handed on under `key` before); `Err` names a missing page: the part then
    /// waits for it ([`Self::read_routes`], [`Self::read_index`] give it back).
    pub(super) fn resolve(
        &mut self,
        key: &str,
        part: VirtualHostPart,
        previous: Option<&Arc<VirtualHostPart>>,
    ) -> Result<(VirtualHostPart, Option<SameRoutes>), Missing> {
        let old = self.paged.get(key).filter(|_| previous.is_some()).cloned();
        let empty = ReadPages::default();
        let read = self.read.get(key).unwrap_or(&empty);
        // The route pages, through the index pages.
        let mut indexes = BTreeMap::new();
        let mut route_pages = Vec::new();
        for &id in &part.index_pages {
            let list = read
                .indexes
                .get(&id)
                .or_else(|| old.as_ref().and_then(|o| o.indexes.get(&id)));
            let Some(list) = list else {
                self.waiting.insert(key.to_string(), part);
                return Err(Missing {
                    kind: PageKind::Index,
                    id,
                });
            };
            route_pages.extend_from_slice(list);
            indexes.insert(id, Arc::clone(list));
        }
        let before: BTreeMap<u64, Range<usize>> = old
            .as_ref()
            .map(|o| o.route_pages.iter().copied().zip(o.ranges.iter().cloned()).collect())
            .unwrap_or_default();
        if let Some(&id) = route_pages
            .iter()
            .find(|id| !read.routes.contains_key(id) && !before.contains_key(id))
        {
            self.waiting.insert(key.to_string(), part);
            return Err(Missing {
                kind: PageKind::Routes,
                id,
            });
        }
        let old_routes = previous
            .and_then(|p| p.virtual_host.as_ref())
            .map_or(&[][..], |v| &v.routes[..]);
        let mut read = self.read.remove(key).unwrap_or_default();
        for id in indexes.keys() {
            read.indexes.remove(id);
        }
        // Room for every route at once: 20,000 routes grown by doubling were copied about
        // twice over.
        let capacity = route_pages
            .iter()
            .map(|id| match read.routes.get(id) {
                Some(page) => page.routes.len(),
                None => before.get(id).map_or(0, |range| range.len()),
            })
            .sum();
        let mut routes = Vec::with_capacity(capacity);
        let mut ranges = Vec::with_capacity(route_pages.len());
        // A page named twice is read once: its second place copies the first.
        let mut placed: BTreeMap<u64, Range<usize>> = BTreeMap::new();
        let mut runs = Vec::new();
        for &id in &route_pages {
            let start = routes.len();
            if let Some(range) = placed.get(&id) {
                routes.extend_from_within(range.clone());
            } else if let Some(page) = read.routes.remove(&id) {
                routes.extend(page.routes);
            } else if let Some(range) = before.get(&id) {
                routes.extend_from_slice(old_routes.get(range.clone()).unwrap_or_default());
                runs.push((start, range.start, routes.len() - start));
            }
            let range = start..routes.len();
            placed.insert(id, range.clone());
            ranges.push(range);
        }
        // Held as long as the host: without the room its growth left.
        routes.shrink_to_fit();
        if !read.indexes.is_empty() || !read.routes.is_empty() {
            self.read.insert(key.to_string(), read);
        }
        let header = part.virtual_host.clone().unwrap_or_default();
        let whole = VirtualHostPart {
            listener: part.listener.clone(),
            virtual_host: Some(VirtualHost { routes, ..header }),
            index_pages: part.index_pages.clone(),
        };
        self.waiting.remove(key);
        self.paged.insert(
            key.to_string(),
            Arc::new(Paged {
                written: Arc::new(part),
                indexes,
                route_pages,
                ranges,
            }),
        );
        let same = previous.map(|base| SameRoutes {
            base: Arc::downgrade(base),
            runs,
        });
        Ok((whole, same))
    }

    /// The host under `key` as handed on, if in pages (shared: read it outside a lock).
    pub(super) fn paged(&self, key: &str) -> Option<Arc<Paged>> {
        self.paged.get(key).cloned()
    }
}

impl Paged {
    /// The sum of this host's values under `key` as written: its part and each of its pages
    /// (`proxy_parts::PartsSum`; a page counted by its key).
    pub(super) fn sum(&self, key: &str) -> PartsSum {
        use prost::Message as _;
        let mut sum = PartsSum::default();
        sum.add(key, &self.written.encode_to_vec());
        let indexes: BTreeSet<u64> = self.written.index_pages.iter().copied().collect();
        let routes: BTreeSet<u64> = self.route_pages.iter().copied().collect();
        for id in indexes {
            sum.add_page(&page_key(key, PageKind::Index, id));
        }
        for id in routes {
            sum.add_page(&page_key(key, PageKind::Routes, id));
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_not_copied_are_those_outside_every_run() {
        let base = Arc::new(VirtualHostPart::default());
        let same = SameRoutes {
            base: Arc::downgrade(&base),
            // New routes 0..3 copy 4..7, 5..7 copy 0..2 (pages moved), 7 copies 9.
            runs: vec![(0, 4, 3), (5, 0, 2), (7, 9, 1)],
        };
        assert_eq!(same.not_copied(12), [2, 3, 7, 8, 10, 11]);
        assert_eq!(same.not_copied(5), [2, 3]);
        assert_eq!(same.previous_of(1), Some(5));
        assert_eq!(same.previous_of(3), None);
        let none = SameRoutes {
            base: Arc::downgrade(&base),
            runs: Vec::new(),
        };
        assert_eq!(none.not_copied(3), [0, 1, 2]);
    }
}

//! A large virtual host as `kgw_proxies` holds it: its part lists pages of routes, each a
//! value of its own (the layout in `kgw_proto::nats`). The store keeps one copy of the
//! host's routes, in the part it hands on (routes in order, as if written whole); a new
//! part takes the pages it names from the pages read since (moved) or, for a page it
//! named before, from the host's routes (copied), and waits while one is missing. So a
//! change to one route decodes one page, and the translation never sees a host half
//! written.
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Weak};

use kgw_proto::nats::route_page_key;
use kgw_proto::v1::{RoutePage, VirtualHost, VirtualHostPart};

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

    /// The index in `base` of a copy of route `i` of the new host.
    pub fn previous_of(&self, i: usize) -> Option<usize> {
        let at = self.runs.partition_point(|&(start, _, _)| start <= i).checked_sub(1)?;
        let (start, old, len) = self.runs[at];
        (i < start + len).then(|| old + (i - start))
    }
}

/// A host in pages, as handed on.
pub(super) struct Paged {
    /// The part as written: its listener, name, domains and page ids, no routes.
    written: Arc<VirtualHostPart>,
    /// Where each page's routes lie in the host's routes (as `written.pages`).
    ranges: Vec<Range<usize>>,
}

/// The hosts in pages and their pages, by key.
#[derive(Default)]
pub(super) struct Pages {
    paged: BTreeMap<String, Arc<Paged>>,
    /// Parts read whose pages are not all read yet, by part key.
    waiting: BTreeMap<String, VirtualHostPart>,
    /// Pages read and not yet taken into their host, by page key.
    read: BTreeMap<String, RoutePage>,
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

    /// A page read. Its host's part if that was waiting for it.
    pub(super) fn read_page(&mut self, page_key: String, vhost_key: &str, page: RoutePage) -> Option<VirtualHostPart> {
        self.read.insert(page_key, page);
        self.waiting
            .contains_key(vhost_key)
            .then(|| self.waiting.remove(vhost_key))
            .flatten()
    }

    /// A page deleted (the writer deletes a page once no part names it).
    pub(super) fn delete_page(&mut self, page_key: &str) {
        self.read.remove(page_key);
    }

    /// `part` (in pages) with its routes, taken from the pages read and from `previous`
    /// (the part handed on under `key` before); `None` while a page is missing: the part
    /// then waits for it ([`Self::read_page`] gives it back).
    pub(super) fn resolve(
        &mut self,
        key: &str,
        part: VirtualHostPart,
        previous: Option<&Arc<VirtualHostPart>>,
    ) -> Option<(VirtualHostPart, Option<SameRoutes>)> {
        let before: BTreeMap<&str, Range<usize>> = match (self.paged.get(key), previous) {
            (Some(paged), Some(_)) => paged
                .written
                .pages
                .iter()
                .map(String::as_str)
                .zip(paged.ranges.iter().cloned())
                .collect(),
            _ => BTreeMap::new(),
        };
        let old_routes = previous
            .and_then(|p| p.virtual_host.as_ref())
            .map_or(&[][..], |v| &v.routes[..]);
        let page_keys: Vec<String> = part.pages.iter().map(|id| route_page_key(key, id)).collect();
        let complete = part
            .pages
            .iter()
            .zip(&page_keys)
            .all(|(id, page_key)| self.read.contains_key(page_key) || before.contains_key(id.as_str()));
        if !complete {
            self.waiting.insert(key.to_string(), part);
            return None;
        }
        let mut routes = Vec::new();
        let mut ranges = Vec::with_capacity(part.pages.len());
        // A page named twice is read once: its second place copies the first.
        let mut placed: BTreeMap<&str, Range<usize>> = BTreeMap::new();
        let mut runs = Vec::new();
        for (id, page_key) in part.pages.iter().zip(&page_keys) {
            let start = routes.len();
            if let Some(range) = placed.get(id.as_str()) {
                routes.extend_from_within(range.clone());
            } else if let Some(page) = self.read.remove(page_key) {
                routes.extend(page.routes);
            } else if let Some(range) = before.get(id.as_str()) {
                routes.extend_from_slice(old_routes.get(range.clone()).unwrap_or_default());
                runs.push((start, range.start, routes.len() - start));
            }
            let range = start..routes.len();
            placed.insert(id, range.clone());
            ranges.push(range);
        }
        let header = part.virtual_host.clone().unwrap_or_default();
        let whole = VirtualHostPart {
            listener: part.listener.clone(),
            virtual_host: Some(VirtualHost { routes, ..header }),
            pages: part.pages.clone(),
        };
        self.waiting.remove(key);
        self.paged.insert(
            key.to_string(),
            Arc::new(Paged {
                written: Arc::new(part),
                ranges,
            }),
        );
        let same = previous.map(|base| SameRoutes {
            base: Arc::downgrade(base),
            runs,
        });
        Some((whole, same))
    }

    /// The host under `key` as handed on, if in pages (shared: read it outside a lock).
    pub(super) fn paged(&self, key: &str) -> Option<Arc<Paged>> {
        self.paged.get(key).cloned()
    }
}

impl Paged {
    /// The values of this host, handed on as `whole` under `key`, as written: its part, then
    /// its pages, each with its key.
    pub(super) fn written_values(&self, key: &str, whole: &VirtualHostPart) -> Vec<(String, Vec<u8>)> {
        use prost::Message as _;
        let routes = whole.virtual_host.as_ref().map_or(&[][..], |v| &v.routes[..]);
        let mut values = vec![(key.to_string(), self.written.encode_to_vec())];
        let mut seen = std::collections::BTreeSet::new();
        for (id, range) in self.written.pages.iter().zip(&self.ranges) {
            if !seen.insert(id) {
                continue;
            }
            let page = kgw_common::proxy_parts::encode_page(routes.get(range.clone()).unwrap_or_default());
            values.push((route_page_key(key, id), page.to_vec()));
        }
        values
    }
}

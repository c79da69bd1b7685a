//! Route tables for Envoys on delta ADS, through the Virtual Host Discovery Service (VHDS):
//! each route table is served without its virtual hosts, which come one by one as
//! `VirtualHost` resources, so a changed route sends its virtual host, not its listener's
//! whole table.
//!
//! # Why VHDS, not scoped RDS
//! Scoped RDS picks a route table by an exact key made of header values: a Gateway API
//! wildcard hostname (`*.example.com`) or the catch-all `*` virtual host cannot be a key.
//! VHDS keeps Envoy's own domain matching (exact, `*.suffix`, `prefix.*`, `*`) over the
//! virtual hosts it has. Its cost: Envoy copies its map of virtual hosts and rebuilds the
//! whole table for each VHDS update (`RouteConfigUpdateReceiverImpl::onVhdsUpdate`), so a
//! change is small on the wire and in our processes, but O(table) inside Envoy.
//!
//! # What Envoy is served
//! - A route table `T` (delta only): `T`'s own fields but no virtual hosts, and
//!   `vhds { config_source: ads }` (Envoy requires its ADS to be `DELTA_GRPC` then).
//! - Its virtual host `V`: a `VirtualHost` resource named `T/V` whose `name` is `T/V` too
//!   (Envoy keys the virtual hosts it got by their `name`, and removes them by resource name).
//! - Envoy's VHDS watch of `T` matches the names `T/*`. Envoy subscribes with no names at
//!   all (its delta mux does not send namespaces), the legacy wildcard, and stays so after
//!   on-demand requests: it gets every virtual host of every table, pushed as they change,
//!   and `removed_resources` for those gone; a client that names the namespace `T` gets
//!   those of `T`. An empty table is told by removing the absent name `T/` (the watch of a
//!   namespace hears only of names in it, and its route table waits for one).
//! - On demand (an Envoy whose listeners run the `envoy.filters.http.on_demand` filter, which
//!   holds a request whose host matches no virtual host; ours do not, see below): Envoy
//!   subscribes to `T/<host>`; the answer is the virtual host of `T`
//!   whose domains match the host, as Envoy would match them, carrying `T/<host>` in its
//!   `aliases`; or, when none does (or Envoy has that virtual host at its version already),
//!   a resource named `T/<host>` with that alias and no body, so Envoy stops waiting.
//!
//! # Costs and limits
//! - Our listeners do not run the on-demand filter: with the wildcard watch every virtual
//!   host is pushed anyway, and the filter asks for any request no route matches (a path no
//!   route of a known host takes too). Envoy rebuilds its whole table for each answer, even
//!   one without a body, so each 404 cost a rebuild of the table: a scan of unknown hosts
//!   kept Envoy's main thread busy and delayed real updates (20k virtual hosts: most of
//!   Envoy's CPU in the propagation benchmark, whose poller waits on 404s).
//! - The index below is kept with the snapshot and changed with it: a snapshot made from the
//!   previous one with one virtual host changed replaces that host's entry (its version was
//!   computed once, when it was translated), sharing the rest ([`super::chunked`]).
//!
//! # Memory
//! Nothing is stored twice: the virtual hosts' bytes are those of their translations (the
//! route tables' entries, [`super::tables`]); this index holds those entries by resource
//! name, and builds a resource's bytes when a response carries it.
use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::google::protobuf::Any;

use super::{
    chunked::ChunkMap,
    delta::subscription::{Lookup, Served},
    snapshot::{PackedResources, Snapshot, TypeResources},
    tables::{HostEntry, digest64},
};

/// A snapshot's route tables as delta Envoys get them.
#[derive(Clone, Debug, Default)]
pub struct VhdsResources {
    /// Route tables without their virtual hosts, each loading them over VHDS.
    pub route_tables: TypeResources,
    /// Every virtual host of every table, by resource name `<table>/<virtual host>`.
    pub virtual_hosts: VirtualHosts,
}

/// The `VirtualHost` resources of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct VirtualHosts {
    /// `system_version_info`: a hash of every resource's name and version (their sum, so
    /// that a change updates it without reading the others).
    pub version: String,
    sum: u64,
    /// Resource name → a hash of its bytes.
    pub versions: ChunkMap<String>,
    hosts: ChunkMap<Arc<HostEntry>>,
    /// Every route table, and how many virtual hosts each has here.
    tables: BTreeMap<String, usize>,
}

impl VhdsResources {
    /// The VHDS form of the state-of-the-world route tables `routes` (tables packed by
    /// this process).
    pub fn new(routes: &TypeResources) -> Self {
        Snapshot::from_packed(PackedResources {
            routes: routes
                .items
                .iter()
                .map(|(name, any)| (name.clone(), any.clone()))
                .collect(),
            ..Default::default()
        })
        .vhds()
        .clone()
    }
}

/// The share of resource `name` at `version` in the index's version.
fn share(name: &str, version: &str) -> u64 {
    digest64(&[name.as_bytes(), version.as_bytes()])
}

impl VirtualHosts {
    /// A route table, empty until its hosts come.
    pub(crate) fn add_table(&mut self, table: &str) {
        self.tables.entry(table.to_string()).or_default();
    }

    /// Adds (or replaces) the resource of `entry`.
    pub(crate) fn insert(&mut self, entry: Arc<HostEntry>) {
        self.remove(&entry.resource);
        self.sum = self.sum.wrapping_add(share(&entry.resource, &entry.version));
        *self.tables.entry(entry.table.clone()).or_default() += 1;
        self.versions.insert(entry.resource.clone(), entry.version.clone());
        self.hosts.insert(entry.resource.clone(), entry);
    }

    /// Removes resource `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        let Some(old) = self.hosts.remove(name) else {
            return;
        };
        self.versions.remove(name);
        self.sum = self.sum.wrapping_sub(share(&old.resource, &old.version));
        if let Some(count) = self.tables.get_mut(&old.table) {
            *count = count.saturating_sub(1);
        }
    }

    /// Settles the version after changes.
    pub(crate) fn finish(&mut self) {
        self.version = hex::encode(self.sum.to_be_bytes());
    }

    /// The resource `name`.
    pub fn resource(&self, name: &str) -> Option<Any> {
        Some(self.hosts.get(name)?.resource())
    }

    /// The virtual host of `table` whose domains match `host` as Envoy matches them: an
    /// exact domain, then the longest `*suffix`, then the longest `prefix*`, then `*`.
    fn matching(&self, table: &str, host: &str) -> Option<&str> {
        let host = strip_port(host).to_ascii_lowercase();
        let prefix = format!("{table}/");
        let mut best: Option<((u8, usize), &str)> = None;
        let in_table = self
            .hosts
            .range_from(&prefix)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .filter(|(_, h)| h.table == table);
        for (name, candidate) in in_table {
            for domain in &candidate.domains {
                let Some(rank) = domain_rank(domain, &host) else {
                    continue;
                };
                if best.is_none_or(|(b, _)| rank > b) {
                    best = Some((rank, name.as_str()));
                }
            }
        }
        best.map(|(_, name)| name)
    }
}

impl Served for VirtualHosts {
    fn versions(&self) -> &ChunkMap<String> {
        &self.versions
    }

    fn lookup(&self, name: &str) -> Lookup<'_> {
        match name.rsplit_once('/') {
            Some((table, host)) if self.tables.contains_key(table) => Lookup::Alias(self.matching(table, host)),
            Some(_) if !self.tables.contains_key(name) => Lookup::Alias(None),
            _ => Lookup::Namespace,
        }
    }

    fn empty_namespaces(&self) -> Vec<&str> {
        self.tables
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(table, _)| table.as_str())
            .collect()
    }
}

/// How well `domain` matches `host`, higher better; `None`: not at all.
fn domain_rank(domain: &str, host: &str) -> Option<(u8, usize)> {
    if domain == "*" {
        return Some((0, 0));
    }
    if let Some(suffix) = domain.strip_prefix('*') {
        return (host.len() > suffix.len() && host.ends_with(suffix)).then_some((2, suffix.len()));
    }
    if let Some(prefix) = domain.strip_suffix('*') {
        return (host.len() > prefix.len() && host.starts_with(prefix)).then_some((1, prefix.len()));
    }
    (domain == host).then_some((3, 0))
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests;

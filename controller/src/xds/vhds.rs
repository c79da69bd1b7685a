//! Route tables for Envoys on delta ADS, through the Virtual Host Discovery Service (VHDS):
//! each route table is served without its virtual hosts, which come one by one as
//! `VirtualHost` resources, so a changed route sends its virtual host, not its listener's
//! whole table.
//!
//! # Why VHDS, not scoped RDS
//! Scoped RDS picks a route table by an exact key made of header values: a Gateway API
//! wildcard hostname (`*.example.com`) or the catch-all `*` virtual host cannot be a key.
//! VHDS keeps Envoy's own domain matching (exact, `*.suffix`, `prefix.*`, `*`) over the
//! virtual hosts it has, and fetches the one for an unknown host on demand.
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
//! - On demand (the `envoy.filters.http.on_demand` filter holds a request whose host matches
//!   no virtual host): Envoy subscribes to `T/<host>`; the answer is the virtual host of `T`
//!   whose domains match the host, as Envoy would match them, carrying `T/<host>` in its
//!   `aliases`; or, when none does (or Envoy has that virtual host at its version already),
//!   a resource named `T/<host>` with that alias and no body, so Envoy stops waiting.
//!
//! # Costs and limits
//! - Envoy's on-demand filter asks for any request no route matches, not only for unknown
//!   hosts: a path no route of a known host takes asks too. The answer carries no copy of a
//!   virtual host Envoy has at its version (a resource without a body, ~130 bytes), but a
//!   flood of 404s is a flood of on-demand requests; they are not rate limited (yet).
//! - The index below is made once per snapshot (not per stream) when a delta stream first
//!   reads it: it hashes every virtual host of the role, work that grows with the routes.
//!
//! # Memory
//! Nothing is stored twice: the virtual hosts' bytes are those of the state-of-the-world
//! route tables of the same snapshot; this index holds where each one lies in them, its
//! domains and version, and builds a resource's bytes when a response carries it.
use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
};

use envoy_types::pb::{
    envoy::config::{
        core::v3::{AggregatedConfigSource, ApiVersion, ConfigSource, config_source},
        route::v3::{RouteConfiguration, Vhds},
    },
    google::protobuf::Any,
};
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{
    delta::subscription::{Lookup, Served},
    snapshot::{ROUTE, TypeResources, VIRTUAL_HOST},
};

/// Field numbers, from envoy/config/route/v3.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;
const VIRTUAL_HOST_NAME: u32 = 1;
const VIRTUAL_HOST_DOMAINS: u32 = 2;

/// A snapshot's route tables as delta Envoys get them.
#[derive(Clone, Debug, Default)]
pub struct VhdsResources {
    /// Route tables without their virtual hosts, each loading them over VHDS.
    pub route_tables: TypeResources,
    /// Every virtual host of every table, by resource name `<table>/<virtual host>`.
    pub virtual_hosts: VirtualHosts,
}

/// The `VirtualHost` resources of a snapshot: where each lies in its route table's bytes.
#[derive(Clone, Debug, Default)]
pub struct VirtualHosts {
    /// A hash of every resource's version: `system_version_info`.
    pub version: String,
    /// Resource name → a hash of its bytes.
    pub versions: BTreeMap<String, String>,
    hosts: BTreeMap<String, Host>,
    tables: BTreeSet<String>,
}

#[derive(Clone, Debug)]
struct Host {
    table: String,
    /// The virtual host's bytes within its table's, and its `name` field within those.
    bytes: Range<usize>,
    name_field: Option<Range<usize>>,
    /// Lowercase, as Envoy matches them.
    domains: Vec<String>,
}

impl VhdsResources {
    /// Splits the state-of-the-world route tables `routes`. A table whose bytes cannot be
    /// read (never ours) is served whole.
    pub fn new(routes: &TypeResources) -> Self {
        let mut tables = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for (table, any) in &routes.items {
            match split(table, &any.value) {
                Ok((head, found)) => {
                    tables.insert(table.clone(), head);
                    hosts.extend(found);
                }
                Err(error) => {
                    tracing::warn!(%table, %error, "route table not split for VHDS; served whole");
                    tables.insert(table.clone(), any.clone());
                }
            }
        }
        let versions: BTreeMap<String, String> = hosts
            .iter()
            .map(|(name, host)| (name.clone(), host_version(name, host, &routes.items)))
            .collect();
        let mut hash = Sha256::new();
        for (name, version) in &versions {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update(version.as_bytes());
        }
        let virtual_hosts = VirtualHosts {
            version: hex::encode(&hash.finalize()[..8]),
            versions,
            tables: tables.keys().cloned().collect(),
            hosts,
        };
        Self {
            route_tables: TypeResources::new(tables),
            virtual_hosts,
        }
    }
}

impl VirtualHosts {
    /// The resource `name`, its bytes taken from the route tables `routes` it was indexed from.
    pub fn resource(&self, name: &str, routes: &TypeResources) -> Option<Any> {
        let host = self.hosts.get(name)?;
        let table = &routes.items.get(&host.table)?.value;
        Some(Any {
            type_url: VIRTUAL_HOST.into(),
            value: host_parts(name, host, table).concat(),
        })
    }

    /// The virtual host of `table` whose domains match `host` as Envoy matches them: an
    /// exact domain, then the longest `*suffix`, then the longest `prefix*`, then `*`.
    fn matching(&self, table: &str, host: &str) -> Option<&str> {
        let host = strip_port(host).to_ascii_lowercase();
        let prefix = format!("{table}/");
        let mut best: Option<((u8, usize), &str)> = None;
        let in_table = self
            .hosts
            .range(prefix.clone()..)
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
    fn versions(&self) -> &BTreeMap<String, String> {
        &self.versions
    }

    fn lookup(&self, name: &str) -> Lookup<'_> {
        match name.rsplit_once('/') {
            Some((table, host)) if self.tables.contains(table) => Lookup::Alias(self.matching(table, host)),
            Some(_) if !self.tables.contains(name) => Lookup::Alias(None),
            _ => Lookup::Namespace,
        }
    }

    fn empty_namespaces(&self) -> Vec<&str> {
        let mut empty: BTreeSet<&str> = self.tables.iter().map(String::as_str).collect();
        for host in self.hosts.values() {
            empty.remove(host.table.as_str());
        }
        empty.into_iter().collect()
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

/// The bytes of resource `name`: its own `name`, then the virtual host's other fields.
fn host_parts<'a>(name: &str, host: &Host, table: &'a [u8]) -> [std::borrow::Cow<'a, [u8]>; 3] {
    let mut name_field = Vec::with_capacity(name.len() + 6);
    prost::encoding::string::encode(VIRTUAL_HOST_NAME, &name.to_string(), &mut name_field);
    let bytes = &table[host.bytes.clone()];
    let (before, after) = match &host.name_field {
        Some(field) => (&bytes[..field.start], &bytes[field.end..]),
        None => (bytes, &[][..]),
    };
    [name_field.into(), before.into(), after.into()]
}

/// A hash of the type and bytes of resource `name` (as `snapshot`'s item versions).
fn host_version(name: &str, host: &Host, routes: &BTreeMap<String, Any>) -> String {
    let mut hash = Sha256::new();
    hash.update((VIRTUAL_HOST.len() as u64).to_le_bytes());
    hash.update(VIRTUAL_HOST.as_bytes());
    if let Some(table) = routes.get(&host.table) {
        for part in host_parts(name, host, &table.value) {
            hash.update(&part);
        }
    }
    hex::encode(&hash.finalize()[..8])
}

/// The VHDS form of route table `table` (its fields but the virtual hosts, and `vhds`),
/// and its virtual hosts by resource name.
fn split(table: &str, bytes: &[u8]) -> Result<(Any, Vec<(String, Host)>), SplitError> {
    let mut head = Vec::new();
    let mut hosts = Vec::new();
    for field in fields(bytes)? {
        if field.number != ROUTE_CONFIGURATION_VIRTUAL_HOSTS {
            head.extend_from_slice(&bytes[field.whole.clone()]);
            continue;
        }
        let host_bytes = &bytes[field.payload.clone()];
        let mut host = Host {
            table: table.to_string(),
            bytes: field.payload.clone(),
            name_field: None,
            domains: Vec::new(),
        };
        let mut name = String::new();
        for inner in fields(host_bytes)? {
            let value = || String::from_utf8_lossy(&host_bytes[inner.payload.clone()]).into_owned();
            match inner.number {
                VIRTUAL_HOST_NAME => {
                    name = value();
                    host.name_field = Some(inner.whole.clone());
                }
                VIRTUAL_HOST_DOMAINS => host.domains.push(value().to_ascii_lowercase()),
                _ => {}
            }
        }
        // Envoy finds a resource's namespace before the last '/': none in the host's part.
        hosts.push((format!("{table}/{}", name.replace('/', "%2F")), host));
    }
    let vhds = RouteConfiguration {
        vhds: Some(Vhds {
            config_source: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    // Protobuf merges concatenated messages: the table's fields, then `vhds`.
    vhds.encode_raw(&mut head);
    Ok((
        Any {
            type_url: ROUTE.into(),
            value: head,
        },
        hosts,
    ))
}

/// Why a route table's bytes could not be split.
#[derive(Debug, thiserror::Error)]
enum SplitError {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
}

/// One top-level field of an encoded message: its number, all its bytes, and (length-
/// delimited fields) its payload.
struct Field {
    number: u32,
    whole: Range<usize>,
    payload: Range<usize>,
}

/// The top-level fields of `bytes`, in order.
fn fields(bytes: &[u8]) -> Result<Vec<Field>, SplitError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let start = bytes.len() - rest.len();
        let (number, wire_type) = decode_key(&mut rest)?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest)?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                usize::try_from(decode_varint(&mut rest)?).map_err(|_| SplitError::Malformed("length too large"))?
            }
            WireType::StartGroup | WireType::EndGroup => return Err(SplitError::Malformed("groups not supported")),
        };
        if skip > rest.len() {
            return Err(SplitError::Malformed("field past the end"));
        }
        let payload_start = bytes.len() - rest.len();
        rest = &rest[skip..];
        out.push(Field {
            number,
            whole: start..payload_start + skip,
            payload: payload_start..payload_start + skip,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

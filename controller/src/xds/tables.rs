//! Route tables as a snapshot holds them: each table's own fields (its head) and its
//! virtual hosts one by one, each with its bytes, VHDS name, domains and versions, so that a
//! snapshot made from the previous one with one virtual host changed replaces that one
//! ([`super::chunked::ChunkMap`]) and the state-of-the-world table is packed only when a
//! state-of-the-world stream reads it.
//!
//! # Versions
//! A table's version is a hash of its name and head plus the sum (wrapping) of a hash of
//! each virtual host's bytes: changing one host changes the sum by what that host changed,
//! without hashing the others. The sum does not see the hosts' order, and need not: Envoy
//! picks a virtual host by its domains (which are unique in a table), never by its place.
use std::{ops::Range, sync::Arc};

use envoy_types::pb::{
    envoy::config::route::v3::{RouteConfiguration, Vhds},
    google::protobuf::Any,
};
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{
    chunked::ChunkMap,
    snapshot::{ROUTE, VIRTUAL_HOST},
};

/// What holds a virtual host's deterministic bytes (a cached translation), shared with the
/// route tables served.
pub trait CanonicalBytes: std::fmt::Debug + Send + Sync {
    fn canonical_bytes(&self) -> &[u8];
}

/// Field numbers, from envoy/config/route/v3.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;
const VIRTUAL_HOST_NAME: u32 = 1;
const VIRTUAL_HOST_DOMAINS: u32 = 2;

/// The bytes of a virtual host: shared with its cached translation, or its own (a table
/// read from its packed form).
#[derive(Debug)]
enum HostBytes {
    Translated(Arc<dyn CanonicalBytes>),
    Own(Vec<u8>),
}

/// One virtual host of a route table, as served.
#[derive(Debug)]
pub struct HostEntry {
    bytes: HostBytes,
    /// Its VHDS resource name, `<table>/<name>` (a `/` in the name escaped).
    pub(crate) resource: String,
    /// The route table it belongs to.
    pub(crate) table: String,
    /// Where its `name` field lies in its bytes.
    name_field: Option<Range<usize>>,
    /// Lowercase, as Envoy matches them.
    pub(crate) domains: Vec<String>,
    /// The version of its VHDS resource: a hash of the resource's type and bytes.
    pub(crate) version: String,
    /// Its share of its table's version (see the module doc).
    digest: u64,
}

impl HostEntry {
    /// The virtual host of `table` translated as `translation` (its canonical bytes).
    pub(crate) fn translated(table: &str, translation: Arc<dyn CanonicalBytes>) -> Result<Self, SplitError> {
        Self::new(table, HostBytes::Translated(translation))
    }

    fn new(table: &str, bytes: HostBytes) -> Result<Self, SplitError> {
        let mut entry = Self {
            bytes,
            resource: String::new(),
            table: table.to_string(),
            name_field: None,
            domains: Vec::new(),
            version: String::new(),
            digest: 0,
        };
        let bytes = entry.bytes();
        let mut name = String::new();
        let mut name_field = None;
        let mut domains = Vec::new();
        for inner in fields(bytes)? {
            let value = || String::from_utf8_lossy(&bytes[inner.payload.clone()]).into_owned();
            match inner.number {
                VIRTUAL_HOST_NAME => {
                    name = value();
                    name_field = Some(inner.whole.clone());
                }
                VIRTUAL_HOST_DOMAINS => domains.push(value().to_ascii_lowercase()),
                _ => {}
            }
        }
        let digest = digest64(&[bytes]);
        // Envoy finds a resource's namespace before the last '/': none in the host's part.
        entry.resource = format!("{table}/{}", name.replace('/', "%2F"));
        entry.name_field = name_field;
        entry.domains = domains;
        entry.digest = digest;
        let mut hash = Sha256::new();
        hash.update((VIRTUAL_HOST.len() as u64).to_le_bytes());
        hash.update(VIRTUAL_HOST.as_bytes());
        for part in entry.resource_parts() {
            hash.update(&part);
        }
        entry.version = hex::encode(&hash.finalize()[..8]);
        Ok(entry)
    }

    /// The virtual host's bytes, as its route table carries them.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            HostBytes::Translated(translation) => translation.canonical_bytes(),
            HostBytes::Own(bytes) => bytes,
        }
    }

    /// The bytes of its VHDS resource: its resource name as `name`, then its other fields.
    fn resource_parts(&self) -> [std::borrow::Cow<'_, [u8]>; 3] {
        let mut name_field = Vec::with_capacity(self.resource.len() + 6);
        prost::encoding::string::encode(VIRTUAL_HOST_NAME, &self.resource, &mut name_field);
        let bytes = self.bytes();
        let (before, after) = match &self.name_field {
            Some(field) => (&bytes[..field.start], &bytes[field.end..]),
            None => (bytes, &[][..]),
        };
        [name_field.into(), before.into(), after.into()]
    }

    /// Its VHDS resource.
    pub(crate) fn resource(&self) -> Any {
        Any {
            type_url: VIRTUAL_HOST.into(),
            value: self.resource_parts().concat(),
        }
    }
}

/// One route table (see the module doc).
#[derive(Clone, Debug)]
pub struct ServedTable {
    pub(crate) name: String,
    /// Its fields but the virtual hosts, encoded (they come first in its bytes).
    head: Arc<Vec<u8>>,
    /// Its virtual hosts by order key, in the table's order: their names for a table of a
    /// Proxy whose virtual hosts are in name order (they then change by name), else their
    /// places, zero-padded.
    hosts: ChunkMap<Arc<HostEntry>>,
    head_digest: u64,
    sum: u64,
    /// Its encoded size.
    pub(crate) bytes: usize,
}

impl ServedTable {
    /// A table of `head` (its fields but the virtual hosts) and `hosts` (name → entry), the
    /// table's order being the names'.
    pub(crate) fn by_name(
        head: &RouteConfiguration,
        hosts: impl IntoIterator<Item = (String, Arc<HostEntry>)>,
    ) -> Self {
        let mut table = Self::empty(&head.name, head.encode_to_vec());
        for (name, entry) in hosts {
            table.set(name, Some(entry));
        }
        table
    }

    fn empty(name: &str, head: Vec<u8>) -> Self {
        Self {
            name: name.to_string(),
            head_digest: digest64(&[name.as_bytes(), &head]),
            bytes: head.len(),
            head: Arc::new(head),
            hosts: ChunkMap::default(),
            sum: 0,
        }
    }

    /// Splits a packed route table (a table this process packed, `canonical`): its other
    /// fields first, then its virtual hosts.
    pub(crate) fn from_packed(name: &str, any: &Any) -> Result<Self, SplitError> {
        let bytes = &any.value;
        let mut head = Vec::new();
        let mut hosts = Vec::new();
        for field in fields(bytes)? {
            if field.number == ROUTE_CONFIGURATION_VIRTUAL_HOSTS {
                hosts.push(bytes[field.payload.clone()].to_vec());
            } else {
                // Ours come first; another's, after the hosts, are read the same.
                head.extend_from_slice(&bytes[field.whole.clone()]);
            }
        }
        let mut table = Self::empty(name, head);
        let width = hosts.len().to_string().len();
        for (i, host) in hosts.into_iter().enumerate() {
            let entry = HostEntry::new(name, HostBytes::Own(host))?;
            table.set(format!("{i:0width$}"), Some(Arc::new(entry)));
        }
        Ok(table)
    }

    /// Sets (or with `None` removes) the virtual host under order key `key`; the entry it
    /// replaces.
    pub(crate) fn set(&mut self, key: String, entry: Option<Arc<HostEntry>>) -> Option<Arc<HostEntry>> {
        let old = match entry {
            Some(entry) => {
                self.sum = self.sum.wrapping_add(entry.digest);
                self.bytes += entry.bytes().len() + 11;
                self.hosts.insert(key, entry)
            }
            None => self.hosts.remove(&key),
        };
        if let Some(old) = &old {
            self.sum = self.sum.wrapping_sub(old.digest);
            self.bytes -= old.bytes().len() + 11;
        }
        old
    }

    /// Its virtual hosts, in its order.
    pub(crate) fn hosts(&self) -> impl Iterator<Item = &Arc<HostEntry>> + '_ {
        self.hosts.values()
    }

    /// Its version (see the module doc).
    pub(crate) fn version(&self) -> String {
        hex::encode(self.head_digest.wrapping_add(self.sum).to_be_bytes())
    }

    /// The state-of-the-world table: its head, then each virtual host.
    pub(crate) fn packed(&self) -> Any {
        let mut value = Vec::with_capacity(self.bytes);
        value.extend_from_slice(&self.head);
        for host in self.hosts.values() {
            let bytes = host.bytes();
            prost::encoding::encode_key(
                ROUTE_CONFIGURATION_VIRTUAL_HOSTS,
                prost::encoding::WireType::LengthDelimited,
                &mut value,
            );
            prost::encoding::encode_varint(bytes.len() as u64, &mut value);
            value.extend_from_slice(bytes);
        }
        Any {
            type_url: ROUTE.into(),
            value,
        }
    }

    /// The VHDS table: its head and `vhds { config_source: ads }`, no virtual host.
    pub(crate) fn vhds_head(&self) -> Any {
        use envoy_types::pb::envoy::config::core::v3::{
            AggregatedConfigSource, ApiVersion, ConfigSource, config_source,
        };
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
        let mut value = self.head.as_ref().clone();
        // Protobuf merges concatenated messages: the table's fields, then `vhds`.
        vhds.encode_raw(&mut value);
        Any {
            type_url: ROUTE.into(),
            value,
        }
    }
}

/// The first 8 bytes of a SHA-256 of `parts`, as a number.
pub(crate) fn digest64(parts: &[&[u8]]) -> u64 {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Why a route table's bytes could not be split.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
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

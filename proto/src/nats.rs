//! NATS names. Every process uses these constants; none writes a name of its own.
//!
//! ## Keys
//! KV keys are `<namespace>.<name>` of the resource (Proxy or Upstream). Kubernetes names
//! are DNS labels/subdomains (`[a-z0-9.-]`), all valid in NATS keys.
//!
//! ## Values larger than a NATS message
//! A NATS message is capped at 1 MiB by default (`max_payload`). A Proxy above
//! [`CHUNK_BYTES`] is split: the encoded Proxy is cut into chunks written under
//! `<namespace>.<name>.part.<i>` first, then the head key `<namespace>.<name>` is written
//! last with a `kgw.v1.ChunkManifest` naming the part count and a digest, so a reader
//! that sees the head sees a complete set. Keys with a `.part.` segment are never heads;
//! readers skip them when listing. (Today's Proxies fit in one message; the layout is
//! reserved so splitting is a change of writer and reader only, not of keys.)
//!
//! ## A Proxy's virtual hosts
//! A Proxy is stored as a head under `<namespace>.<name>`: the Proxy with every HTTP
//! listener's virtual hosts left out. Each virtual host is a `kgw.v1.VirtualHostPart`
//! (its listener's name and the host) under [`vhost_part_key`]:
//! `<namespace>.<name>._vh.<listener>/<virtual host>`, the last token escaped to NATS key
//! characters (see [`key_token`]). A change to one host writes only its key. `_` never
//! occurs in a Kubernetes name, so a head never contains `._vh.`. Writers put parts before
//! their head and delete a head before its parts; a reader assembles a Proxy from its
//! head and the parts naming it, virtual hosts ordered by name within each listener.
//!
//! ## A large virtual host's routes
//! A virtual host of [`PAGED_FROM_ROUTES`] routes or more keeps its routes in pages, in
//! two levels:
//! - each `kgw.v1.RoutePage` holds consecutive routes, under [`page_key`] with
//!   [`PageKind::Routes`]: `<virtual host's key>._p.<id>`. A page ends before a route whose
//!   name hashes to 0 modulo [`PAGE_ROUTES`] (or at [`PAGE_ROUTES_MAX`] routes);
//! - each `kgw.v1.PageIndex` lists the ids of consecutive route pages, under [`page_key`]
//!   with [`PageKind::Index`]: `<virtual host's key>._i.<id>`. An index ends before a
//!   page whose id is 0 modulo [`INDEX_PAGES`] (or at [`INDEX_PAGES_MAX`] pages);
//! - the host's part lists the index ids in order and has no routes of its own.
//!
//! An id is the first 8 bytes of the sha256 of the page's value ([`page_id`]), written in
//! a key as 16 lowercase hex digits. The cuts depend on the routes, not their positions, so
//! one new or edited route changes one route page and one index page (two where a cut
//! moves): a route change writes those and the host's list of index ids, about 8 bytes
//! per 256 routes, not the host. Pages are put before the part that lists them and deleted
//! after it (a page's key is deeper), and a page's content never changes under its key: a
//! reader that holds a part's every page holds the host as written.
//!
//! ## Headers
//! A put or delete of a head key carries the W3C trace context of the change that caused
//! it ([`TRACEPARENT_HEADER`], [`TRACESTATE_HEADER`]): the reader's work continues that
//! trace. Absent when the writer exports no traces.

/// W3C trace context header of a key-value write (`00-<trace id>-<span id>-<flags>`).
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Vendor trace state that goes with [`TRACEPARENT_HEADER`].
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Separates a Proxy's key from its virtual host's ([`vhost_part_key`]).
const VHOST_PART_MARK: &str = "._vh.";

/// The key of virtual host `vhost` of listener `listener` of the Proxy under `head`.
pub fn vhost_part_key(head: &str, listener: &str, vhost: &str) -> String {
    format!("{head}{VHOST_PART_MARK}{}", key_token(&format!("{listener}/{vhost}")))
}

/// The head key a virtual host's key (or one of its pages' keys) belongs to; None for any
/// other key.
pub fn vhost_part_head(key: &str) -> Option<&str> {
    key.split_once(VHOST_PART_MARK).map(|(head, _)| head)
}

/// A virtual host has its routes in pages from this many routes ([`page_key`]).
pub const PAGED_FROM_ROUTES: usize = 32;
/// Routes per page on average: a page ends before a route whose name hashes to 0 modulo this.
pub const PAGE_ROUTES: u64 = 16;
/// At most this many routes in one page (many routes of one name would else be one page).
pub const PAGE_ROUTES_MAX: usize = 64;
/// Route pages per index page on average: an index ends before a page whose id is 0 modulo
/// this.
pub const INDEX_PAGES: u64 = 16;
/// At most this many route pages in one index page.
pub const INDEX_PAGES_MAX: usize = 64;

/// What a page of a virtual host holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageKind {
    /// A `kgw.v1.PageIndex`: ids of route pages.
    Index,
    /// A `kgw.v1.RoutePage`: routes.
    Routes,
}

impl PageKind {
    /// Separates a virtual host's key from the page's id in the page's key.
    const fn mark(self) -> &'static str {
        match self {
            PageKind::Index => "._i.",
            PageKind::Routes => "._p.",
        }
    }
}

/// The key of page `id` (of `kind`) of the virtual host under `vhost_key`.
pub fn page_key(vhost_key: &str, kind: PageKind, id: u64) -> String {
    format!("{vhost_key}{}{id:016x}", kind.mark())
}

/// Every page key of the virtual host under `vhost_key` starts with this (and no other key
/// does: a virtual host's last token has no `.`).
pub fn pages_prefix(vhost_key: &str) -> String {
    format!("{vhost_key}._")
}

/// The virtual host's key, the kind and the id of a page's key; None for any other key.
pub fn page_of(key: &str) -> Option<(&str, PageKind, u64)> {
    // A page's last token is 16 hex digits, after its kind's mark.
    let (rest, id) = key.rsplit_once('.')?;
    if id.len() != 16 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let id = u64::from_str_radix(id, 16).ok()?;
    let (vhost_key, kind) = if let Some(vhost_key) = rest.strip_suffix("._i") {
        (vhost_key, PageKind::Index)
    } else {
        (rest.strip_suffix("._p")?, PageKind::Routes)
    };
    vhost_part_head(vhost_key).map(|_| (vhost_key, kind, id))
}

/// The id of a page whose value is `value`: the first 8 bytes of its sha256, big-endian.
pub fn page_id(value: &[u8]) -> u64 {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(value);
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Whether a route named `name` starts a page (unless it is its host's first route).
pub fn starts_page(name: &str) -> bool {
    // FNV-1a: a fixed hash, the same in every process and release.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % PAGE_ROUTES == 0
}

/// Where the pages of a host's routes begin: route indices, the first 0 (none for no routes).
pub fn page_starts<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    cuts(names.into_iter().map(starts_page), PAGE_ROUTES_MAX)
}

/// Where the index pages of a host's route pages begin: page indices, the first 0.
pub fn index_starts(page_ids: &[u64]) -> Vec<usize> {
    cuts(page_ids.iter().map(|id| id % INDEX_PAGES == 0), INDEX_PAGES_MAX)
}

/// The starts of runs that begin where `starts` says, at the first item, or after `max`.
fn cuts(starts: impl Iterator<Item = bool>, max: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for (i, start) in starts.enumerate() {
        let last = out.last().copied();
        if last.is_none_or(|l| start || i - l >= max) {
            out.push(i);
        }
    }
    out
}

/// `text` as one NATS key token: ASCII letters, digits, `-`, `_` and `/` stay; every other
/// byte becomes `=` and two hex digits (so `.` does not split the token and `*` is no
/// wildcard). Distinct texts give distinct tokens.
pub fn key_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("={byte:02X}"));
        }
    }
    out
}

/// Proxies, written by gateway, read by controller. Key: `<ns>.<gateway name>`.
pub const PROXIES_BUCKET: &str = "kgw_proxies";
/// Upstreams, written by discovery (its replicas share the keys: [`DISCOVERY_SHARDS_BUCKET`]),
/// read by controller and gateway. Key: `<ns>.<name>`.
pub const UPSTREAMS_BUCKET: &str = "kgw_upstreams";
/// Resource status (conditions) as YAML, written by gateway's reporter.
/// Key: `<kind>.<ns>.<name>`. In directory mode this is where status lives.
pub const STATUS_BUCKET: &str = "kgw_status";

/// Envoy access-log entries as JSON lines: `kgw.accesslog.<ns>.<gateway>`.
pub const ACCESS_LOG_SUBJECT_PREFIX: &str = "kgw.accesslog";
/// The JetStream stream over `kgw.accesslog.>` that holds every access-log entry once:
/// each sink replica publishes every entry with a `Nats-Msg-Id` that is the same on every
/// replica, and the stream's duplicate window keeps one copy. Created by the sink.
/// Readers should consume this stream: a plain subscriber to the subjects sees one copy
/// per replica.
pub const ACCESS_LOG_STREAM: &str = "kgw_access_log";
/// Discovery replicas' heartbeats.
pub const DISCOVERY_HEARTBEAT_SUBJECT: &str = "kgw.discovery.heartbeat";
/// How discovery replicas share the work: the Upstream keys fall into [`DISCOVERY_SHARDS`]
/// shards ([`discovery_shard`]); each shard has one owner at a time, a lease in this bucket.
/// Keys:
/// - `member.<replica>`: each replica's presence, put every [`DISCOVERY_LEASE_TTL_MS`] / 3;
/// - `shard.<n>`: the replica that owns shard `n`. Taken with a create (only when no one
///   holds it), renewed by an update that names the revision it read, released by a delete
///   naming it.
///
/// The bucket's `max_age` is the lease TTL: a replica that stops renewing (killed, cut off)
/// loses its entries to expiry, and the others take its shards. A replica stops writing a
/// shard before its lease can expire (2/3 of the TTL after its last renewal), and hands a
/// shard over only after its writer has stopped writing it, so no key has two writers.
pub const DISCOVERY_SHARDS_BUCKET: &str = "kgw_discovery_shards";
/// Function discovery's findings per Upstream (`ProbeStatus`, key: the Upstream's key),
/// written by the replica that owns the key's shard, for `discovery replicas`.
pub const DISCOVERY_PROBES_BUCKET: &str = "kgw_discovery_probes";
/// Shards of the Upstream keys: enough to spread over a few replicas evenly, few enough that
/// leases are cheap.
pub const DISCOVERY_SHARDS: u16 = 16;
/// Lifetime of a shard lease or a member entry without renewal.
pub const DISCOVERY_LEASE_TTL_MS: u64 = 4_500;

/// The shard of an Upstream key: FNV-1a (64 bit) of the key's bytes, modulo
/// [`DISCOVERY_SHARDS`]. Part of the contract between replicas of different versions:
/// never change it without changing the bucket's name.
pub fn discovery_shard(key: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(DISCOVERY_SHARDS)) as u16
}

/// Size above which a value is split into parts (see the module docs).
pub const CHUNK_BYTES: usize = 900 * 1024;

/// The KV key of a namespaced resource.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// Splits a KV key back into (namespace, name); names may contain dots, namespaces may not.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.')
}

/// `kgw.accesslog.<ns>.<gateway>`.
pub fn access_log_subject(namespace: &str, gateway: &str) -> String {
    format!("{ACCESS_LOG_SUBJECT_PREFIX}.{namespace}.{gateway}")
}

/// Envoy's node metadata `role` of a Gateway: `<ns>~<gateway>`.
pub fn role(namespace: &str, gateway: &str) -> String {
    format!("{namespace}~{gateway}")
}

/// A Proxy's KV key (`<ns>.<gateway>`) → its Envoys' role (`<ns>~<gateway>`); the inverse
/// of [`role_to_key`].
pub fn key_to_role(key: &str) -> String {
    match split_key(key) {
        Some((namespace, name)) => role(namespace, name),
        None => key.to_string(),
    }
}

/// Envoy's node metadata `role` (`<ns>~<gateway>`) → the Proxy's KV key.
pub fn role_to_key(role: &str) -> Option<String> {
    let (ns, name) = role.split_once('~')?;
    (!ns.is_empty() && !name.is_empty()).then(|| key(ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_cut_where_route_names_say() {
        let names: Vec<String> = (0..2000).map(|i| format!("default/route-{i}/rule-0")).collect();
        let starts = page_starts(names.iter().map(String::as_str));
        assert_eq!(starts[0], 0);
        let pages = starts.len();
        assert!(
            (2000 / 32..=2000 / 8).contains(&pages),
            "about 16 routes a page: {pages} pages"
        );
        assert!(starts.windows(2).all(|w| w[1] - w[0] <= PAGE_ROUTES_MAX));
        // One route inserted: the pages before and after it are cut where they were.
        let mut inserted = names.clone();
        inserted.insert(1000, "default/new/rule-0".into());
        let after = page_starts(inserted.iter().map(String::as_str));
        let shifted: Vec<usize> = after.iter().map(|&s| if s > 1000 { s - 1 } else { s }).collect();
        let same = starts.iter().filter(|s| shifted.contains(s)).count();
        assert!(same + 1 >= starts.len(), "{same} of {} cuts kept", starts.len());
        // Many routes of one name: pages of at most PAGE_ROUTES_MAX.
        let one = vec!["x"; 200];
        assert!(page_starts(one).windows(2).all(|w| w[1] - w[0] <= PAGE_ROUTES_MAX));
        assert!(page_starts(std::iter::empty::<&str>()).is_empty());
    }

    #[test]
    fn index_pages_are_cut_where_page_ids_say() {
        let ids: Vec<u64> = (0..2000_u64).map(|i| page_id(&i.to_le_bytes())).collect();
        let starts = index_starts(&ids);
        assert_eq!(starts[0], 0);
        assert!(
            (2000 / 32..=2000 / 8).contains(&starts.len()),
            "{} index pages",
            starts.len()
        );
        assert!(starts.windows(2).all(|w| w[1] - w[0] <= INDEX_PAGES_MAX));
        // One page replaced: every cut but the ones around it stays.
        let mut replaced = ids.clone();
        replaced[1000] = page_id(b"another page");
        let after = index_starts(&replaced);
        let kept = starts.iter().filter(|s| after.contains(s)).count();
        assert!(kept + 1 >= starts.len(), "{kept} of {} cuts kept", starts.len());
        assert!(index_starts(&[]).is_empty());
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(key("default", "gw.a"), "default.gw.a");
        assert_eq!(split_key("default.gw.a"), Some(("default", "gw.a")));
        assert_eq!(role_to_key("default~gw"), Some("default.gw".into()));
        assert_eq!(key_to_role("default.gw.a"), "default~gw.a");
        assert_eq!(role_to_key(&key_to_role("default.gw.a")), Some("default.gw.a".into()));
        assert_eq!(role_to_key("nogateway"), None);
        assert_eq!(role_to_key("~gw"), None);
    }

    #[test]
    fn virtual_host_keys_name_their_head_and_are_one_token() {
        let key = vhost_part_key("default.gw.a", "listener~8080", "listener~8080~*.example.com");
        assert_eq!(
            key,
            "default.gw.a._vh.listener=7E8080/listener=7E8080=7E=2A=2Eexample=2Ecom"
        );
        assert_eq!(vhost_part_head(&key), Some("default.gw.a"));
        assert_eq!(vhost_part_head("default.gw.a"), None);
        let page = page_key(&key, PageKind::Routes, 0xff);
        assert!(page.ends_with("._p.00000000000000ff"), "{page}");
        assert_eq!(
            vhost_part_head(&page),
            Some("default.gw.a"),
            "a page belongs to its head"
        );
        assert_eq!(page_of(&page), Some((key.as_str(), PageKind::Routes, 0xff)));
        let index = page_key(&key, PageKind::Index, u64::MAX);
        assert_eq!(page_of(&index), Some((key.as_str(), PageKind::Index, u64::MAX)));
        assert!(page.starts_with(&pages_prefix(&key)) && index.starts_with(&pages_prefix(&key)));
        assert_eq!(page_of(&key), None);
        assert_eq!(
            page_of("default.gw.a._p.00000000000000ff"),
            None,
            "a page is a virtual host's"
        );
        assert_eq!(
            page_of(&format!("{key}._p.00FF")),
            None,
            "ids are 16 lowercase hex digits"
        );
        assert_eq!(page_of(&format!("{key}._x.00000000000000ff")), None);
        assert!(
            page.matches('.').count() > key.matches('.').count(),
            "put before, deleted after"
        );
        assert!(!key.contains(".part."), "never taken for a chunk of a split value");
        // Distinct names, distinct keys (the escape is reversible).
        assert_ne!(key_token("a=2E"), key_token("a."));
    }
}

/// The broker's users, one per process, and what each may publish and subscribe to: the
/// least each needs (gateway writes Proxies and status, discovery writes Upstreams, the
/// controller only reads buckets, the access-log sink only publishes
/// access logs). Replies come to a per-user inbox prefix, so no user sees another's.
pub mod users {
    use super::{
        ACCESS_LOG_STREAM, ACCESS_LOG_SUBJECT_PREFIX, DISCOVERY_HEARTBEAT_SUBJECT, DISCOVERY_PROBES_BUCKET,
        DISCOVERY_SHARDS_BUCKET, PROXIES_BUCKET, STATUS_BUCKET, UPSTREAMS_BUCKET,
    };

    pub const GATEWAY: &str = "gateway";
    pub const CONTROLLER: &str = "controller";
    pub const DISCOVERY: &str = "discovery";
    pub const ACCESS_LOG: &str = "access-log";
    /// Every process's user.
    pub const ALL: [&str; 4] = [GATEWAY, CONTROLLER, DISCOVERY, ACCESS_LOG];

    /// Subjects a user may publish to and subscribe to (NATS wildcards).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Permissions {
        pub publish: Vec<String>,
        pub subscribe: Vec<String>,
    }

    /// Where a user's replies arrive (`<prefix>.>`); set on its connection.
    pub fn inbox_prefix(user: &str) -> String {
        format!("_INBOX_{}", user.replace(['.', '*', '>', ' '], "_"))
    }

    /// JetStream API subjects to open, list, watch and read a key-value bucket.
    fn kv_read(bucket: &str) -> Vec<String> {
        let stream = format!("KV_{bucket}");
        vec![
            "$JS.API.INFO".into(),
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
            // Flow-control answers of the ordered consumers behind watches.
            format!("$JS.FC.{stream}.>"),
        ]
    }

    /// Reading, plus creating the bucket and putting and deleting keys.
    fn kv_write(bucket: &str) -> Vec<String> {
        let mut subjects = kv_read(bucket);
        subjects.push(format!("$JS.API.STREAM.CREATE.KV_{bucket}"));
        subjects.push(format!("$KV.{bucket}.>"));
        subjects
    }

    /// The permissions of `user`, one of [`ALL`].
    pub fn permissions(user: &str) -> Option<Permissions> {
        let publish: Vec<String> = match user {
            GATEWAY => [kv_write(PROXIES_BUCKET), kv_write(STATUS_BUCKET)].concat(),
            CONTROLLER => [kv_read(PROXIES_BUCKET), kv_read(UPSTREAMS_BUCKET)].concat(),
            DISCOVERY => [
                kv_write(UPSTREAMS_BUCKET),
                kv_write(DISCOVERY_SHARDS_BUCKET),
                kv_write(DISCOVERY_PROBES_BUCKET),
                vec![
                    DISCOVERY_HEARTBEAT_SUBJECT.into(),
                    format!("{DISCOVERY_HEARTBEAT_SUBJECT}.>"),
                ],
            ]
            .concat(),
            // JetStream publishes (plain publishes answered on the inbox) and creating the
            // stream, or reading its config when it exists. Not STREAM.UPDATE: a sink cannot
            // change the limits an operator set on the stream, nor purge or delete it.
            ACCESS_LOG => vec![
                format!("{ACCESS_LOG_SUBJECT_PREFIX}.>"),
                format!("$JS.API.STREAM.CREATE.{ACCESS_LOG_STREAM}"),
                format!("$JS.API.STREAM.INFO.{ACCESS_LOG_STREAM}"),
            ],
            _ => return None,
        };
        let mut publish = publish;
        publish.sort();
        publish.dedup();
        Some(Permissions {
            publish,
            subscribe: vec![format!("{}.>", inbox_prefix(user))],
        })
    }
}

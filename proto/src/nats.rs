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

/// Proxies, written by gateway, read by controller. Key: `<ns>.<gateway name>`.
pub const PROXIES_BUCKET: &str = "kgw_proxies";
/// Upstreams, written by discovery and gateway, read by controller. Key: `<ns>.<name>`.
pub const UPSTREAMS_BUCKET: &str = "kgw_upstreams";
/// Resource status (conditions) as YAML, written by gateway's reporter.
/// Key: `<kind>.<ns>.<name>`. In directory mode this is where status lives.
pub const STATUS_BUCKET: &str = "kgw_status";

/// Controller → gateway translation reports: `kgw.reports.<ns>.<proxy>`.
pub const REPORTS_SUBJECT_PREFIX: &str = "kgw.reports";
/// Envoy access-log entries as JSON lines: `kgw.accesslog.<ns>.<gateway>`.
pub const ACCESS_LOG_SUBJECT_PREFIX: &str = "kgw.accesslog";
/// Discovery replicas' heartbeats.
pub const DISCOVERY_HEARTBEAT_SUBJECT: &str = "kgw.discovery.heartbeat";
/// Reserved for work shared by discovery replicas (queue group [`DISCOVERY_QUEUE_GROUP`]).
/// Not used yet: today every discovery replica does all the work and writes only what
/// changed (sharing the work is issue 11).
pub const DISCOVERY_WORK_SUBJECT: &str = "kgw.discovery.work";
/// Reserved, see [`DISCOVERY_WORK_SUBJECT`].
pub const DISCOVERY_QUEUE_GROUP: &str = "kgw-discovery";

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

/// `kgw.reports.<ns>.<proxy>`.
pub fn reports_subject(namespace: &str, name: &str) -> String {
    format!("{REPORTS_SUBJECT_PREFIX}.{namespace}.{name}")
}

/// `kgw.accesslog.<ns>.<gateway>`.
pub fn access_log_subject(namespace: &str, gateway: &str) -> String {
    format!("{ACCESS_LOG_SUBJECT_PREFIX}.{namespace}.{gateway}")
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
    fn keys_round_trip() {
        assert_eq!(key("default", "gw.a"), "default.gw.a");
        assert_eq!(split_key("default.gw.a"), Some(("default", "gw.a")));
        assert_eq!(role_to_key("default~gw"), Some("default.gw".into()));
        assert_eq!(role_to_key("nogateway"), None);
        assert_eq!(role_to_key("~gw"), None);
    }
}

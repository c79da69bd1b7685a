//! Values larger than one NATS message, split across keys (the layout documented in
//! `kgw_proto::nats`): parts `<key>.part.<i>` are written first, then the head `<key>`,
//! which holds [`MAGIC`] and a `ChunkManifest` (part count, sha256 of the whole).
use std::future::Future;

use bytes::Bytes;
use kgw_proto::{nats::CHUNK_BYTES, v1::ChunkManifest};
use prost::Message as _;
use sha2::{Digest, Sha256};

/// Starts a head value. A Proxy or Upstream never starts so: 'K' would be protobuf field 9
/// with the deprecated group wire type, which our messages do not use.
pub const MAGIC: &[u8] = b"KGWCHUNK\0";

pub fn part_key(key: &str, index: u32) -> String {
    format!("{key}.part.{index}")
}

pub fn is_part_key(key: &str) -> bool {
    key.contains(".part.")
}

/// `<key>.part.<i>` → (`<key>`, i).
pub fn parse_part_key(key: &str) -> Option<(&str, u32)> {
    let (head, index) = key.rsplit_once(".part.")?;
    Some((head, index.parse().ok()?))
}

/// Parts and the head for a value too large for one message; None when it fits.
pub fn split(value: &Bytes) -> Option<(Vec<Bytes>, Bytes)> {
    if value.len() <= CHUNK_BYTES {
        return None;
    }
    let parts: Vec<Bytes> = value.chunks(CHUNK_BYTES).map(|c| value.slice_ref(c)).collect();
    let manifest = ChunkManifest {
        parts: parts.len() as u32,
        sha256: hex::encode(Sha256::digest(value)),
    };
    let mut head = MAGIC.to_vec();
    head.extend(manifest.encode_to_vec());
    Some((parts, Bytes::from(head)))
}

/// The manifest, when `value` is a head.
pub fn manifest(value: &[u8]) -> Option<ChunkManifest> {
    ChunkManifest::decode(value.strip_prefix(MAGIC)?).ok()
}

/// Reassembles and checks the digest.
pub fn join(manifest: &ChunkManifest, parts: &[Bytes]) -> Result<Bytes, String> {
    if parts.len() != manifest.parts as usize {
        return Err(format!("expected {} parts, found {}", manifest.parts, parts.len()));
    }
    let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let digest = hex::encode(Sha256::digest(&whole));
    if digest != manifest.sha256 {
        return Err(format!(
            "parts do not match the head's sha256 ({digest} != {})",
            manifest.sha256
        ));
    }
    Ok(Bytes::from(whole))
}

/// The value read under head `key`: `value` itself, or, when it is a head, its parts
/// (fetched by part key with `get_part`) reassembled and checked. The KV mirror reads every
/// value through this; the fuzz target `kv_value` feeds it hostile heads and parts.
pub async fn resolve<F, Fut>(key: &str, value: Bytes, mut get_part: F) -> Result<Bytes, String>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<Bytes>, String>>,
{
    let Some(manifest) = manifest(&value) else {
        return Ok(value);
    };
    // Not `with_capacity(manifest.parts)`: the count is read from the value, and a head
    // claiming u32::MAX parts reserved 128 GiB (and aborted) before any part was read.
    let mut parts = Vec::new();
    for i in 0..manifest.parts {
        let part_key = part_key(key, i);
        let part = get_part(part_key.clone()).await?;
        parts.push(part.ok_or_else(|| format!("{key}: part {part_key} is missing"))?);
    }
    join(&manifest, &parts).map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_not_split() {
        assert!(split(&Bytes::from_static(b"small")).is_none());
    }

    #[test]
    fn large_values_round_trip() {
        let value = Bytes::from((0..CHUNK_BYTES * 2 + 17).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let (parts, head) = split(&value).expect("split");
        assert_eq!(parts.len(), 3);
        let manifest = manifest(&head).expect("head");
        assert_eq!(join(&manifest, &parts).expect("join"), value);
        assert!(join(&manifest, &parts[..2]).is_err());
        let mut corrupt = parts.clone();
        corrupt[1] = Bytes::from_static(b"x");
        assert!(join(&manifest, &corrupt).is_err());
        assert!(super::manifest(&value).is_none(), "a plain value is not a head");
    }

    fn resolve_from(key: &str, value: &[u8], parts: &[(&str, &[u8])]) -> Result<Bytes, String> {
        futures::executor::block_on(resolve(key, Bytes::copy_from_slice(value), |part_key| {
            let part = parts
                .iter()
                .find(|(k, _)| *k == part_key)
                .map(|(_, v)| Bytes::copy_from_slice(v));
            async move { Ok(part) }
        }))
    }

    #[test]
    fn resolve_reassembles_a_head_and_passes_plain_values() {
        let value = Bytes::from((0..CHUNK_BYTES + 5).map(|i| (i % 7) as u8).collect::<Vec<_>>());
        let (parts, head) = split(&value).expect("split");
        let stored: Vec<(String, Bytes)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (part_key("ns.gw", i as u32), p.clone()))
            .collect();
        let stored: Vec<(&str, &[u8])> = stored.iter().map(|(k, v)| (k.as_str(), v.as_ref())).collect();
        assert_eq!(resolve_from("ns.gw", &head, &stored).expect("resolve"), value);
        assert_eq!(
            resolve_from("ns.gw", b"plain", &[]).expect("plain"),
            Bytes::from_static(b"plain")
        );
        assert_eq!(
            resolve_from("ns.gw", &head, &stored[..1]).unwrap_err(),
            "ns.gw: part ns.gw.part.1 is missing"
        );
    }

    /// Found by the `kv_value` fuzz target: a head whose manifest claims u32::MAX parts
    /// made the reader reserve room for all of them (137 GB) and abort the process.
    #[test]
    fn a_head_claiming_u32_max_parts_is_an_error_not_an_abort() {
        let head = b"KGWCHUNK\0\x08\xff\xff\xff\xff\xff\xff\xff\xff\x30";
        assert_eq!(manifest(head).map(|m| m.parts), Some(u32::MAX));
        assert_eq!(
            resolve_from("ns.gw", head, &[]).unwrap_err(),
            "ns.gw: part ns.gw.part.0 is missing"
        );
    }
}

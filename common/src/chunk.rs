//! Values larger than one NATS message, split across keys (the layout documented in
//! `kgw_proto::nats`): parts `<key>.part.<i>` are written first, then the head `<key>`,
//! which holds [`MAGIC`] and a `ChunkManifest` (part count, sha256 of the whole).
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
}

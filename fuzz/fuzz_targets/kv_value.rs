//! A value read from NATS KV: a head (chunk manifest) reassembled from its parts, or a
//! plain value, then decoded as a Proxy (head or virtual host, assembled) or an Upstream as
//! the controller does.
//!
//! Input: byte 0 picks the bucket (even: kgw_proxies, odd: kgw_upstreams); the rest is the
//! value under the head key, then the parts `<key>.part.0`, `.part.1`, ..., each after a
//! [`SEPARATOR`].
#![no_main]

use std::collections::BTreeMap;

use bytes::Bytes;
use kgw_common::chunk;
use kgw_proto::v1::{PageIndex, Proxy, RoutePage, Upstream, VirtualHostPart};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const SEPARATOR: &[u8] = b"\n--kgw-part--\n";
const KEY: &str = "default.gw";

fn segments(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(at) = data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&data[..at]);
        data = &data[at + SEPARATOR.len()..];
    }
    out.push(data);
    out
}

fn decode<T: Message + Default>(value: &[u8]) {
    if let Ok(decoded) = T::decode(value) {
        // The controller compares re-encoded values to find what changed.
        let _ = decoded.encode_to_vec();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&bucket, rest)) = data.split_first() else {
        return;
    };
    let mut segments = segments(rest).into_iter();
    let head = Bytes::copy_from_slice(segments.next().unwrap_or_default());
    let parts: BTreeMap<String, Bytes> = segments
        .enumerate()
        .map(|(i, part)| (chunk::part_key(KEY, i as u32), Bytes::copy_from_slice(part)))
        .collect();
    let _ = chunk::is_part_key(KEY);
    let resolved = futures::executor::block_on(chunk::resolve(KEY, head, |part_key| {
        let part = parts.get(&part_key).cloned();
        async move { Ok(part) }
    }));
    let Ok(value) = resolved else {
        return;
    };
    if bucket % 2 == 0 {
        // A Proxy's head or one of its virtual hosts: the controller assembles the two.
        decode::<Proxy>(&value);
        decode::<VirtualHostPart>(&value);
        decode::<RoutePage>(&value);
        decode::<PageIndex>(&value);
        if let (Ok(head), Ok(part)) = (Proxy::decode(&value[..]), VirtualHostPart::decode(&value[..])) {
            let _ = kgw_common::proxy_parts::assemble(&head, [&part]);
        }
    } else {
        decode::<Upstream>(&value);
    }
});

//! Deterministic bytes for route tables. prost encodes a protobuf `map` by iterating a
//! hash map, whose order changes with every map (a random seed each): a route with two
//! per-filter configs would encode differently from one translation to the next, changing
//! the version and making Envoy reload an unchanged table. Here the maps are written with
//! their entries sorted by key, after the message's other fields (protobuf readers accept
//! fields in any order), so the same table always gives the same bytes.
use std::collections::BTreeMap;

use envoy_types::pb::{
    envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost},
    google::protobuf::Any,
};
use prost::{
    Message as _, Name as _,
    encoding::{btree_map, message, string},
};

/// Field numbers, from envoy/config/route/v3.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;
const VIRTUAL_HOST_ROUTES: u32 = 3;
const VIRTUAL_HOST_TYPED_PER_FILTER_CONFIG: u32 = 15;
const ROUTE_TYPED_PER_FILTER_CONFIG: u32 = 13;

/// Writes map field `tag` from its entries, sorted by key.
fn sorted_map<'a>(tag: u32, entries: impl Iterator<Item = (&'a String, &'a Any)>, buf: &mut Vec<u8>) {
    let sorted: BTreeMap<String, Any> = entries.map(|(k, v)| (k.clone(), v.clone())).collect();
    if sorted.is_empty() {
        return;
    }
    btree_map::encode(
        string::encode,
        string::encoded_len,
        message::encode,
        message::encoded_len,
        tag,
        &sorted,
        buf,
    );
}

/// Writes `bytes` as field `tag` (length-delimited).
fn nested(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// Whether prost's own encoding is already deterministic: a map of at most one entry has
/// only one order. Tables without two per-filter configs on one route or host (nearly all)
/// take prost's encoding as it is, without a copy.
fn stable_map(entries: usize) -> bool {
    entries <= 1
}

fn stable_host(host: &VirtualHost) -> bool {
    stable_map(host.typed_per_filter_config.len())
        && host.routes.iter().all(|r| stable_map(r.typed_per_filter_config.len()))
}

fn route(route: &Route) -> Vec<u8> {
    if stable_map(route.typed_per_filter_config.len()) {
        return route.encode_to_vec();
    }
    let mut rest = route.clone();
    rest.typed_per_filter_config.clear();
    let mut buf = rest.encode_to_vec();
    sorted_map(
        ROUTE_TYPED_PER_FILTER_CONFIG,
        route.typed_per_filter_config.iter(),
        &mut buf,
    );
    buf
}

/// Appends `route` as a virtual host's `routes` entry (field key, length, its bytes), as
/// [`virtual_host`] writes each: a host's bytes are its other fields' then its routes'.
pub(crate) fn route_entry(r: &Route, buf: &mut Vec<u8>) {
    if stable_map(r.typed_per_filter_config.len()) {
        message::encode(VIRTUAL_HOST_ROUTES, r, buf);
    } else {
        nested(VIRTUAL_HOST_ROUTES, &route(r), buf);
    }
}

/// A virtual host's bytes, the same for the same host.
pub(crate) fn virtual_host(host: &VirtualHost) -> Vec<u8> {
    if stable_host(host) {
        return host.encode_to_vec();
    }
    let rest = VirtualHost {
        routes: Vec::new(),
        typed_per_filter_config: Default::default(),
        ..host.clone()
    };
    let mut buf = rest.encode_to_vec();
    for r in &host.routes {
        nested(VIRTUAL_HOST_ROUTES, &route(r), &mut buf);
    }
    sorted_map(
        VIRTUAL_HOST_TYPED_PER_FILTER_CONFIG,
        host.typed_per_filter_config.iter(),
        &mut buf,
    );
    buf
}

/// A RouteConfiguration of `head` (the table's fields other than its virtual hosts, as the
/// translation sets them) and virtual hosts, packed from the virtual hosts' bytes
/// ([`virtual_host`]): the same bytes as [`pack_route_configuration`] gives for it,
/// without the table in memory.
pub(crate) fn pack_route_table(head: &RouteConfiguration, virtual_hosts: &[&[u8]]) -> Any {
    // Each host: its bytes, a one-byte key and a length of at most 10 bytes.
    let size = head.encoded_len() + virtual_hosts.iter().map(|host| host.len() + 11).sum::<usize>();
    let mut value = Vec::with_capacity(size);
    head.encode_raw(&mut value);
    for host in virtual_hosts {
        nested(ROUTE_CONFIGURATION_VIRTUAL_HOSTS, host, &mut value);
    }
    Any {
        type_url: RouteConfiguration::type_url(),
        value,
    }
}

/// A RouteConfiguration packed as `Any`, its bytes the same for the same table.
pub(crate) fn pack_route_configuration(table: &RouteConfiguration) -> Any {
    // The table's other fields always come first, then its virtual hosts, as
    // `pack_route_table` lays them out (protobuf accepts fields in any order).
    let only_hosts = RouteConfiguration {
        name: table.name.clone(),
        virtual_hosts: table.virtual_hosts.clone(),
        ..Default::default()
    };
    let value = if *table == only_hosts && table.virtual_hosts.iter().all(stable_host) {
        table.encode_to_vec()
    } else {
        let rest = RouteConfiguration {
            virtual_hosts: Vec::new(),
            ..table.clone()
        };
        let mut buf = rest.encode_to_vec();
        for host in &table.virtual_hosts {
            nested(ROUTE_CONFIGURATION_VIRTUAL_HOSTS, &virtual_host(host), &mut buf);
        }
        buf
    };
    Any {
        type_url: RouteConfiguration::type_url(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};

    use super::*;

    fn marker(i: u8) -> Any {
        Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: vec![i],
        }
    }

    fn table(order: &[&str]) -> RouteConfiguration {
        let mut route = Route {
            name: "r".into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            ..Default::default()
        };
        // A new map each call: a new random order.
        route.typed_per_filter_config.extend(
            order
                .iter()
                .enumerate()
                .map(|(i, name)| (name.to_string(), marker(i as u8))),
        );
        let mut host = VirtualHost {
            name: "a".into(),
            domains: vec!["a.example".into()],
            ..Default::default()
        };
        host.typed_per_filter_config.extend(
            route
                .typed_per_filter_config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        host.routes.push(route);
        RouteConfiguration {
            name: "listener~8080".into(),
            virtual_hosts: vec![host],
            ..Default::default()
        }
    }

    #[test]
    fn the_same_table_gives_the_same_bytes_whatever_the_map_order() {
        let names = ["wasm-a", "wasm-b", "wasm-c", "wasm-d", "wasm-e", "wasm-f"];
        let first = pack_route_configuration(&table(&names));
        for _ in 0..20 {
            // A new map each time: a new random order.
            assert_eq!(pack_route_configuration(&table(&names)).value, first.value);
        }
        // What this module is for: prost's own encoding follows each map's random order.
        let plain = table(&names).encode_to_vec();
        assert!(
            (0..20).any(|_| table(&names).encode_to_vec() != plain),
            "prost's map order looked stable"
        );
        let decoded = RouteConfiguration::decode(first.value.as_slice()).expect("valid protobuf");
        assert_eq!(decoded, table(&names));
    }

    #[test]
    fn a_table_without_two_filter_configs_is_prost_s_own_encoding() {
        let one = table(&["wasm-a"]);
        assert_eq!(pack_route_configuration(&one).value, one.encode_to_vec());
    }
}

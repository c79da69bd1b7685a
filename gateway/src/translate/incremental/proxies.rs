//! The Proxies of the incremental translation: built anew for a changed Gateway, patched
//! one virtual host at a time for changed routes. A route is held once, in its Proxy's
//! virtual host; the cache keeps only its slot there (see [`Slot`]), so that a route is
//! taken out, or put in, at the position its slot has among the virtual host's slots.
use std::collections::{BTreeMap, BTreeSet};

use gateway_api::apis::experimental::gateways::Gateway;
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, listener::ListenerType};

use super::{Attachment, Dirty, Incremental, Nn, Slot, VhostKey};
use crate::translate::{ListenerHosts, Options, is_misdirected, proxy, routes};

/// The virtual hosts of the Proxy listener where virtual host `name` is served (or would
/// be, once it has routes), and where `name` is (or would go) among them: `None` when the
/// Proxy or its HTTP listener is absent (a Gateway built anew in this batch, an HTTPS
/// listener whose certificates do not resolve), or when the listener answers 421 for that
/// hostname (the Gateway's listeners decide it, and a change of those builds it anew).
pub(super) fn served_hosts<'a>(
    proxies: &'a mut BTreeMap<String, pb::Proxy>,
    proxy_key: &str,
    listener: &str,
    name: &str,
) -> Option<(&'a mut Vec<pb::VirtualHost>, Result<usize, usize>)> {
    let hosts = listener_hosts(proxies, proxy_key, listener)?;
    let at = hosts.binary_search_by(|v| v.name.as_str().cmp(name));
    if let Ok(i) = at
        && is_misdirected(&hosts[i])
    {
        return None;
    }
    Some((hosts, at))
}

/// The virtual hosts of HTTP listener `listener` of Proxy `proxy_key`, if there is one.
fn listener_hosts<'a>(
    proxies: &'a mut BTreeMap<String, pb::Proxy>,
    proxy_key: &str,
    listener: &str,
) -> Option<&'a mut Vec<pb::VirtualHost>> {
    let proxy = proxies.get_mut(proxy_key)?;
    match proxy
        .listeners
        .iter_mut()
        .find(|l| l.name == listener)
        .and_then(|l| l.listener_type.as_mut())
    {
        Some(ListenerType::HttpListener(http)) => Some(&mut http.virtual_hosts),
        _ => None,
    }
}

/// Puts `entries` in a virtual host: their slots among `slots` and, when it is served
/// (`served`), the routes at the same positions in the Proxy's virtual host (made if
/// absent). Whether the Proxy changed.
pub(super) fn put(
    slots: &mut Vec<Slot>,
    served: Option<(&mut Vec<pb::VirtualHost>, Result<usize, usize>)>,
    listener: &str,
    host: &str,
    entries: impl ExactSizeIterator<Item = (Slot, pb::Route)>,
) -> bool {
    // Kept for every virtual host: a new one gets room for these routes alone (a larger
    // one grows as usual).
    if slots.is_empty() {
        slots.reserve_exact(entries.len());
    }
    let mut vhost = served.map(|(hosts, at)| {
        let i = at.unwrap_or_else(|i| {
            hosts.insert(i, routes::virtual_host(listener, host.to_string(), Vec::new()));
            i
        });
        let vhost = &mut hosts[i];
        if vhost.routes.is_empty() {
            vhost.routes.reserve_exact(entries.len());
        }
        vhost
    });
    for (slot, route) in entries {
        match slots.binary_search(&slot) {
            Ok(at) => {
                if let Some(vhost) = vhost.as_deref_mut() {
                    vhost.routes[at] = route;
                }
            }
            Err(at) => {
                slots.insert(at, slot);
                if let Some(vhost) = vhost.as_deref_mut() {
                    vhost.routes.insert(at, route);
                }
            }
        }
    }
    vhost.is_some()
}

impl Incremental {
    /// Removes the virtual hosts this batch emptied that are still empty (no route was put
    /// back in them).
    pub(super) fn drop_emptied(&mut self) {
        let emptied = std::mem::take(&mut self.emptied);
        let mut by_listener: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
        for (proxy_key, listener, name) in &emptied {
            by_listener.entry((proxy_key, listener)).or_default().insert(name);
        }
        for ((proxy_key, listener), names) in by_listener {
            let Some(hosts) = listener_hosts(&mut self.output.proxies, proxy_key, listener) else {
                continue;
            };
            let gone = |v: &pb::VirtualHost| v.routes.is_empty() && names.contains(v.name.as_str());
            match names.first() {
                // One host (a route deleted): found by its name, no pass over the others.
                Some(name) if names.len() == 1 => {
                    if let Ok(i) = hosts.binary_search_by(|v| v.name.as_str().cmp(name))
                        && gone(&hosts[i])
                    {
                        hosts.remove(i);
                    }
                }
                // Many (a namespace deleted): one pass, instead of shifting the list per host.
                _ => hosts.retain(|v| !gone(v)),
            }
        }
    }

    /// Takes the routes of attachment `a` out of their virtual hosts (their slots, and the
    /// routes from the Proxy where it serves them); a virtual host left without routes goes
    /// when the batch ends, unless a route is put back in it ([`Self::drop_emptied`]).
    pub(super) fn take_out(&mut self, a: &Attachment) {
        let proxy_key = kgw_proto::nats::key(&a.gateway.0, &a.gateway.1);
        let Some(vhosts) = self.vhosts.get_mut(&a.gateway) else {
            return;
        };
        for (copy, host) in a.hosts.iter().enumerate() {
            let vhost_key: VhostKey = (a.proxy_listener.clone(), host.clone());
            let Some(slots) = vhosts.get_mut(&vhost_key) else {
                continue;
            };
            let name = routes::vhost_name(&a.proxy_listener, host);
            let mut served = served_hosts(&mut self.output.proxies, &proxy_key, &a.proxy_listener, &name);
            for sort_key in &a.keys {
                let Ok(at) = slots.binary_search(&(sort_key.clone(), a.listener, copy)) else {
                    continue;
                };
                slots.remove(at);
                if let Some((hosts, Ok(i))) = served.as_mut()
                    && let Some(vhost) = hosts.get_mut(*i)
                    && at < vhost.routes.len()
                {
                    vhost.routes.remove(at);
                }
            }
            let empty = slots.is_empty();
            if let Some((_, at)) = served {
                if empty && at.is_ok() {
                    self.emptied
                        .insert((proxy_key.clone(), a.proxy_listener.clone(), name.clone()));
                }
                self.changed
                    .virtual_hosts
                    .insert((proxy_key.clone(), a.proxy_listener.clone(), name));
            }
            if empty {
                vhosts.remove(&vhost_key);
            }
        }
        if vhosts.is_empty() {
            self.vhosts.remove(&a.gateway);
        }
    }

    /// Builds the Proxies of changed Gateways anew, from the routes staged for them (the
    /// others were patched in place as their routes were translated).
    pub(super) fn update_proxies(&mut self, index: &Index, dirty: &Dirty) {
        let mut staged = std::mem::take(&mut self.staged);
        for key in &dirty.gateways {
            if let Some(vhosts) = self.vhosts.get_mut(key) {
                for slots in vhosts.values_mut() {
                    slots.sort_unstable();
                    slots.dedup();
                    slots.shrink_to_fit();
                }
            }
            let hosts = staged.remove(key).unwrap_or_default();
            if let Some(gateway) = self.gateways.get(key) {
                let proxy = build_proxy(key, gateway, hosts, index, &self.options);
                self.output.proxies.insert(kgw_proto::nats::key(&key.0, &key.1), proxy);
            }
        }
    }
}

/// The Proxy of Gateway `key` with the virtual hosts of `staged`, their routes put in
/// precedence order.
fn build_proxy(
    key: &Nn,
    gateway: &Gateway,
    staged: BTreeMap<VhostKey, Vec<(Slot, pb::Route)>>,
    index: &Index,
    options: &Options,
) -> pb::Proxy {
    let mut hosts = ListenerHosts::new();
    for ((listener_name, host), mut routes) in staged {
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes.dedup_by(|a, b| a.0 == b.0);
        // Collected in place, into room for (slot, route) pairs: shrunk to the routes.
        let mut routes: Vec<pb::Route> = routes.into_iter().map(|(_, route)| route).collect();
        routes.shrink_to_fit();
        let vhost = routes::virtual_host(&listener_name, host, routes);
        hosts.entry(listener_name).or_default().push(vhost);
    }
    proxy(&key.0, &key.1, gateway, hosts, index, options)
}

//! The Proxies of the incremental translation: rebuilt whole for a changed Gateway,
//! patched one virtual host at a time for changed routes.
use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::Gateway;
use kgw_common::resources::Index;
use kgw_proto::v1::{self as pb, listener::ListenerType};

use super::{Dirty, Incremental, Nn};
use crate::translate::{ListenerHosts, is_misdirected, proxy, routes};

impl Incremental {
    /// Rebuilds the Proxies of changed Gateways; patches the changed virtual hosts of the
    /// others in place (virtual hosts are ordered by name within a listener).
    pub(super) fn update_proxies(&mut self, index: &Index, dirty: &Dirty) {
        for key in &dirty.gateways {
            if let Some(gateway) = self.gateways.get(key) {
                let proxy = self.build_proxy(key, gateway, index);
                self.output.proxies.insert(kgw_proto::nats::key(&key.0, &key.1), proxy);
            }
        }
        for gateway in &dirty.gateways {
            if self.vhosts.get(gateway).is_some_and(BTreeMap::is_empty) {
                self.vhosts.remove(gateway);
            }
        }
        for (gateway, listener_name, host) in &dirty.vhosts {
            if dirty.gateways.contains(gateway) || !self.gateways.contains_key(gateway) {
                continue;
            }
            let proxy_key = kgw_proto::nats::key(&gateway.0, &gateway.1);
            let vhost = self
                .vhosts
                .get(gateway)
                .and_then(|v| v.get(&(listener_name.clone(), host.clone())))
                .map(|routes| routes::virtual_host(listener_name, host.clone(), routes.values().cloned().collect()));
            let name = routes::vhost_name(listener_name, host);
            let Some(proxy) = self.output.proxies.get_mut(&proxy_key) else {
                continue;
            };
            // A listener left out (an HTTPS one whose certificates do not resolve) has
            // nothing to patch.
            let Some(ListenerType::HttpListener(http)) = proxy
                .listeners
                .iter_mut()
                .find(|l| l.name == *listener_name)
                .and_then(|l| l.listener_type.as_mut())
            else {
                continue;
            };
            let hosts = &mut http.virtual_hosts;
            match (hosts.binary_search_by(|v| v.name.cmp(&name)), vhost) {
                // The hostname selects another HTTPS listener: its 421 stays (the Gateway's
                // listeners decide it, and they did not change).
                (Ok(i), _) if is_misdirected(&hosts[i]) => continue,
                (Ok(i), Some(vhost)) => hosts[i] = vhost,
                (Ok(i), None) => {
                    hosts.remove(i);
                }
                (Err(i), Some(vhost)) => hosts.insert(i, vhost),
                (Err(_), None) => continue,
            }
            self.changed
                .virtual_hosts
                .insert((proxy_key, listener_name.clone(), name));
        }
    }

    fn build_proxy(&self, key: &Nn, gateway: &Gateway, index: &Index) -> pb::Proxy {
        let mut hosts = ListenerHosts::new();
        if let Some(vhosts) = self.vhosts.get(key) {
            for ((listener_name, host), routes) in vhosts {
                let routes = routes.values().cloned().collect();
                hosts
                    .entry(listener_name.clone())
                    .or_default()
                    .push(routes::virtual_host(listener_name, host.clone(), routes));
            }
        }
        proxy(&key.0, &key.1, gateway, hosts, index, &self.options)
    }
}

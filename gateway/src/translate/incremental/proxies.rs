//! The Proxies of the incremental translation: rebuilt whole for a changed Gateway,
//! patched one virtual host at a time for changed routes.
use std::collections::BTreeMap;

use gateway_api::apis::experimental::gateways::Gateway;
use kgw_proto::v1::{self as pb, listener::ListenerType};

use super::{Dirty, Incremental, Nn};
use crate::translate::{is_http, listener_source, proxy, routes};

impl Incremental {
    /// Rebuilds the Proxies of changed Gateways; patches the changed virtual hosts of the
    /// others in place (virtual hosts are ordered by name within a listener).
    pub(super) fn update_proxies(&mut self, dirty: &Dirty) {
        for key in &dirty.gateways {
            if let Some(gateway) = self.gateways.get(key) {
                let proxy = self.build_proxy(key, gateway);
                self.output.proxies.insert(kgw_proto::nats::key(&key.0, &key.1), proxy);
            }
        }
        for gateway in &dirty.gateways {
            if self.vhosts.get(gateway).is_some_and(BTreeMap::is_empty) {
                self.vhosts.remove(gateway);
            }
        }
        for (gateway, port, host) in &dirty.vhosts {
            if dirty.gateways.contains(gateway) || !self.gateways.contains_key(gateway) {
                continue;
            }
            let proxy_key = kgw_proto::nats::key(&gateway.0, &gateway.1);
            let vhost = self
                .vhosts
                .get(gateway)
                .and_then(|v| v.get(&(*port, host.clone())))
                .map(|routes| routes::virtual_host(*port, host.clone(), routes.values().cloned().collect()));
            let name = routes::vhost_name(*port, host);
            let listener_name = format!("listener~{port}");
            let Some(proxy) = self.output.proxies.get_mut(&proxy_key) else {
                continue;
            };
            let Some(ListenerType::HttpListener(http)) = proxy
                .listeners
                .iter_mut()
                .find(|l| l.name == listener_name)
                .and_then(|l| l.listener_type.as_mut())
            else {
                continue;
            };
            let hosts = &mut http.virtual_hosts;
            match (hosts.binary_search_by(|v| v.name.cmp(&name)), vhost) {
                (Ok(i), Some(vhost)) => hosts[i] = vhost,
                (Ok(i), None) => {
                    hosts.remove(i);
                }
                (Err(i), Some(vhost)) => hosts.insert(i, vhost),
                (Err(_), None) => continue,
            }
            self.changed.virtual_hosts.insert((proxy_key, listener_name, name));
        }
    }

    fn build_proxy(&self, key: &Nn, gateway: &Gateway) -> pb::Proxy {
        let mut by_port: BTreeMap<u32, (Vec<pb::ResourceRef>, Vec<pb::VirtualHost>)> = BTreeMap::new();
        for listener in gateway.spec.listeners.iter().filter(|l| is_http(l)) {
            let (sources, _) = by_port.entry(self.options.envoy_port(listener.port)).or_default();
            sources.push(listener_source(&key.0, &key.1, listener));
        }
        if let Some(vhosts) = self.vhosts.get(key) {
            for ((port, host), routes) in vhosts {
                if let Some((_, virtual_hosts)) = by_port.get_mut(port) {
                    let routes = routes.values().cloned().collect();
                    virtual_hosts.push(routes::virtual_host(*port, host.clone(), routes));
                }
            }
        }
        proxy(&key.0, &key.1, gateway, by_port, &self.options)
    }
}

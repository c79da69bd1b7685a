//! Hostname intersection between a Gateway listener and an HTTPRoute (Gateway API rules:
//! an exact name matches itself or a wildcard covering it; two wildcards yield the narrower).
use gateway_api::apis::experimental::gateways::GatewayListeners;

/// The hostnames a route serves on a listener; `None`: no intersection (route not attached).
/// An empty result vector never happens: no hostnames anywhere yields `["*"]`.
pub(super) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let listener = listener.filter(|h| !h.is_empty());
    match (listener, route.is_empty()) {
        (None, true) => Some(vec!["*".into()]),
        (None, false) => Some(route.to_vec()),
        (Some(l), true) => Some(vec![l.to_string()]),
        (Some(l), false) => {
            let hosts: Vec<String> = route.iter().filter_map(|r| pair(l, r)).collect();
            (!hosts.is_empty()).then_some(hosts)
        }
    }
}

fn pair(listener: &str, route: &str) -> Option<String> {
    if listener == route {
        return Some(route.to_string());
    }
    match (listener.strip_prefix("*."), route.strip_prefix("*.")) {
        (Some(suffix), None) => covers(suffix, route).then(|| route.to_string()),
        (None, Some(suffix)) => covers(suffix, listener).then(|| listener.to_string()),
        (Some(l), Some(r)) => {
            if covers(l, r) {
                Some(route.to_string())
            } else if covers(r, l) {
                Some(listener.to_string())
            } else {
                None
            }
        }
        (None, None) => None,
    }
}

/// `*.suffix` covers `host` when host ends with `.suffix` (one or more labels before it).
fn covers(suffix: &str, host: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
}

/// How specific a listener hostname is: none < wildcard (by suffix length) < exact.
fn specificity(hostname: Option<&str>) -> (u8, usize) {
    match hostname.filter(|h| !h.is_empty()) {
        None => (0, 0),
        Some(h) if h.starts_with("*.") => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

/// Whether every name `host` stands for also matches listener hostname `listener`.
fn within(host: &str, listener: &str) -> bool {
    if host == listener {
        return true;
    }
    let Some(suffix) = listener.strip_prefix("*.") else {
        return false;
    };
    match host.strip_prefix("*.") {
        Some(inner) => inner == suffix || covers(suffix, inner),
        None => covers(suffix, host),
    }
}

/// Listener isolation: the hosts of a route attached to `listener` that a more specific
/// listener of the same Envoy listener (same port, HTTP) would take are dropped, so that a
/// request is only served by routes of the most specific listener matching its Host.
/// (Envoy picks the most specific virtual host; only hosts that a more specific listener's
/// hostname covers would end up in its virtual host.)
pub(super) fn isolate(hosts: &mut Vec<String>, listener: &GatewayListeners, siblings: &[GatewayListeners]) {
    if listener.protocol != "HTTP" {
        return;
    }
    let own = specificity(listener.hostname.as_deref());
    let more_specific: Vec<&str> = siblings
        .iter()
        .filter(|l| l.name != listener.name && l.port == listener.port && l.protocol == "HTTP")
        .filter_map(|l| l.hostname.as_deref().filter(|h| !h.is_empty()))
        .filter(|h| specificity(Some(h)) > own)
        .collect();
    hosts.retain(|host| !more_specific.iter().any(|other| within(host, other)));
}

#[cfg(test)]
mod tests {
    use super::{GatewayListeners, intersect};

    fn v(hosts: &[&str]) -> Vec<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn isolation_drops_hosts_a_more_specific_listener_takes() {
        let listener = |name: &str, hostname: Option<&str>| GatewayListeners {
            name: name.into(),
            hostname: hostname.map(str::to_string),
            port: 80,
            protocol: "HTTP".into(),
            ..GatewayListeners::default()
        };
        let all = [
            listener("empty", None),
            listener("wild", Some("*.example.com")),
            listener("foo", Some("*.foo.example.com")),
            listener("abc", Some("abc.foo.example.com")),
        ];
        let mut hosts = v(&["*.example.com", "bar.com", "x.foo.example.com", "*"]);
        super::isolate(&mut hosts, &all[0], &all);
        assert_eq!(hosts, v(&["bar.com", "*"]));
        let mut hosts = v(&["*.example.com"]);
        super::isolate(&mut hosts, &all[1], &all);
        assert_eq!(hosts, v(&["*.example.com"]), "*.foo.example.com takes only part of it");
        let mut hosts = v(&["abc.foo.example.com"]);
        super::isolate(&mut hosts, &all[2], &all);
        assert!(hosts.is_empty());
    }

    #[test]
    fn intersections() {
        assert_eq!(intersect(None, &[]), Some(v(&["*"])));
        assert_eq!(intersect(Some("a.example"), &[]), Some(v(&["a.example"])));
        assert_eq!(intersect(None, &v(&["a.example"])), Some(v(&["a.example"])));
        assert_eq!(
            intersect(Some("*.example"), &v(&["a.example", "b.other"])),
            Some(v(&["a.example"]))
        );
        assert_eq!(
            intersect(Some("a.example"), &v(&["*.example"])),
            Some(v(&["a.example"]))
        );
        assert_eq!(
            intersect(Some("*.example"), &v(&["*.a.example"])),
            Some(v(&["*.a.example"]))
        );
        assert_eq!(intersect(Some("*.example"), &v(&["example"])), None);
        assert_eq!(intersect(Some("a.example"), &v(&["b.example"])), None);
    }
}

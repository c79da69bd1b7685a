//! Hostname intersection between a Gateway listener and an HTTPRoute (Gateway API rules:
//! an exact name matches itself or a wildcard covering it; two wildcards yield the narrower).

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

#[cfg(test)]
mod tests {
    use super::intersect;

    fn v(hosts: &[&str]) -> Vec<String> {
        hosts.iter().map(|h| h.to_string()).collect()
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

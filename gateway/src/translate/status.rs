//! Status computed beside the translation: GatewayClass, Gateway (and its listeners) and
//! HTTPRoute parent conditions, in the Gateway API's vocabulary.
use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::HttpRoute;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Condition {
    pub(crate) fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenerStatus {
    #[serde(rename = "attachedRoutes")]
    pub attached_routes: usize,
    pub conditions: Vec<Condition>,
    /// Route kinds the listener carries (those its allowedRoutes name that it can);
    /// `None`: its protocol's.
    #[serde(rename = "supportedKinds", skip_serializing_if = "Option::is_none")]
    pub supported_kinds: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GatewayStatus {
    /// The IP address Envoy's listeners for the Gateway bind (none when they bind every
    /// address, 0.0.0.0 or ::, whose reachable address only the platform knows).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    pub conditions: Vec<Condition>,
    pub listeners: BTreeMap<String, ListenerStatus>,
    /// ListenerSets attached (allowed), when any names the Gateway.
    #[serde(rename = "attachedListenerSets", skip_serializing_if = "Option::is_none")]
    pub attached_listener_sets: Option<usize>,
}

/// A ListenerSet's status: its conditions and its listeners'.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenerSetStatus {
    #[serde(skip)]
    pub generation: Option<i64>,
    /// The Gateway (`namespace/name`) the set names.
    #[serde(skip)]
    pub parent: String,
    pub conditions: Vec<Condition>,
    pub listeners: BTreeMap<String, ListenerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteParentStatus {
    /// `namespace/gateway`.
    #[serde(rename = "parentRef")]
    pub parent_ref: String,
    pub conditions: Vec<Condition>,
}

/// Status of every resource the translation looked at, keyed `Kind/namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusReport {
    pub gateway_classes: BTreeMap<String, Vec<Condition>>,
    pub gateways: BTreeMap<String, GatewayStatus>,
    pub http_routes: BTreeMap<String, Vec<RouteParentStatus>>,
    /// ListenerSets naming a Gateway of ours, `namespace/name`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub listener_sets: BTreeMap<String, ListenerSetStatus>,
    /// RouteOption `namespace/name` → Gateway `namespace/name` (an ancestor: a Gateway of
    /// ours that a route the option affects is attached to) → conditions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub route_options: BTreeMap<String, BTreeMap<String, Vec<Condition>>>,
    /// BackendTLSPolicy `namespace/name` → Gateway `namespace/name` (an ancestor: a Gateway
    /// of ours that a route naming a targeted Service is attached to) → conditions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backend_tls_policies: BTreeMap<String, BTreeMap<String, Vec<Condition>>>,
    /// (route key, gateway key) → unresolved-ref reasons.
    #[serde(skip)]
    unresolved: BTreeMap<(String, String), Vec<(String, String)>>,
    #[serde(skip)]
    attached: BTreeMap<(String, String), ()>,
    /// (route key, gateway key) → why the route attaches to no listener of that Gateway.
    #[serde(skip)]
    rejected: BTreeMap<(String, String), (&'static str, String)>,
}

fn gw_key(g: &GatewayRef) -> String {
    format!("{}/{}", g.namespace, g.name)
}

impl StatusReport {
    pub fn gateway_class_accepted(&mut self, name: &str) {
        self.gateway_classes
            .insert(name.into(), vec![Condition::new("Accepted", true, "Accepted", "")]);
    }

    pub fn gateway_seen(&mut self, gateway: &GatewayRef, address: &str) {
        let status = self.gateways.entry(gw_key(gateway)).or_default();
        status.addresses = address
            .parse::<std::net::IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string())
            .into_iter()
            .collect();
        status.conditions = vec![
            Condition::new("Accepted", true, "Accepted", ""),
            Condition::new("Programmed", true, "Programmed", ""),
        ];
    }

    pub fn listener_ready(&mut self, gateway: &GatewayRef, listener: &str, attached: usize) {
        let status = self.gateways.entry(gw_key(gateway)).or_default();
        status.listeners.insert(
            listener.into(),
            ListenerStatus {
                attached_routes: attached,
                supported_kinds: None,
                conditions: vec![
                    Condition::new("Accepted", true, "Accepted", ""),
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
                    Condition::new("Programmed", true, "Programmed", ""),
                ],
            },
        );
    }

    /// An HTTPS listener: accepted, its certificate references resolved or not
    /// (`problem`: reason, message), not programmed (Envoy does not serve HTTPS yet).
    pub(crate) fn listener_https(
        &mut self,
        gateway: &GatewayRef,
        listener: &str,
        attached: usize,
        problem: Option<(&'static str, String)>,
    ) {
        // Served only with certificates that resolve (never without TLS).
        let (resolved, programmed) = match problem {
            None => (
                Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
                Condition::new("Programmed", true, "Programmed", ""),
            ),
            Some((reason, message)) => (
                Condition::new("ResolvedRefs", false, reason, message),
                Condition::new(
                    "Programmed",
                    false,
                    "Invalid",
                    "the listener's certificates do not resolve",
                ),
            ),
        };
        let status = self.gateways.entry(gw_key(gateway)).or_default();
        status.listeners.insert(
            listener.into(),
            ListenerStatus {
                attached_routes: attached,
                supported_kinds: None,
                conditions: vec![Condition::new("Accepted", true, "Accepted", ""), resolved, programmed],
            },
        );
    }

    pub fn listener_unsupported(&mut self, gateway: &GatewayRef, listener: &str, protocol: &str) {
        let status = self.gateways.entry(gw_key(gateway)).or_default();
        status.listeners.insert(
            listener.into(),
            ListenerStatus {
                attached_routes: 0,
                supported_kinds: None,
                conditions: vec![
                    Condition::new(
                        "Accepted",
                        false,
                        "UnsupportedProtocol",
                        format!("protocol {protocol} is not supported yet"),
                    ),
                    Condition::new("Programmed", false, "Invalid", ""),
                ],
            },
        );
    }

    /// The Gateways (`namespace/name`) route `namespace/name` is attached to.
    pub fn attached_gateways(&self, route_key: &str) -> Vec<String> {
        // Keys sort by route first: the route's entries are one range.
        self.attached
            .range((route_key.to_string(), String::new())..)
            .map(|((route, gateway), _)| (route, gateway))
            .take_while(|(route, _)| *route == route_key)
            .map(|(_, gateway)| gateway.clone())
            .collect()
    }

    /// A RouteOption's verdict for one Gateway whose routes it affects: Accepted, or not
    /// (reason Invalid) with why.
    pub fn route_option(&mut self, option_key: &str, gateway: &str, invalid: Option<&str>) {
        let accepted = match invalid {
            None => Condition::new("Accepted", true, "Accepted", ""),
            Some(why) => Condition::new("Accepted", false, "Invalid", why),
        };
        self.route_options
            .entry(option_key.to_string())
            .or_default()
            .insert(gateway.to_string(), vec![accepted]);
    }

    /// Route `namespace/name` names `gateway` but attaches to none of its listeners.
    pub(crate) fn route_rejected(
        &mut self,
        namespace: &str,
        name: &str,
        gateway: &GatewayRef,
        why: (&'static str, String),
    ) {
        self.rejected
            .insert((format!("{namespace}/{name}"), gw_key(gateway)), why);
    }

    pub fn route_attached(&mut self, namespace: &str, name: &str, gateway: &GatewayRef) {
        self.attached
            .insert((format!("{namespace}/{name}"), gw_key(gateway)), ());
    }

    pub fn route_unresolved(&mut self, namespace: &str, name: &str, gateway: &GatewayRef, reason: &str, message: &str) {
        let reasons = self
            .unresolved
            .entry((format!("{namespace}/{name}"), gw_key(gateway)))
            .or_default();
        let entry = (reason.to_string(), message.to_string());
        if !reasons.contains(&entry) {
            reasons.push(entry);
        }
    }

    /// Route `namespace/name` attached to `gateway` (through one listener), with the
    /// reasons its refs did not resolve there.
    pub(crate) fn route_translated(
        &mut self,
        namespace: &str,
        name: &str,
        gateway: &GatewayRef,
        unresolved: &[(String, String)],
    ) {
        self.route_attached(namespace, name, gateway);
        for (reason, message) in unresolved {
            self.route_unresolved(namespace, name, gateway, reason, message);
        }
    }

    /// Drops what is known of route `route_key` (attachments, unresolved refs, its status),
    /// before it is translated again.
    pub(crate) fn forget_route(&mut self, route_key: &str) {
        let start = (route_key.to_string(), String::new());
        let attached: Vec<_> = self
            .attached
            .range(start.clone()..)
            .take_while(|((route, _), _)| route == route_key)
            .map(|(key, _)| key.clone())
            .collect();
        for key in attached {
            self.attached.remove(&key);
        }
        let unresolved: Vec<_> = self
            .unresolved
            .range(start..)
            .take_while(|((route, _), _)| route == route_key)
            .map(|(key, _)| key.clone())
            .collect();
        for key in unresolved {
            self.unresolved.remove(&key);
        }
        let start = (route_key.to_string(), String::new());
        let rejected: Vec<_> = self
            .rejected
            .range(start..)
            .take_while(|((route, _), _)| route == route_key)
            .map(|(key, _)| key.clone())
            .collect();
        for key in rejected {
            self.rejected.remove(&key);
        }
        self.http_routes.remove(route_key);
    }

    /// Conditions for every parentRef of every route that names one of our Gateways.
    pub fn finish_routes(&mut self, routes: &[&HttpRoute]) {
        for route in routes {
            self.finish_route(route);
        }
    }

    /// Conditions for every parentRef of `route` that names one of our Gateways (its
    /// attachments reported, and every Gateway of ours seen, before).
    pub(crate) fn finish_route(&mut self, route: &HttpRoute) {
        let namespace = route.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = route.metadata.name.clone().unwrap_or_default();
        let route_key = format!("{namespace}/{name}");
        let mut parents = Vec::new();
        for parent in route.spec.parent_refs.iter().flatten() {
            let parent_ns = parent.namespace.as_deref().unwrap_or(&namespace);
            let set = parent.kind.as_deref() == Some("ListenerSet");
            let ours = if set {
                self.listener_sets.contains_key(&format!("{parent_ns}/{}", parent.name))
            } else {
                self.gateways.contains_key(&format!("{parent_ns}/{}", parent.name))
            };
            if !ours {
                continue; // not ours: another controller reports on it
            }
            let gateway = if set {
                let (ns, name) = super::listener_sets::parent_key(parent_ns, &parent.name);
                format!("{ns}/{name}")
            } else {
                format!("{parent_ns}/{}", parent.name)
            };
            let key = (route_key.clone(), gateway.clone());
            let accepted = if self.attached.contains_key(&key) {
                Condition::new("Accepted", true, "Accepted", "")
            } else {
                let (reason, message) = self.rejected.get(&key).cloned().unwrap_or((
                    "NoMatchingParent",
                    "no listener of the Gateway accepts this route (sectionName, port, hostnames or allowedRoutes)"
                        .into(),
                ));
                Condition::new("Accepted", false, reason, message)
            };
            let resolved = match self.unresolved.get(&key) {
                Some(reasons) if !reasons.is_empty() => Condition::new(
                    "ResolvedRefs",
                    false,
                    &reasons[0].0,
                    reasons.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "),
                ),
                _ => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
            };
            let parent_ref = match &parent.section_name {
                Some(section) => format!("{gateway}/{section}"),
                None => gateway,
            };
            parents.push(RouteParentStatus {
                parent_ref,
                conditions: vec![accepted, resolved],
            });
        }
        if !parents.is_empty() {
            // Kept for every route: no room beyond its parents.
            parents.shrink_to_fit();
            self.http_routes.insert(route_key, parents);
        }
    }
}

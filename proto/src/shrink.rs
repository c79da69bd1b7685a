//! Decoded Proxy parts without spare room. prost decodes a repeated field by pushing, and a
//! `Vec` grows to four elements at its first push: a virtual host of one route (most of
//! them) kept room for three more (328 bytes each), which made 6 of the controller's 33 MiB
//! of heap at 5,000 routes. What is kept long after decoding is shrunk once.

use crate::v1::{Matcher, Route, RoutePage, VirtualHost, VirtualHostPart, route::Action, route_action};

/// Gives back the spare capacity of a decoded value's vectors (those that grow with the
/// number of routes and matchers; the rarer ones stay as decoded).
pub trait ShrinkDecoded {
    fn shrink_decoded(&mut self);
}

impl ShrinkDecoded for VirtualHostPart {
    fn shrink_decoded(&mut self) {
        if let Some(vhost) = &mut self.virtual_host {
            vhost.shrink_decoded();
        }
        self.index_pages.shrink_to_fit();
    }
}

impl ShrinkDecoded for VirtualHost {
    fn shrink_decoded(&mut self) {
        self.domains.shrink_to_fit();
        self.routes.shrink_decoded();
    }
}

impl ShrinkDecoded for RoutePage {
    fn shrink_decoded(&mut self) {
        self.routes.shrink_decoded();
    }
}

impl ShrinkDecoded for Vec<Route> {
    fn shrink_decoded(&mut self) {
        self.shrink_to_fit();
        for route in self.iter_mut() {
            route.shrink_decoded();
        }
    }
}

impl ShrinkDecoded for Route {
    fn shrink_decoded(&mut self) {
        self.matchers.shrink_to_fit();
        for matcher in &mut self.matchers {
            matcher.shrink_decoded();
        }
        self.filters.shrink_to_fit();
        if let Some(Action::RouteAction(action)) = &mut self.action {
            match &mut action.destination {
                Some(route_action::Destination::Single(destination)) => {
                    destination.filters.shrink_to_fit();
                }
                Some(route_action::Destination::Multi(multi)) => {
                    multi.destinations.shrink_to_fit();
                }
                _ => {}
            }
        }
    }
}

impl ShrinkDecoded for Matcher {
    fn shrink_decoded(&mut self) {
        self.headers.shrink_to_fit();
        self.query_parameters.shrink_to_fit();
        self.methods.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::v1::{HeaderMatcher, RouteAction};

    fn one_route_part() -> VirtualHostPart {
        VirtualHostPart {
            listener: "http".into(),
            virtual_host: Some(VirtualHost {
                name: "a".into(),
                domains: vec!["a.example".into()],
                routes: vec![Route {
                    name: "r".into(),
                    matchers: vec![Matcher {
                        headers: vec![HeaderMatcher {
                            name: "x".into(),
                            ..Default::default()
                        }],
                        methods: vec!["GET".into()],
                        ..Default::default()
                    }],
                    action: Some(Action::RouteAction(RouteAction::default())),
                    ..Default::default()
                }],
            }),
            index_pages: Vec::new(),
        }
    }

    #[test]
    fn a_decoded_part_keeps_no_spare_room_and_stays_equal() {
        let part = one_route_part();
        let mut decoded = match VirtualHostPart::decode(part.encode_to_vec().as_slice()) {
            Ok(decoded) => decoded,
            Err(e) => panic!("decode: {e}"),
        };
        let routes = |p: &VirtualHostPart| p.virtual_host.as_ref().map_or(0, |v| v.routes.capacity());
        assert!(routes(&decoded) > 1, "prost leaves room: the test means something");
        decoded.shrink_decoded();
        assert_eq!(decoded, part);
        assert_eq!(routes(&decoded), 1);
        let vhost = decoded
            .virtual_host
            .as_ref()
            .map(|v| (v.domains.capacity(), &v.routes[0]));
        let Some((domains, route)) = vhost else {
            panic!("no virtual host")
        };
        assert_eq!(domains, 1);
        assert_eq!(route.matchers.capacity(), 1);
        assert_eq!(route.matchers[0].headers.capacity(), 1);
        assert_eq!(route.matchers[0].methods.capacity(), 1);
    }
}

//! Manifest decoding, as both config sources do it: the directory source's YAML file
//! (multi-document, strict, with last-good fallbacks) and the Kubernetes source's JSON
//! object from the API server, decoded as every kind we read.
#![no_main]

use kgw_common::{
    resources::Kind,
    source::{DirState, kubernetes},
};
use kube::api::DynamicObject;
use libfuzzer_sys::fuzz_target;

const KINDS: [Kind; 8] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::ReferenceGrant,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::RouteOption,
    Kind::Upstream,
];

fuzz_target!(|data: &[u8]| {
    // The directory source reads files as UTF-8; anything else is refused before decoding.
    if let Ok(text) = std::str::from_utf8(data) {
        let mut state = DirState::default();
        let _ = state.update_file("a.yaml", Some(text));
        // The same documents in a second file (duplicates), then a rewrite of the first
        // with its resources as the last good ones, then both gone.
        let _ = state.update_file("b.yaml", Some(text));
        let _ = state.would_remove("a.yaml", text);
        let _ = state.update_file("a.yaml", Some(text));
        let _ = state.problems();
        let _ = state.update_file("a.yaml", None);
        let _ = state.update_file("b.yaml", None);
    }
    // The Kubernetes source: kube decodes the watch event's object, then we decode it.
    if let Ok(object) = serde_json::from_slice::<DynamicObject>(data) {
        for kind in KINDS {
            let _ = kubernetes::decode_object(&kubernetes::api_resource(kind), kind, object.clone());
        }
    }
});

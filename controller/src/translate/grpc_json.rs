//! JSON over HTTP to gRPC services whose methods function discovery found: a route whose
//! one destination is such an Upstream runs Envoy's gRPC-JSON transcoder with the
//! Upstream's descriptors (`grpc_descriptors`, as the server's reflection sent them). As
//! Gloo's gRPC functions did, `POST /<package>.<Service>/<Method>` with a JSON body calls
//! the method (the transcoder's `auto_mapping`), and `google.api.http` options in the
//! descriptors map other paths too. The listener carries the filter disabled and without
//! descriptors; each such route turns it on with its Upstream's.
use std::collections::BTreeSet;

use envoy_types::{
    pb::{
        envoy::{
            config::route::v3::FilterConfig,
            extensions::filters::{
                http::grpc_json_transcoder::v3::{GrpcJsonTranscoder, grpc_json_transcoder},
                network::http_connection_manager::v3::{HttpFilter, http_filter},
            },
        },
        google::protobuf::Any,
    },
    util::pack_any,
};
use kgw_proto::v1 as pb;

/// Envoy's name of the filter.
pub(crate) const FILTER_NAME: &str = "envoy.filters.http.grpc_json_transcoder";

/// The listener-level filter: off, with an empty descriptor set (Envoy requires one; the
/// routes bring theirs).
pub(crate) fn http_filter() -> HttpFilter {
    let empty = GrpcJsonTranscoder {
        descriptor_set: Some(grpc_json_transcoder::DescriptorSet::ProtoDescriptorBin(Vec::new())),
        ..Default::default()
    };
    HttpFilter {
        name: FILTER_NAME.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(empty))),
        is_optional: false,
        disabled: true,
    }
}

/// The per-route config that turns the transcoder on for `upstream`, when function
/// discovery found gRPC methods and their descriptors on it.
pub(crate) fn route_config(upstream: &pb::Upstream) -> Option<Any> {
    if upstream.grpc_descriptors.is_empty() {
        return None;
    }
    let services: BTreeSet<&str> = upstream
        .functions
        .iter()
        .filter_map(|f| match &f.spec {
            Some(pb::function::Spec::Grpc(grpc)) => Some(grpc.service.as_str()),
            _ => None,
        })
        .collect();
    if services.is_empty() {
        return None;
    }
    let transcoder = GrpcJsonTranscoder {
        services: services.into_iter().map(String::from).collect(),
        auto_mapping: true,
        // gRPC errors become HTTP statuses with a JSON body, not 200s with trailers.
        convert_grpc_status: true,
        print_options: Some(grpc_json_transcoder::PrintOptions {
            always_print_primitive_fields: true,
            ..Default::default()
        }),
        // A path that names no method is answered 404, not passed on as JSON to a gRPC
        // server (which would answer 200 with an error in its trailers).
        request_validation_options: Some(grpc_json_transcoder::RequestValidationOptions {
            reject_unknown_method: true,
            ..Default::default()
        }),
        descriptor_set: Some(grpc_json_transcoder::DescriptorSet::ProtoDescriptorBin(
            upstream.grpc_descriptors.clone(),
        )),
        ..Default::default()
    };
    Some(pack_any(FilterConfig {
        config: Some(pack_any(transcoder)),
        is_optional: false,
        disabled: false,
    }))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn grpc_function(service: &str, method: &str) -> pb::Function {
        pb::Function {
            name: format!("{service}/{method}"),
            kind: "grpc".into(),
            spec: Some(pb::function::Spec::Grpc(pb::GrpcFunction {
                service: service.into(),
                method: method.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn only_upstreams_with_grpc_methods_and_descriptors_get_it() {
        let mut upstream = pb::Upstream::default();
        assert!(route_config(&upstream).is_none());
        upstream.functions = vec![
            grpc_function("shop.Catalog", "Get"),
            grpc_function("shop.Catalog", "List"),
        ];
        assert!(route_config(&upstream).is_none(), "no descriptors");
        upstream.grpc_descriptors = vec![1, 2, 3];
        let any = route_config(&upstream).expect("config");
        let filter = FilterConfig::decode(any.value.as_slice()).expect("FilterConfig");
        assert!(!filter.disabled);
        let transcoder =
            GrpcJsonTranscoder::decode(filter.config.expect("config").value.as_slice()).expect("transcoder");
        assert_eq!(transcoder.services, ["shop.Catalog"]);
        assert!(transcoder.auto_mapping && transcoder.convert_grpc_status);
    }
}

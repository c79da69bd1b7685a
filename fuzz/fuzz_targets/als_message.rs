//! One message of Envoy's access-log stream: protobuf decoding (as tonic does it), the
//! gateway from the identifier's node, the entries as lines, and each line as the JSON
//! the writer appends.
#![no_main]

use std::sync::Arc;

use access_log::line::{self, GatewayId};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = StreamAccessLogsMessage::decode(data) else {
        return;
    };
    let gateway = Arc::new(match &message.identifier {
        Some(identifier) => GatewayId::from_node(identifier.node.as_ref()),
        None => GatewayId::unknown(),
    });
    let _ = gateway.to_string();
    if let Some(entries) = &message.log_entries {
        for line in line::lines(entries, &gateway) {
            let _ = serde_json::to_vec(&line);
        }
    }
});

//! Envoy resources as proto3 JSON (Envoy's own JSON/YAML form), through a descriptor pool
//! built from Envoy's API protos at compile time. `Any` values are expanded.
use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("Envoy descriptor set: {0}")]
    Pool(String),
    #[error("type {0} is not in the descriptor set")]
    UnknownType(String),
    #[error("cannot decode {type_url}")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("cannot serialize")]
    Serialize(#[source] serde_json::Error),
}

pub fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JsonError::Pool(e.clone()))
}

/// A packed resource as JSON, with `"@type"`.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let descriptor = pool()?
        .get_message_by_name(name)
        .ok_or_else(|| JsonError::UnknownType(any.type_url.clone()))?;
    let message = DynamicMessage::decode(descriptor, any.value.as_slice()).map_err(|source| JsonError::Decode {
        type_url: any.type_url.clone(),
        source,
    })?;
    let options = SerializeOptions::new().skip_default_fields(true);
    let mut serializer = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(JsonError::Serialize)?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&serializer.into_inner()).map_err(JsonError::Serialize)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("@type".into(), serde_json::Value::String(any.type_url.clone()));
    }
    Ok(value)
}

/// Any Envoy message of the pool as proto3 JSON (lowerCamelCase names, default fields
/// left out, every `Any` inside expanded with its `"@type"`).
pub fn message_to_json<M: prost::Message + prost::Name>(message: &M) -> Result<serde_json::Value, JsonError> {
    let name = M::full_name();
    let descriptor = pool()?
        .get_message_by_name(&name)
        .ok_or_else(|| JsonError::UnknownType(name.clone()))?;
    let message = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|source| JsonError::Decode { type_url: name, source })?;
    let options = SerializeOptions::new().skip_default_fields(true);
    let mut serializer = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(JsonError::Serialize)?;
    serde_json::from_slice(&serializer.into_inner()).map_err(JsonError::Serialize)
}

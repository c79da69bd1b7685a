//! The `controller` process (Gloo's `gloo` pod): reads Proxies and Upstreams from NATS,
//! translates them into Envoy resources, and serves them over ADS.
#![forbid(unsafe_code)]

pub mod actor;
pub mod bootstrap;
pub mod debug;
pub mod json;
pub mod metrics;
pub mod monitoring;
pub mod rest_xds;
pub mod run;
pub mod translate;
pub mod validation;
pub mod wasm;
pub mod xds;

//! The `controller` process (Gloo's `gloo` pod): reads Proxies and Upstreams from NATS,
//! translates them into Envoy resources, and serves them over ADS.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod actor;
pub mod bootstrap;
pub mod debug;
pub mod json;
mod metrics;
pub mod monitoring;
pub mod problem;
pub mod proxies;
pub mod resources;
pub mod rest_xds;
pub mod run;
pub mod secrets;
pub mod translate;
mod validation;
pub mod wasm;
pub mod xds;

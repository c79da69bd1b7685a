//! The `gateway` process: watches the config source, translates Gateway API resources into
//! one Proxy per Gateway, writes changed Proxies to NATS KV `kgw_proxies`, and reports status.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod actor;
mod kube_status;
mod metrics;
pub mod monitoring;
pub mod run;
pub mod status_cmd;
pub mod translate;
pub mod validate_cmd;
pub mod validation;
pub mod webhook;

//! Shared by the four processes: the directory config source and its resource index,
//! NATS connection and key-value helpers, telemetry and shutdown.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod body;
pub mod bus;
pub mod chunk;
pub mod config;
pub mod gloo;
pub mod leader;
pub mod monitoring;
pub mod policy;
pub mod process;
pub mod proxy_parts;
pub mod resources;
pub mod serve;
pub mod shutdown;
pub mod source;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace;
pub mod upstreams;

//! Runs the whole system on loopback: nats-server, the four processes, backends and Envoy.
//! Used by `kgw-up`, the end-to-end tests and the benchmarks.
#![forbid(unsafe_code)]

pub mod addr;
pub mod bins;
pub mod conformance;
pub mod echo;
pub mod envoy;
pub mod golden;
pub mod hints;
pub mod http;
pub mod jaeger;
pub mod kube;
pub mod manifest;
pub mod netns;
pub mod process;
pub mod system;
pub mod tools;

pub use addr::{Layout, Lease};
pub use echo::{spawn_echo, spawn_echo_on};
pub use http::{Response, get, get_tls, post_tls, request, request_tls, wait_for, wait_status};
pub use hyper::{Method, StatusCode};
pub use manifest::{remove_manifest, write_manifest_atomically};
pub use process::Process;
pub use system::{Component, Placement, System, SystemConfig};
pub use tools::{ensure_envoy, ensure_nats_server};

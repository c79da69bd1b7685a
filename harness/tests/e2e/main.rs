//! End to end: real nats-server, our four processes and a real Envoy on a loopback block of
//! their own (so these tests run side by side), driven through files in the config dir.
mod access_log_replicas;
mod bus_chunks;
mod bus_order;
mod controller_ports;
mod faults;
mod filters;
mod grpc_json;
mod kv_values;
mod monitoring;
mod mtls;
mod nats_auth;
mod one_trace;
mod routing;
mod support;
mod vhds;
mod wasm;
mod webhook;

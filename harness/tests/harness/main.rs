//! The harness's own tests: they need nats-server and Envoy (installed when missing), not
//! our four binaries.

mod addr;
mod echo;
mod envoy;
mod tools;

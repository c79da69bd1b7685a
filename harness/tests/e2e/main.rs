//! End to end: real nats-server, our four processes and a real Envoy on a loopback block of
//! their own (so these tests run side by side), driven through files in the config dir.
mod faults;
mod routing;
mod support;

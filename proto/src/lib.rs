//! The contract between the processes: the Proxy / Upstream / report messages and the one
//! place where NATS bucket and subject names are written.
#![forbid(unsafe_code)]

/// Generated from proto/protos/kgw/v1.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kgw.v1");
}

pub mod identity;
pub mod nats;
pub mod shrink;

pub use v1::*;

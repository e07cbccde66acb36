//! The fleetbench.v1 wire contract (see `proto/fleetbench/v1/fleetbench.proto`)
//! and conversions between its messages and the shared Rust types.

#![allow(missing_debug_implementations)]

pub mod v1 {
    #![allow(clippy::all, clippy::unwrap_used, rust_2018_idioms)]
    tonic::include_proto!("fleetbench.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fleetbench_descriptor");
}

/// Bumped only for changes old peers cannot understand; both sides refuse a
/// peer speaking another version.
pub const PROTOCOL_VERSION: u32 = 1;

mod convert;
pub mod security;
pub mod shutdown;
/// The client TLS flags, for every binary that dials a coordinator.
#[cfg(feature = "clap")]
pub mod tls_args;

pub use convert::ConvertError;

//! Generated types and gRPC services of the `jembatan.v1` protocol.
//!
//! Prost types are wire types, not domain types: `jembatan-core` converts
//! them at the edge with `TryFrom`, validating as it goes.

#![allow(unreachable_pub)] // generated code decides its own visibility
#![allow(clippy::large_enum_variant)] // generated oneofs
#![allow(clippy::doc_lazy_continuation)] // generated from proto comments

mod deadline;
pub mod json;
mod status;
pub mod trailers;

pub use deadline::grpc_timeout;
pub use status::{decode_error_status, map_decode_errors};
pub use trailers::{DENIAL_METADATA_KEY, INCOMPATIBILITY_METADATA_KEY, RECEIPT_METADATA_KEY};

pub mod v1 {
    tonic::include_proto!("jembatan.v1");
}

/// The encoded `FileDescriptorSet` of every `jembatan.v1` proto, for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jembatan_descriptor.bin"));

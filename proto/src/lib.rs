//! The lb.v1 API.
//!
//! - [`v1`]: every message and service of `proto/lb/v1/*.proto` (prost and
//!   tonic), with serde impls that follow the proto3 JSON mapping (pbjson);
//! - [`yaml`]: topology files in YAML or JSON, with errors that name the path
//!   of the offending field;
//! - [`duration`]: `google.protobuf.Duration` that also reads `50ms`;
//! - [`services`]: grpc.health.v1 and server reflection for every lb server.

pub mod duration;
pub mod services;
pub mod yaml;

/// The lb.v1 package.
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod v1 {
    tonic::include_proto!("lb.v1");
    include!(concat!(env!("OUT_DIR"), "/lb.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of lb.v1 and its imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lb_descriptor");

/// A point in time as `google.protobuf.Timestamp`.
pub fn timestamp(t: std::time::SystemTime) -> pbjson_types::Timestamp {
    let d = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// Now as `google.protobuf.Timestamp`.
pub fn now() -> pbjson_types::Timestamp {
    timestamp(std::time::SystemTime::now())
}

/// Version of the lb programs, from the workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

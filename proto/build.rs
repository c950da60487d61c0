//! Generates the lb.v1 messages (prost), services (tonic), the serde impls of
//! the proto3 JSON mapping (pbjson) and the descriptor set for reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "lb/v1/topology.proto",
    "lb/v1/agent.proto",
    "lb/v1/controller.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("lb_descriptor.bin");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // Durations read "1s" and "50ms" in topology files: our own type.
        .extern_path(".google.protobuf.Duration", "crate::duration::Duration")
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .compile_protos(PROTOS, &["."])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf.Duration", "crate::duration::Duration")
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .build(&[".lb.v1"])?;
    Ok(())
}

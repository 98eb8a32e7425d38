//! Compiles `proto/jembatan/v1/*.proto` with protox (no `protoc` needed) and
//! writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "jembatan/v1/common.proto",
    "jembatan/v1/exchange.proto",
    "jembatan/v1/adapter.proto",
    "jembatan/v1/registry.proto",
    "jembatan/v1/agreements.proto",
    "jembatan/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("jembatan_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `prost::Name` on every message: the JSON mapping finds a
        // message's descriptor by its full name
        .compile_fds_with_config(fds, {
            let mut config = tonic_prost_build::Config::new();
            config.enable_type_names();
            config
        })?;
    Ok(())
}

//! Compiles the jsheets protos with protox (no system `protoc` needed) and
//! generates prost messages plus tonic client and server code.

use std::{env, error::Error, fs, path::PathBuf};

/// The proto files, relative to the `proto/` include directory.
const PROTOS: &[&str] = &[
    "jsheets/api/snippet.proto",
    "jsheets/api/sheet.proto",
    "jsheets/api/snippet_runtime.proto",
];

/// Name of the encoded `FileDescriptorSet` written to `OUT_DIR`.
const DESCRIPTOR_SET: &str = "jsheets_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);
    let include = manifest_dir.join("proto");

    println!("cargo:rerun-if-changed={}", include.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", include.join(proto).display());
    }

    let mut compiler = protox::Compiler::new([&include])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;

    // Encoded set (with google/protobuf/timestamp.proto) for gRPC reflection.
    fs::write(
        out_dir.join(DESCRIPTOR_SET),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

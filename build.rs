//! Compiles `proto/` with protox (no `protoc` needed) and generates the tonic
//! client and server code, plus a file descriptor set for gRPC reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/thanos/labels.proto",
    "proto/thanos/types.proto",
    "proto/thanos/store.proto",
    "proto/thanos/info.proto",
    "proto/thanos/rules.proto",
    "proto/thanos/targets.proto",
    "proto/thanos/metadata.proto",
    "proto/thanos/exemplars.proto",
    "proto/thanos/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("thanos_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    let mut builder = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Chunk data (and every other `bytes` field) as `bytes::Bytes`:
        // decoding slices the received frame instead of copying.
        .bytes(".");
    // An AggrChunk has room for six chunks, but Prometheus data only ever
    // uses `raw`: boxing the downsampled aggregates shrinks every decoded
    // chunk from 256 to 96 bytes, which merging replicas' series moves.
    for aggregate in ["count", "sum", "min", "max", "counter"] {
        builder = builder.boxed(format!(".thanos.AggrChunk.{aggregate}"));
    }
    builder.compile_fds(descriptors)?;

    // The Store service once more, for the relay: Series answers are
    // `crate::wire::SeriesFrame`, which keeps each series as the bytes it
    // arrived in; every other type is the one generated above.
    let relay = out.join("relay");
    std::fs::create_dir_all(&relay)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&relay)
        .extern_path(".thanos", "crate::proto::thanos")
        .extern_path(".thanos.SeriesResponse", "crate::wire::SeriesFrame")
        .compile_fds(protox::compile(["proto/thanos/store.proto"], ["proto"])?)?;
    Ok(())
}

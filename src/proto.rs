//! Generated protobuf and gRPC code for the Thanos StoreAPI and Info services.

#![allow(clippy::all, missing_docs)]

/// Package `thanos`: labels, series, the Store service.
pub mod thanos {
    tonic::include_proto!("thanos");

    /// Package `thanos.info`: the Info service.
    pub mod info {
        tonic::include_proto!("thanos.info");
    }
}

/// `thanos.Store` with Series answers that keep each series as the bytes it
/// arrived in (see [`crate::wire`]): our server, and our client for remotes.
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay/thanos.rs"));
}

/// Largest gRPC message either side accepts. Thanos peers allow 2 GiB;
/// tonic's default of 4 MiB breaks on real Series frames.
pub const MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// File descriptor set of every `.proto` in `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("thanos_descriptor");

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

/// File descriptor set of every `.proto` in `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("thanos_descriptor");

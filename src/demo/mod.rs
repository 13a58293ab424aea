//! Everything that is not on the serving path: `thanos-fanout demo` (three
//! synthetic remote clusters over mutual TLS with the aggregator in front),
//! and what only it, the tests and the benchmarks use: synthetic StoreAPI
//! remotes, the Prometheus XOR chunk codec that encodes their data,
//! certificate minting and TLS servers. No serving module imports this.

pub mod certs;
pub mod chunkenc;
mod run;
mod sidecar_apis;
pub mod synthetic;
pub mod tls_server;

pub use run::{DemoError, run};

//! Everything that is not on the serving path: `thanos-fanout demo` (three
//! synthetic remote clusters over mutual TLS with the aggregator in front),
//! and what only it, the tests and the benchmarks use: synthetic StoreAPI
//! remotes, the Prometheus XOR chunk codec that encodes their data,
//! certificate minting and TLS servers. No serving module imports this.
//!
//! Built with the `demo` cargo feature (on by default), so the server's
//! binary and the container image can leave it out; `certs` alone is also
//! built for the library's unit tests.

pub mod certs;
#[cfg(feature = "demo")]
pub mod chunkenc;
#[cfg(feature = "demo")]
mod run;
#[cfg(feature = "demo")]
mod sidecar_apis;
#[cfg(feature = "demo")]
pub mod synthetic;
#[cfg(feature = "demo")]
pub mod tls_server;

#[cfg(feature = "demo")]
pub use run::{DemoError, run};

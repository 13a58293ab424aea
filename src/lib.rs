//! thanos-fanout: one Thanos StoreAPI endpoint in front of many remote
//! StoreAPI servers (sidecars, store gateways) reached over per-remote mutual
//! TLS, merging their answers the way a Thanos querier would.

pub mod admin;
pub mod admission;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
// Unit tests mint certificates with the demo's authority even when the
// binary is built without the demo.
#[cfg(any(test, feature = "demo"))]
pub mod demo;
pub mod discovery;
pub mod fanout;
pub mod handshake;
pub mod http2_window;
pub mod labelset;
pub mod listener;
pub mod metrics;
pub mod proto;
pub mod readiness;
pub mod reload;
pub mod remotes;
pub mod server;
pub mod snappy;
pub mod status;
pub mod target;
pub mod telemetry;
pub(crate) mod timefmt;
pub mod tls;
pub mod upstream;
pub mod wire;
pub(crate) mod x509;

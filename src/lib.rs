//! thanos-fanout: one Thanos StoreAPI endpoint in front of many remote
//! StoreAPI servers (sidecars, store gateways) reached over per-remote mutual
//! TLS, merging their answers the way a Thanos querier would.

pub(crate) mod admin;
pub(crate) mod admission;
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
pub(crate) mod handshake;
pub(crate) mod http2_window;
pub mod labelset;
pub(crate) mod listener;
pub(crate) mod metrics;
pub mod proto;
pub(crate) mod readiness;
pub(crate) mod reload;
pub(crate) mod remotes;
pub(crate) mod server;
pub mod snappy;
pub(crate) mod status;
pub(crate) mod target;
pub(crate) mod telemetry;
pub(crate) mod timefmt;
pub mod tls;
pub mod upstream;
pub mod wire;
pub(crate) mod x509;

//! thanos-fanout: one Thanos StoreAPI endpoint in front of many remote
//! StoreAPI servers (sidecars, store gateways) reached over per-remote mutual
//! TLS, merging their answers the way a Thanos querier would.

pub mod chunkenc;
pub mod config;
pub mod discovery;
pub mod fanout;
pub mod labels;
pub mod metrics;
pub mod proto;
pub mod tls;
pub mod upstream;

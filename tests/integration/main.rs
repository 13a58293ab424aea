//! Integration tests: real gRPC servers on loopback, real TLS with
//! certificates minted per test, the aggregator started from a config.
//! One test binary, so the crate links once.

mod cli;
mod common;
mod discovery;
mod dns_server;
mod info;
mod labels;
mod series;
mod tls;
mod workload;

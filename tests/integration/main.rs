//! Integration tests: real gRPC servers on loopback, real TLS with
//! certificates minted per test, the aggregator started from a config.
//! One test binary, so the crate links once.

// Helpers shared by the tests stop at the first thing they did not expect,
// like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accept;
mod apis;
mod bad_input;
mod check;
mod cli;
mod common;
mod discovery;
mod dns_server;
mod faults;
mod http2;
mod info;
mod labels;
mod listener_tls;
mod protection;
mod reload;
mod replicas;
mod series;
mod shutdown;
mod status;
mod tls;
mod tracing;
mod workload;

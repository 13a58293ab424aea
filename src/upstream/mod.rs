//! Remotes and their endpoints: the connections to each endpoint (TLS
//! identity, SNI name and `:authority` from the remote's config), its cached
//! Info, and whether it is healthy enough to be queried.
//!
//! - `remote.rs`: [`Remote`], its endpoint set kept in step with discovery,
//!   and [`Upstreams`], every remote, swapped whole on reload.
//! - `endpoint.rs`: [`Endpoint`], one dialable address, and how it is dialled.
//! - `clients.rs`: the gRPC clients an endpoint hands out.
//! - `info.rs`: [`RemoteInfo`] and [`Api`], what an endpoint says about itself.
//! - `poller.rs`: [`poll_info`], asking every endpoint for Info.
//! - `health.rs`: [`EndpointState`] and the health rule, [`Availability`].
//! - `classify.rs`: what went wrong with a failed call, and its description.
//! - `error.rs`: [`RemoteError`], a failed call tagged with its endpoint.
//! - `breaker.rs`: the circuit breaker that skips a failing endpoint.
//! - `connect.rs`: dialling: DNS, TCP, the TLS handshake, recorded facts.
//! - `pool.rs`: the HTTP/2 connections to one endpoint and their windows.

mod breaker;
mod classify;
mod clients;
mod connect;
mod endpoint;
mod error;
mod health;
mod info;
mod poller;
mod pool;
mod remote;

pub use breaker::{Breaker, Open};
pub use connect::{ConnectError, DialFacts, DialRecorder};
pub use endpoint::Endpoint;
pub use error::{RemoteError, RemoteErrorKind};
pub use health::{Availability, CallFailure, EndpointState};
pub use info::{Api, RemoteInfo};
pub use poller::{InfoCallError, poll_info};
pub use pool::StreamLease;
pub use remote::{Remote, UpstreamError, Upstreams};

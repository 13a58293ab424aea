//! Where a remote's endpoints are: the `targets` syntax, DNS lookups (A/AAAA,
//! SRV) with hickory, Prometheus file_sd files, and a loop per remote that
//! turns them into the remote's endpoint set, keeping the last good answer
//! through DNS failures.
//!
//! Each remote's current endpoint set is published on a `watch` channel;
//! upstream reconciles its connections to it. Discovery knows nothing of
//! connections.

mod dns;
mod file;
mod watch;

pub use dns::{Dns, LookupError};
pub use file::{parse_file_sd, read_file_sd};
pub use watch::{DiscoveryMetrics, DiscoverySettings, EndpointSet, RemoteDiscovery};

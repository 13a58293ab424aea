//! The gRPC clients of an endpoint: each generated client with our message
//! limits and the remote's compression, on the connection its kind of call
//! belongs on (the shared one for unary calls, one with room for another
//! stream for streaming calls).

use tonic::transport::Channel;

use super::{Endpoint, StreamLease};
use crate::proto::MAX_MESSAGE_SIZE;
use crate::proto::relay::store_client::StoreClient as RelayStoreClient;
use crate::proto::thanos::exemplars_client::ExemplarsClient;
use crate::proto::thanos::info::info_client::InfoClient;
use crate::proto::thanos::metadata_client::MetadataClient;
use crate::proto::thanos::rules_client::RulesClient;
use crate::proto::thanos::status_client::StatusClient;
use crate::proto::thanos::store_client::StoreClient;
use crate::proto::thanos::targets_client::TargetsClient;
use crate::snappy::RemoteChannel;

/// A generated client with our message limits and the remote's compression.
macro_rules! client {
    ($client:ident, $channel:expr, $compression:expr, $max_message:expr) => {{
        let client = $client::new($channel)
            .max_decoding_message_size($max_message)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        match $compression {
            Some(encoding) => client.send_compressed(encoding).accept_compressed(encoding),
            None => client,
        }
    }};
}

/// Clients for streaming calls: each on a connection with room for one more
/// stream; keep the lease until the stream is done.
macro_rules! stream_clients {
    ($($method:ident => $client:ident,)*) => {
        impl Endpoint {
            $(
                pub fn $method(&self) -> ($client<RemoteChannel>, StreamLease) {
                    let lease = self.pool.stream();
                    (
                        client!($client, self.channel(lease.channel()), self.compression, self.max_message_bytes),
                        lease,
                    )
                }
            )*
        }
    };
}

stream_clients! {
    series_client => RelayStoreClient,
    rules_client => RulesClient,
    targets_client => TargetsClient,
    metadata_client => MetadataClient,
    exemplars_client => ExemplarsClient,
    status_client => StatusClient,
}

impl Endpoint {
    /// A Store client for unary calls (LabelNames, LabelValues); cheap. The
    /// lease retires its connection if the remote turns a call away unread.
    pub fn store(&self) -> (StoreClient<RemoteChannel>, StreamLease) {
        let lease = self.pool.unary();
        let channel = self.channel(lease.channel());
        let client = client!(
            StoreClient,
            channel,
            self.compression,
            self.max_message_bytes
        );
        (client, lease)
    }

    /// An Info client; Info is unary, so it shares the first connection.
    pub(super) fn info_client(&self) -> InfoClient<RemoteChannel> {
        client!(
            InfoClient,
            self.channel(self.pool.primary()),
            self.compression,
            self.max_message_bytes
        )
    }

    fn channel(&self, channel: Channel) -> RemoteChannel {
        RemoteChannel::new(channel, self.snappy, self.max_message_bytes)
    }
}

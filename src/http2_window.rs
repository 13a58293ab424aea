//! HTTP/2 flow-control window arithmetic: how large a connection's window
//! must be so that its stalled Series streams never starve its other calls
//! (the reasons are in `upstream/pool.rs`). Config validation rejects a
//! stream window that does not fit and the connection pool sizes its
//! connections by it, so both import it from here.

/// Connection window left for unary calls and streams being read when every
/// Series stream on the connection is stalled.
pub const UNARY_HEADROOM: u32 = 4 << 20;

/// The largest HTTP/2 flow-control window (RFC 9113, 6.9.1).
pub const MAX_WINDOW: u32 = i32::MAX as u32;

/// The HTTP/2 connection window that keeps `streams` stalled streams of
/// `stream_window` bytes each from starving the connection's other calls;
/// `None` when it would exceed [`MAX_WINDOW`] (config validation rejects that).
pub fn connection_window(stream_window: u32, streams: usize) -> Option<u32> {
    u32::try_from(streams)
        .ok()
        .and_then(|streams| stream_window.checked_mul(streams))
        .and_then(|stalled| stalled.checked_add(UNARY_HEADROOM))
        .filter(|&window| window <= MAX_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::MAX_STREAMS_PER_CONNECTION;

    #[test]
    fn connection_window_is_the_streams_plus_headroom() {
        assert_eq!(connection_window(2 << 20, 16), Some(36 << 20));
        assert_eq!(connection_window(8 << 20, 16), Some(132 << 20));
        assert_eq!(
            connection_window(2 << 20, MAX_STREAMS_PER_CONNECTION),
            Some(2004 << 20)
        );
    }

    #[test]
    fn connection_window_beyond_http2s_largest_is_none() {
        // 255 streams of 8 MiB plus 4 MiB fit; 256 do not.
        assert_eq!(connection_window(8 << 20, 255), Some((255 * 8 + 4) << 20));
        assert_eq!(connection_window(8 << 20, 256), None);
        assert_eq!(connection_window(u32::MAX, 2), None);
        assert_eq!(
            connection_window(MAX_WINDOW - UNARY_HEADROOM, 1),
            Some(MAX_WINDOW)
        );
        assert_eq!(connection_window(MAX_WINDOW - UNARY_HEADROOM + 1, 1), None);
    }
}

//! What went wrong with a failed call: its status told apart by cause (no
//! connection, TLS, turned away unread, never sent, closed by the remote, or
//! the remote's own answer) and described with everything known about it,
//! for warnings, logs and the status page.

use std::sync::atomic::Ordering;

use super::{ConnectError, Endpoint, RemoteError, RemoteErrorKind};
use crate::tls;

impl Endpoint {
    /// Classifies a failed call: no connection, a failed TLS handshake (or
    /// a TLS alert after it), or an error the remote answered with; the text
    /// carries everything known about the cause.
    pub fn failure(&self, status: &tonic::Status) -> RemoteError {
        let text = self.describe(status);
        let mut source = std::error::Error::source(status);
        let mut connect = None;
        while let Some(error) = source {
            if let Some(found) = error.downcast_ref::<ConnectError>() {
                connect = Some(found);
                break;
            }
            source = error.source();
        }
        let kind = match connect {
            Some(ConnectError::Handshake { .. }) => RemoteErrorKind::Tls(text),
            _ if text.contains("received fatal alert") => RemoteErrorKind::Tls(text),
            Some(_) => RemoteErrorKind::Connect(text),
            None if refused_unread(status) => RemoteErrorKind::Refused(text),
            None if unsent(status) => RemoteErrorKind::Unsent(text),
            None if closed_by_remote(status) => RemoteErrorKind::Closed(text),
            None => RemoteErrorKind::Status(text),
        };
        self.error(kind)
    }

    /// A failed call's status with everything known about its cause.
    pub fn describe(&self, status: &tonic::Status) -> String {
        let mut text = describe_status(status);
        if self.unanswered_certificate_request.load(Ordering::Relaxed)
            && !text.contains("client certificate")
        {
            text.push_str(
                " (the remote asked for a client certificate and none is configured: if it requires one, set tls.cert_file and tls.key_file)",
            );
        }
        text
    }
}

/// Whether a call failed because its connection ended under it: the remote
/// (or an ingress or load balancer in front of it) closed or reset the
/// connection before or during the call. Such a status comes from our own
/// transport, never from the remote's answer, so it carries the transport's
/// error as its source; the caller cancelling never produces one (its call
/// is dropped, not failed).
fn closed_by_remote(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<hyper::Error>()
            && (error.is_canceled() || error.is_incomplete_message() || error.is_closed())
        {
            return true;
        }
        // h2 keeps the socket's error inside, not as its source.
        let io = match error.downcast_ref::<h2::Error>() {
            Some(error) => error.get_io(),
            None => error.downcast_ref::<std::io::Error>(),
        };
        if io.is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        }) {
            return true;
        }
        next = error.source();
    }
    false
}

/// Whether the remote turned the call's stream away before reading it: the
/// stream was opened after the remote's GOAWAY (h2 fails exactly the streams
/// above the GOAWAY's last stream id with the GOAWAY's error), or the remote
/// reset it with REFUSED_STREAM.
fn refused_unread(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<h2::Error>() {
            return (error.is_go_away() && error.is_remote())
                || error.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        next = error.source();
    }
    false
}

/// Whether the call's connection closed before its request was sent
/// (hyper's "canceled").
fn unsent(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A gRPC status with everything known about its cause, for warnings and logs.
fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    // An ingress or proxy error page instead of a gRPC answer: the first
    // byte of HTML ('<' = 60) is read as the gRPC compression flag.
    if status.message().contains("message length too large") {
        text.push_str(" (a frame larger than remotes[].max_message_bytes)");
    }
    if status.message().contains("invalid compression flag: 60") {
        text.push_str(" (the remote answered with HTML, not gRPC: an error page from a proxy or ingress in front of it?)");
    }
    // Each cause the message does not already say, once: tonic's message
    // is often its source's text, under a "transport error" wrapper.
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        let cause = tls::describe_one(error);
        if !cause.is_empty() && cause != "transport error" && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        next = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_error_pages_are_called_out() {
        let status = tonic::Status::internal(
            "protocol error: received message with invalid compression flag: 60 (valid flags are 0 and 1) while receiving response with status: 502 Bad Gateway",
        );
        let text = describe_status(&status);
        assert!(
            text.contains("502 Bad Gateway") && text.contains("answered with HTML"),
            "{text}"
        );
        assert!(!describe_status(&tonic::Status::unavailable("down")).contains("HTML"));
    }

    #[test]
    fn streams_refused_unread_are_told_apart() {
        let h2_status = |reason| tonic::Status::from_error(Box::new(h2::Error::from(reason)));
        assert!(refused_unread(&h2_status(h2::Reason::REFUSED_STREAM)));
        assert!(!refused_unread(&h2_status(h2::Reason::CANCEL)));
        assert!(!refused_unread(&h2_status(h2::Reason::INTERNAL_ERROR)));
        assert!(!refused_unread(&tonic::Status::unavailable("down")));
    }
}

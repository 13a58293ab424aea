//! What a peer speaks when it did not answer as expected: one extra
//! connection that sends an HTTP/2 connection preface, as a plaintext gRPC
//! client would, and looks at the first bytes that come back. Only used to
//! explain a failure; the failed dial itself went through the service's code.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 client connection preface followed by an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// What the peer answered to an HTTP/2 preface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// An HTTP/2 frame: plaintext HTTP/2 (h2c), as a gRPC server without TLS.
    Http2,
    /// `HTTP/1.x ...`: a plaintext HTTP/1 server; the status line.
    Http1(String),
    /// A TLS record (an alert): the peer expects TLS.
    Tls,
    /// Something else; its first bytes, printable.
    Other(String),
    /// It closed the connection without a byte.
    Closed,
    /// Nothing within the wait.
    Silent,
    /// The extra connection failed.
    Unreachable(String),
}

impl Peer {
    /// The peer in words, completing "it ...".
    pub fn describe(&self) -> String {
        match self {
            Peer::Http2 => "answered an HTTP/2 preface in plaintext HTTP/2 (h2c)".into(),
            Peer::Http1(status) => format!("answered in plaintext HTTP/1 ({status})"),
            Peer::Tls => "answered plaintext with a TLS record".into(),
            Peer::Other(bytes) => format!("answered with {bytes}"),
            Peer::Closed => "closed the connection without answering".into(),
            Peer::Silent => "sent nothing back".into(),
            Peer::Unreachable(e) => format!("could not be reached a second time ({e})"),
        }
    }
}

/// Connects to `addr`, sends an HTTP/2 preface and reads the answer.
pub async fn sniff(addr: SocketAddr, wait: Duration) -> Peer {
    let attempt = async {
        let mut tcp = match TcpStream::connect(addr).await {
            Ok(tcp) => tcp,
            Err(e) => return Peer::Unreachable(e.to_string()),
        };
        // A peer that closes on our first bytes may reset the write.
        if tcp.write_all(H2_PREFACE).await.is_err() {
            return Peer::Closed;
        }
        let mut buf = [0u8; 64];
        let mut read = 0;
        // Enough bytes to tell a frame header or a status line.
        while read < 12 {
            match tcp.read(&mut buf[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        classify(&buf[..read])
    };
    tokio::time::timeout(wait, attempt)
        .await
        .unwrap_or(Peer::Silent)
}

fn classify(bytes: &[u8]) -> Peer {
    if bytes.is_empty() {
        return Peer::Closed;
    }
    if bytes.starts_with(b"HTTP/1.") {
        let line = bytes
            .split(|b| *b == b'\r' || *b == b'\n')
            .next()
            .unwrap_or(bytes);
        return Peer::Http1(String::from_utf8_lossy(line).into_owned());
    }
    // A TLS record: content type 20-23, then version 3.x.
    if bytes.len() >= 3 && (20..=23).contains(&bytes[0]) && bytes[1] == 3 {
        return Peer::Tls;
    }
    // An HTTP/2 frame header: 24-bit length, type (SETTINGS 4, GOAWAY 7), flags,
    // stream 0.
    if bytes.len() >= 9 && matches!(bytes[3], 4 | 7) && bytes[5..9] == [0, 0, 0, 0] {
        return Peer::Http2;
    }
    Peer::Other(printable(bytes))
}

/// The first bytes as text where they are text, else as hex.
fn printable(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    if head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r' || *b == b'\n')
    {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(
            classify(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05"),
            Peer::Http2
        );
        assert_eq!(
            classify(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0"),
            Peer::Http1("HTTP/1.1 400 Bad Request".into())
        );
        assert_eq!(classify(b"\x15\x03\x03\x00\x02\x02\x32"), Peer::Tls);
        assert_eq!(classify(b""), Peer::Closed);
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH"),
            Peer::Other("\"SSH-2.0-OpenSSH\"".into())
        );
    }
}

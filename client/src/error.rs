//! Why a client call failed.

use std::time::Duration;

use chatroom_proto::v1::{self, ErrorCode};
use tokio_tungstenite::tungstenite;

/// Why connecting or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with a typed error.
    #[error("server refused: {}", describe(.0))]
    Server(v1::Error),
    /// The connection is closed, or closed before the answer came.
    #[error("connection closed")]
    Closed,
    /// No answer within the configured time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Resolving, connecting or writing failed.
    #[error("i/o: {0}")]
    Io(std::io::Error),
    /// The WebSocket handshake or framing failed.
    #[error("websocket: {0}")]
    WebSocket(Box<tungstenite::Error>),
    /// The server sent a frame that breaks the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server redirected more often than allowed.
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    /// The server address cannot be used.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting over QUIC failed (TLS included: an untrusted
    /// certificate, a protocol version the server does not speak), or the
    /// QUIC connection failed.
    #[error("quic: {0}")]
    Quic(String),
    /// The trust for QUIC could not be set up (a certificate file).
    #[error(transparent)]
    Tls(#[from] chatroom_cluster::quic::TlsError),
    /// QUIC was asked for with nothing to trust the server's certificate by.
    #[error(
        "quic needs to know which server certificate to trust: a certificate file or a SHA-256 \
         fingerprint (the embedded server prints both)"
    )]
    NoTrust,
    /// The request would exceed the server's frame limit.
    #[error("request of {0} bytes exceeds the 64 KiB frame limit")]
    FrameTooLarge(usize),
}

impl ClientError {
    /// The server's error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(error) => Some(error.code()),
            _ => None,
        }
    }

    /// When the server said to try again, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Server(error) if error.retry_after_ms > 0 => {
                Some(Duration::from_millis(error.retry_after_ms.into()))
            }
            _ => None,
        }
    }
}

// The causes below are part of the message, not `source()`: a report that
// prints the chain would otherwise say everything twice.

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(error: tungstenite::Error) -> Self {
        match error {
            tungstenite::Error::Io(io) => Self::Io(io),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                Self::Closed
            }
            other => Self::WebSocket(Box::new(other)),
        }
    }
}

/// `rate limited: slow down (retry after 1500 ms)`: the code as words, the
/// message, the retry hint.
pub fn describe(error: &v1::Error) -> String {
    let code = error
        .code()
        .as_str_name()
        .trim_start_matches("ERROR_CODE_")
        .replace('_', " ")
        .to_lowercase();
    let mut text = code;
    if !error.message.is_empty() {
        text.push_str(": ");
        text.push_str(&error.message);
    }
    if error.retry_after_ms > 0 {
        text.push_str(&format!(" (retry after {} ms)", error.retry_after_ms));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_expose_code_and_retry_hint() {
        let err = ClientError::Server(
            v1::Error::new(ErrorCode::RateLimited, "room is busy").retry_after(1500),
        );
        assert_eq!(err.code(), Some(ErrorCode::RateLimited));
        assert_eq!(err.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(
            err.to_string(),
            "server refused: rate limited: room is busy (retry after 1500 ms)"
        );
        assert_eq!(ClientError::Closed.code(), None);
        let banned = ClientError::Server(v1::Error::new(ErrorCode::Banned, ""));
        assert_eq!(banned.retry_after(), None);
        assert_eq!(banned.to_string(), "server refused: banned");
    }
}

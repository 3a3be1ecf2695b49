//! The signed POST both hooks make: keep-alive connections to one http://
//! endpoint, one deadline per exchange (connect, head and body), and a
//! bound on the answer's body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::sign::{SIGNATURE_HEADER, SigningSecret, sign};

/// How long an idle keep-alive connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a receiver answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The body, or why it could not be read whole.
    pub(crate) body: Result<Bytes, BodyFailure>,
}

/// Why an answer's body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// It is larger than allowed.
    TooLarge,
    /// The connection broke while it was read.
    Broken,
    /// The deadline passed while it was read.
    Timeout,
}

/// Why an exchange got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostFailure {
    /// No connection, or it broke before the answer's head.
    Unreachable,
    /// No answer's head before the deadline.
    Timeout,
}

/// A client for one endpoint, signing every body.
#[derive(Debug, Clone)]
pub(crate) struct SignedPoster {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    secret: SigningSecret,
}

impl SignedPoster {
    pub(crate) fn new(uri: Uri, secret: SigningSecret, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Self {
            client,
            uri,
            secret,
        }
    }

    /// POSTs `body` as JSON with `extra` headers, reading at most
    /// `max_body` bytes of the answer, all before `deadline`.
    pub(crate) async fn post(
        &self,
        body: Bytes,
        extra: &[(HeaderName, HeaderValue)],
        deadline: Instant,
        max_body: usize,
    ) -> Result<Answer, PostFailure> {
        let signature = sign(&self.secret, unix_seconds(), &body);
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("chatroom/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, signature);
        for (name, value) in extra {
            builder = builder.header(name, value);
        }
        // Cannot fail: the URI was checked when the hook was configured and
        // every header is a known-valid name and value.
        let request = builder
            .body(Full::new(body))
            .expect("a checked uri and valid headers");
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Err(PostFailure::Timeout),
            Ok(Err(_)) => return Err(PostFailure::Unreachable),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let body = match tokio::time::timeout_at(
            deadline,
            Limited::new(response.into_body(), max_body).collect(),
        )
        .await
        {
            Err(_) => Err(BodyFailure::Timeout),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                Err(BodyFailure::TooLarge)
            }
            Ok(Err(_)) => Err(BodyFailure::Broken),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        };
        Ok(Answer { status, body })
    }
}

/// Wall-clock seconds, for the signature (the receiver compares them with
/// its own clock).
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A fresh 128-bit random id with `prefix`, in hex.
pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

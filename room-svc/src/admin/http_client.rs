//! A small HTTP/1.1 client (hyper) for the admin API: forwarding between
//! room services and the operators' CLI. Every request has a deadline and
//! every answer a size bound.

use std::time::Duration;

use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read, in bytes.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// An HTTP client with a deadline per request.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting or exchanging failed.
    #[error("cannot reach {host}: {reason}")]
    Unreachable {
        /// Where the request went.
        host: String,
        /// What failed.
        reason: String,
    },
    /// No whole answer before the deadline.
    #[error("{host} did not answer within {timeout:?}")]
    Timeout {
        /// Where the request went.
        host: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The answer's body is beyond [`MAX_ANSWER_BYTES`].
    #[error("the answer of {host} is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge {
        /// Where the request went.
        host: String,
    },
}

impl HttpClient {
    /// A client giving each request `timeout` to be answered in full.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, HttpError> {
        let host = request
            .uri()
            .authority()
            .map_or_else(String::new, ToString::to_string);
        let exchange = async {
            let response =
                self.inner
                    .request(request)
                    .await
                    .map_err(|error| HttpError::Unreachable {
                        host: host.clone(),
                        reason: error.to_string(),
                    })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge { host: host.clone() }
                    } else {
                        HttpError::Unreachable {
                            host: host.clone(),
                            reason: error.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HttpError::Timeout {
                    host: host.clone(),
                    timeout: self.timeout,
                })
            })
    }
}

//! A client of the admin API, for the CLI and for tests.

use std::time::Duration;

use axum::http::{Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::Full;

use super::PREFIX;
use super::error::ErrorBody;
use super::http_client::{HttpClient, HttpError, Reply};

/// How long a request may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Talks to one node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: HttpClient,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `http://host:port`.
    #[error("admin url {0:?} is not http://HOST:PORT")]
    BadUrl(String),
    /// No answer.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The API refused the request.
    #[error("{status}: {code}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error's code.
        code: String,
        /// The error's message.
        message: String,
    },
    /// The answer is not what the API sends.
    #[error("unexpected answer ({status}): {body}")]
    BadAnswer {
        /// The HTTP status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
}

impl AdminClient {
    /// A client of the node at `base` (`http://host:port`) presenting
    /// `token`.
    pub fn new(base: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        let trimmed = base.trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|_| ClientError::BadUrl(base.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() || uri.path() != "/" {
            return Err(ClientError::BadUrl(base.to_owned()));
        }
        Ok(Self {
            base: trimmed.to_owned(),
            token: token.into(),
            http: HttpClient::new(DEFAULT_TIMEOUT),
        })
    }

    /// Sends `method` to `path` (below [`PREFIX`], e.g. `/rooms/demo`) with
    /// an optional JSON `body` and returns the raw answer, whatever its
    /// status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, ClientError> {
        let body = body.map_or_else(Bytes::new, |json| Bytes::from(json.to_string()));
        self.send(method, path, body, Some(&self.token)).await
    }

    /// The same with any body and any (or no) token, for testing the
    /// API's refusals.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{PREFIX}{path}", self.base);
        let uri: Uri = url.parse().map_err(|_| ClientError::BadUrl(url.clone()))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| ClientError::BadUrl(url))?;
        Ok(self.http.send(request).await?)
    }

    /// Sends a request and reads its JSON answer (`null` for 204); an error
    /// answer becomes [`ClientError::Api`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let reply = self.request(method, path, body).await?;
        let bad_answer = || ClientError::BadAnswer {
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body).into_owned(),
        };
        if reply.status.is_success() {
            if reply.body.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return serde_json::from_slice(&reply.body).map_err(|_| bad_answer());
        }
        match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(ErrorBody { error }) => Err(ClientError::Api {
                status: reply.status,
                code: error.code,
                message: error.message,
            }),
            Err(_) => Err(bad_answer()),
        }
    }
}

/// `id` as one path segment: everything but unreserved characters is
/// percent-encoded, so any string reaches the server, which judges it.
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_plain_http_origins() {
        assert!(AdminClient::new("http://127.0.0.1:7401", "t").is_ok());
        assert!(AdminClient::new("http://127.0.0.1:7401/", "t").is_ok());
        for bad in [
            "https://h:1",
            "127.0.0.1:7401",
            "http://h:1/admin",
            "",
            "http://",
        ] {
            assert!(
                matches!(AdminClient::new(bad, "t"), Err(ClientError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn segments_keep_ids_and_escape_the_rest() {
        assert_eq!(segment("room_1.a:b@c-d"), "room_1.a:b@c-d");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }
}

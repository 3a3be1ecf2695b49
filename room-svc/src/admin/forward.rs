//! Room services forwarding admin requests to each other: any room service
//! answers for any room by passing the request on to the room's owner, and
//! the busiest rooms are gathered from all of them.
//!
//! A forwarded request carries [`FORWARDED`] and is never forwarded again:
//! when two room services' views of the cluster disagree for a moment, the
//! second one answers `not_owner` (503, retry) instead of bouncing it back.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chatroom_cluster::membership::Members;
use http_body_util::Full;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::debug;

use super::MAX_BODY_BYTES;
use super::error::ApiError;
use super::http_client::{HttpClient, HttpError, Reply};

/// Header naming the room service that forwarded a request.
pub const FORWARDED: &str = "x-chatroom-forwarded";

/// How long a peer has to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The other room services of the cluster, as membership shows them.
#[derive(Debug, Clone)]
pub struct Peers {
    me: Arc<str>,
    members: watch::Receiver<Arc<Members>>,
    http: HttpClient,
}

/// Who answers for a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This node (or nobody is registered yet: then this node tries).
    Here,
    /// Another room service, at this HTTP address.
    There {
        /// Its node id.
        node: String,
        /// Its HTTP address.
        http_addr: String,
    },
    /// Another room service that registered no HTTP address.
    Unreachable(String),
}

impl Peers {
    /// This node is `me`; `members` is membership's live view.
    pub fn new(me: impl Into<Arc<str>>, members: watch::Receiver<Arc<Members>>) -> Self {
        Self {
            me: me.into(),
            members,
            http: HttpClient::new(PEER_TIMEOUT),
        }
    }

    pub(crate) fn owner(&self, room: &str) -> Owner {
        let members = self.members.borrow();
        match members.room_owner(room) {
            None => Owner::Here,
            Some(node) if *node.id == *self.me => Owner::Here,
            Some(node) => match &node.http_addr {
                Some(http_addr) => Owner::There {
                    node: node.id.clone(),
                    http_addr: http_addr.clone(),
                },
                None => Owner::Unreachable(node.id.clone()),
            },
        }
    }

    /// Passes `request` on to `http_addr` and relays the answer.
    pub(crate) async fn forward(&self, http_addr: &str, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request bodies are at most {MAX_BODY_BYTES} bytes"),
                )
                .into_response();
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |path| path.as_str());
        let auth = parts.headers.get(header::AUTHORIZATION);
        match self
            .send(http_addr, parts.method.clone(), path, auth, body)
            .await
        {
            Ok(reply) => relay(reply),
            Err(error) => unreachable_peer(&error).into_response(),
        }
    }

    /// Sends the same GET of `path` (with its query) to every other room
    /// service at once; their node ids with their answers.
    pub(crate) async fn ask_others(
        &self,
        path: &str,
        auth: Option<&HeaderValue>,
    ) -> Vec<(String, Result<Reply, HttpError>)> {
        let others: Vec<(String, Option<String>)> = self
            .members
            .borrow()
            .room_svcs
            .iter()
            .filter(|node| *node.id != *self.me)
            .map(|node| (node.id.clone(), node.http_addr.clone()))
            .collect();
        let mut asks = JoinSet::new();
        for (node, http_addr) in others {
            let Some(http_addr) = http_addr else {
                let error = HttpError::Unreachable {
                    host: node.clone(),
                    reason: "it registered no http address".into(),
                };
                asks.spawn(async move { (node, Err(error)) });
                continue;
            };
            let peers = self.clone();
            let (path, auth) = (path.to_owned(), auth.cloned());
            asks.spawn(async move {
                let reply = peers
                    .send(&http_addr, Method::GET, &path, auth.as_ref(), Bytes::new())
                    .await;
                (node, reply)
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = asks.join_next().await {
            // The tasks only await the client, which does not panic.
            if let Ok(answer) = answer {
                answers.push(answer);
            }
        }
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        answers
    }

    async fn send(
        &self,
        http_addr: &str,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Reply, HttpError> {
        let uri: Uri = format!("http://{http_addr}{path}").parse().map_err(
            |error: axum::http::uri::InvalidUri| HttpError::Unreachable {
                host: http_addr.to_owned(),
                reason: error.to_string(),
            },
        )?;
        debug!(%uri, %method, "admin request forwarded");
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(FORWARDED, &*self.me)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        // Method, URI and headers were all checked above.
        let request = request
            .body(Full::new(body))
            .expect("a well-formed request");
        self.http.send(request).await
    }
}

/// Marks an answer relayed from a peer, which did (and audited) the work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relayed;

/// The peer's answer as this node's.
fn relay(reply: Reply) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = reply.status;
    response.extensions_mut().insert(Relayed);
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
    ] {
        if let Some(value) = reply.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// A peer that did not answer: the caller may retry (the room may be
/// moving, or the peer restarting).
fn unreachable_peer(error: &HttpError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "owner_unreachable",
        format!("the room's owner did not answer: {error}"),
    )
    .retry_after(1)
}

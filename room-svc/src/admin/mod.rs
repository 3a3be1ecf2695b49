//! The admin HTTP API: operators read and change rooms while they are live.
//!
//! JSON over HTTP under [`PREFIX`], every request with `Authorization:
//! Bearer <admin token>`. Served by every room service (and by the embedded
//! server on its HTTP port). Any room service answers for any room: a
//! request about a room another room service owns is forwarded to it
//! ([`forward`]), and the busiest rooms are gathered from all of them. The
//! owner applies a change in the room's worker, in order with the room's
//! traffic, records it for Redis and pushes it to the room's msg-svc nodes
//! before it answers.
//!
//! Bad input (a malformed room or user id, a body that does not parse, an
//! unknown field, a limit out of bounds) is answered with a 4xx and an
//! [`ErrorBody`], and changes nothing. `openapi.yaml` beside this crate's
//! `Cargo.toml` describes every route.

pub mod cli;
pub mod client;
mod error;
mod forward;
pub mod http_client;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use chatroom_cluster::auth::AdminToken;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::moderation::List;
use crate::core::{ConfigPatch, RankBy, RoomStats, RoomSummary};
use crate::service::{ConfigChange, ModerationList, RoomService, RoomSettings};
pub use error::{ApiError, ErrorBody, ErrorDetail};
use forward::Owner;
pub use forward::{FORWARDED, Peers};

/// Where the API's routes start.
pub const PREFIX: &str = "/admin/v1";

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most rooms one busiest-rooms answer lists.
pub const MAX_TOP: usize = 1_000;

/// Most users one moderation list answer lists.
pub const MAX_LISTED: usize = 10_000;

/// Longest mute, seconds (a year); longer is indefinite (omit the duration).
pub const MAX_MUTE_S: u64 = 366 * 24 * 3600;

/// The sender a notice carries when the request names none.
pub const DEFAULT_NOTICE_SENDER: &str = "system";

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rooms: RoomService,
    /// `None`: no token is configured and every request is refused.
    token: Option<AdminToken>,
    /// The other room services; `None` in the embedded mode.
    peers: Option<Peers>,
}

impl AdminApi {
    /// The API over `rooms`, accepting `token`; without a token every
    /// request is refused with 503 `admin_disabled`. With `peers`, requests
    /// about rooms this node does not own are forwarded to their owner.
    pub fn new(rooms: RoomService, token: Option<AdminToken>, peers: Option<Peers>) -> Self {
        Self {
            inner: Arc::new(Inner {
                rooms,
                token,
                peers,
            }),
        }
    }

    /// The routes, to merge into a node's HTTP router. Unknown paths and
    /// methods get JSON errors too.
    pub fn router(self) -> Router {
        let room = Router::new()
            .route("/admin/v1/rooms/{room}", get(stats).delete(close))
            .route(
                "/admin/v1/rooms/{room}/config",
                get(config).patch(patch_config).delete(reset_config),
            )
            .route("/admin/v1/rooms/{room}/notices", post(notice))
            .route("/admin/v1/rooms/{room}/mutes", get(list_mutes))
            .route("/admin/v1/rooms/{room}/bans", get(list_bans))
            .route("/admin/v1/rooms/{room}/whitelist", get(list_whitelist))
            .route(
                "/admin/v1/rooms/{room}/mutes/{user}",
                put(mute).delete(unmute),
            )
            .route("/admin/v1/rooms/{room}/bans/{user}", put(ban).delete(unban))
            .route(
                "/admin/v1/rooms/{room}/whitelist/{user}",
                put(whitelist_add).delete(whitelist_remove),
            )
            .route_layer(middleware::from_fn_with_state(self.clone(), to_owner));
        Router::new()
            .route("/admin/v1/rooms", get(busiest))
            .merge(room)
            .route_layer(middleware::from_fn_with_state(self.clone(), authorize))
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this path does not take that method",
                )
            })
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
            })
            .with_state(self)
    }
}

// --- Middleware ---------------------------------------------------------------

/// Lets through requests carrying the admin token.
async fn authorize(State(api): State<AdminApi>, request: Request, next: Next) -> Response {
    let Some(token) = &api.inner.token else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "no admin token is configured on this node (--admin-token or --admin-token-file)",
        )
        .into_response();
    };
    match presented_token(request.headers()) {
        Some(presented) if token.verify(presented.as_bytes()) => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// The token of an `Authorization: Bearer` header, if the request has one.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110 §11.1).
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Passes requests about a room on to the room's owner, unless this node
/// owns it or the request was forwarded already.
async fn to_owner(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
    request: Request,
    next: Next,
) -> Response {
    let Some(peers) = &api.inner.peers else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED) {
        return next.run(request).await;
    }
    match peers.owner(&room) {
        Owner::Here => next.run(request).await,
        Owner::There { http_addr, .. } => peers.forward(&http_addr, request).await,
        Owner::Unreachable(node) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "owner_unreachable",
            format!("room service {node} owns the room but registered no http address"),
        )
        .retry_after(1)
        .into_response(),
    }
}

// --- Extractors ---------------------------------------------------------------

/// The `{room}` of a path. Its grammar is checked where the room is used,
/// so a bad id gets `bad_room_id`.
struct RoomPath(String);

impl<S: Send + Sync> FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        params
            .0
            .into_iter()
            .find(|(name, _)| name == "room")
            .map(|(_, room)| Self(room))
            .ok_or_else(|| ApiError::bad_request("bad_path", "the path names no room"))
    }
}

/// The `{room}` and `{user}` of a path.
struct MemberPath {
    room: String,
    user: String,
}

impl<S: Send + Sync> FromRequestParts<S> for MemberPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((room, user)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        Ok(Self { room, user })
    }
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::bad_request("bad_path", rejection.body_text())
}

/// A JSON object of at most [`MAX_BODY_BYTES`], whatever the Content-Type;
/// an empty body reads as `null` (so an optional body may be left out).
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request bodies are at most {MAX_BODY_BYTES} bytes"),
                )
            })?;
        parse_body(&bytes).map(Self)
    }
}

/// A request body's bytes as a `T`: a JSON object, or `null` or nothing at
/// all where `T` is optional.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bad = |error: serde_json::Error| {
        ApiError::bad_request("bad_body", format!("request body: {error}"))
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Only an optional body may be left out.
        return serde_json::from_value(serde_json::Value::Null).map_err(|_| {
            ApiError::bad_request("bad_body", "request body is empty: expected a JSON object")
        });
    }
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
    if !(json.is_object() || json.is_null()) {
        return Err(ApiError::bad_request(
            "bad_body",
            "request body: expected a JSON object",
        ));
    }
    serde_json::from_value(json).map_err(bad)
}

// --- Handlers -----------------------------------------------------------------

/// Which rooms to list.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    #[serde(default)]
    by: RankBy,
    #[serde(default = "default_top")]
    limit: usize,
}

fn default_top() -> usize {
    10
}

/// The busiest rooms of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopRooms {
    /// What they are ranked by.
    pub by: RankBy,
    /// Busiest first.
    pub rooms: Vec<RoomSummary>,
    /// Room services that did not answer: their rooms are missing.
    pub unreachable: Vec<String>,
}

async fn busiest(
    State(api): State<AdminApi>,
    query: Result<Query<TopQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<TopRooms>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("bad_query", rejection.body_text()))?;
    if !(1..=MAX_TOP).contains(&query.limit) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit is {}, allowed 1..={MAX_TOP}", query.limit),
        ));
    }
    let mut rooms = api.inner.rooms.busiest(query.by, query.limit).await;
    let mut unreachable = Vec::new();
    if let Some(peers) = &api.inner.peers
        && !request.headers().contains_key(FORWARDED)
    {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/admin/v1/rooms", |path| path.as_str());
        let auth = request.headers().get(header::AUTHORIZATION);
        for (node, answer) in peers.ask_others(path, auth).await {
            let theirs = answer
                .ok()
                .filter(|reply| reply.status.is_success())
                .and_then(|reply| serde_json::from_slice::<TopRooms>(&reply.body).ok());
            match theirs {
                Some(theirs) => rooms.extend(theirs.rooms),
                None => unreachable.push(node),
            }
        }
        query.by.top(&mut rooms, query.limit);
    }
    Ok(Json(TopRooms {
        by: query.by,
        rooms,
        unreachable,
    }))
}

/// How many users of a list to show.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default = "default_listed")]
    limit: usize,
}

fn default_listed() -> usize {
    1_000
}

async fn listed(
    api: &AdminApi,
    room: &str,
    list: List,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ModerationList>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("bad_query", rejection.body_text()))?;
    if !(1..=MAX_LISTED).contains(&query.limit) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("limit is {}, allowed 1..={MAX_LISTED}", query.limit),
        ));
    }
    let answer = api.inner.rooms.moderation_list(room, list, query.limit);
    Ok(Json(answer.await?))
}

async fn list_mutes(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ModerationList>, ApiError> {
    listed(&api, &room, List::Mutes, query).await
}

async fn list_bans(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ModerationList>, ApiError> {
    listed(&api, &room, List::Bans, query).await
}

async fn list_whitelist(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ModerationList>, ApiError> {
    listed(&api, &room, List::Whitelist, query).await
}

async fn stats(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomStats>, ApiError> {
    Ok(Json(api.inner.rooms.stats(&room).await?))
}

async fn close(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
) -> Result<StatusCode, ApiError> {
    api.inner.rooms.close_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomSettings>, ApiError> {
    Ok(Json(api.inner.rooms.room_config(&room).await?))
}

async fn patch_config(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
    JsonBody(patch): JsonBody<ConfigPatch>,
) -> Result<Json<RoomSettings>, ApiError> {
    let change = ConfigChange::Patch(patch);
    Ok(Json(api.inner.rooms.configure_room(&room, change).await?))
}

async fn reset_config(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomSettings>, ApiError> {
    let change = ConfigChange::Reset;
    Ok(Json(api.inner.rooms.configure_room(&room, change).await?))
}

/// A system notice to post.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeBody {
    text: String,
    #[serde(default)]
    sender: Option<String>,
}

/// Where a posted notice landed in the room's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    /// Its id in the room.
    pub msg_id: u64,
    /// Its timestamp, microseconds.
    pub ts: u64,
}

async fn notice(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
    JsonBody(body): JsonBody<NoticeBody>,
) -> Result<(StatusCode, Json<Posted>), ApiError> {
    let sender = body
        .sender
        .unwrap_or_else(|| DEFAULT_NOTICE_SENDER.to_owned());
    let ack = api
        .inner
        .rooms
        .post_notice(&room, &sender, Bytes::from(body.text))
        .await?;
    let posted = Posted {
        msg_id: ack.msg_id,
        ts: ack.ts,
    };
    Ok((StatusCode::CREATED, Json(posted)))
}

/// How long a mute lasts; no body (or no duration) mutes until unmuted.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    #[serde(default)]
    duration_s: Option<u64>,
}

async fn mute(
    State(api): State<AdminApi>,
    path: MemberPath,
    JsonBody(body): JsonBody<Option<MuteBody>>,
) -> Result<StatusCode, ApiError> {
    let duration = match body.and_then(|body| body.duration_s) {
        None => None,
        Some(seconds) if (1..=MAX_MUTE_S).contains(&seconds) => Some(Duration::from_secs(seconds)),
        Some(seconds) => {
            return Err(ApiError::bad_request(
                "bad_body",
                format!(
                    "duration_s is {seconds}, allowed 1..={MAX_MUTE_S} (leave it out to mute until unmuted)"
                ),
            ));
        }
    };
    api.inner
        .rooms
        .mute(&path.room, &path.user, duration)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unmute(State(api): State<AdminApi>, path: MemberPath) -> Result<StatusCode, ApiError> {
    api.inner.rooms.unmute(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ban(State(api): State<AdminApi>, path: MemberPath) -> Result<StatusCode, ApiError> {
    api.inner.rooms.ban(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unban(State(api): State<AdminApi>, path: MemberPath) -> Result<StatusCode, ApiError> {
    api.inner.rooms.unban(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whitelist_add(
    State(api): State<AdminApi>,
    path: MemberPath,
) -> Result<StatusCode, ApiError> {
    api.inner
        .rooms
        .whitelist_add(&path.room, &path.user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whitelist_remove(
    State(api): State<AdminApi>,
    path: MemberPath,
) -> Result<StatusCode, ApiError> {
    api.inner
        .rooms
        .whitelist_remove(&path.room, &path.user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The admin HTTP API: operators read and change rooms while they are live.
//!
//! JSON over HTTP under [`PREFIX`], every request with `Authorization:
//! Bearer <admin token or key>`. A key reaches only the routes of its
//! scopes ([`keys`]); each route is registered with the [`Scope`] it needs,
//! and every change (a request other than GET or HEAD, done or refused)
//! by a known key is an [`AuditRecord`]. Served by every room service (and
//! by the embedded server on its HTTP port). Any room service answers for
//! any room: a request about a room another room service owns is forwarded
//! to it
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
pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use bytes::Bytes;
use chatroom_cluster::time::unix_micros;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::config::KindName;
use crate::core::moderation::List;
use crate::core::{ConfigPatch, FilterAction, Publish, RankBy, RoomStats, RoomSummary, WordList};
use crate::hooks::EventKind;
use crate::service::{ConfigChange, ModerationList, RoomService, RoomSettings};
use chatroom_cluster::auth::DisplayInfo;
use chatroom_proto::v1;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use forward::{FORWARDED, Peers};
use forward::{Owner, Relayed};
use keys::Caller;
pub use keys::{Keyring, Scope};

/// Where the API's routes start.
pub const PREFIX: &str = "/admin/v1";

/// Largest request body, bytes: room for a word list at its bounds
/// (5,000 words of up to 64 bytes, as JSON).
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// Most rooms one busiest-rooms answer lists.
pub const MAX_TOP: usize = 1_000;

/// Most users one moderation list answer lists.
pub const MAX_LISTED: usize = 10_000;

/// Longest mute, seconds (a year); longer is indefinite (omit the duration).
pub const MAX_MUTE_S: u64 = 366 * 24 * 3600;

/// The sender a notice carries when the request names none.
pub const DEFAULT_NOTICE_SENDER: &str = "system";

/// Where audit records go besides the log (a webhook, say). Called on the
/// request's task once the answer is known, so it must not block: hand the
/// record to a queue.
pub type AuditSink = Arc<dyn Fn(AuditRecord) + Send + Sync>;

/// A change tried through the API by a known key, done or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The key's name ([`keys::TOKEN_KEY_NAME`] for the admin token).
    pub key: String,
    /// The HTTP method.
    pub method: String,
    /// The request's path, without the query.
    pub path: String,
    /// The room the path names, if it names one.
    pub room: Option<String>,
    /// The answer's HTTP status.
    pub status: u16,
    /// When the answer was known, microseconds since the Unix epoch.
    pub at_us: u64,
}

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    rooms: RoomService,
    /// Empty: every request is refused.
    keyring: Keyring,
    /// The other room services; `None` in the embedded mode.
    peers: Option<Peers>,
    audit: Option<AuditSink>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("rooms", &self.rooms)
            .field("keyring", &self.keyring)
            .field("peers", &self.peers)
            .field("audit", &self.audit.is_some())
            .finish()
    }
}

impl AdminApi {
    /// The API over `rooms`, accepting the token and keys of `keyring`;
    /// with neither every request is refused with 503 `admin_disabled`.
    /// With `peers`, requests about rooms this node does not own are
    /// forwarded to their owner. When `rooms` has a webhook, every audit
    /// record also goes there (as an `admin.audit` event).
    pub fn new(rooms: RoomService, keyring: Keyring, peers: Option<Peers>) -> Self {
        let audit = rooms.webhooks().cloned().map(|webhooks| {
            let sink: AuditSink = Arc::new(move |record: AuditRecord| {
                // A struct of strings and numbers always serializes.
                let data = serde_json::to_value(&record).unwrap_or_default();
                webhooks.emit(EventKind::AdminAudit, record.room.as_deref(), data);
            });
            sink
        });
        Self {
            inner: Arc::new(Inner {
                rooms,
                keyring,
                peers,
                audit,
            }),
        }
    }

    /// The same, also handing every audit record to `sink`.
    pub fn with_audit(self, sink: AuditSink) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.audit = Some(sink);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The routes, to merge into a node's HTTP router, each with the scope
    /// it needs. Unknown paths and methods get JSON errors too.
    pub fn router(self) -> Router {
        use Scope::{Configure, Moderate, Publish, Read};

        Router::new()
            .route("/admin/v1/rooms", needs(Read, get(busiest)))
            .route("/admin/v1/rooms/{room}", self.room(Read, get(stats)))
            .route(
                "/admin/v1/rooms/{room}",
                self.room(Configure, delete(close)),
            )
            .route(
                "/admin/v1/rooms/{room}/config",
                self.room(Read, get(config)),
            )
            .route(
                "/admin/v1/rooms/{room}/config",
                self.room(Configure, patch(patch_config).delete(reset_config)),
            )
            .route(
                "/admin/v1/rooms/{room}/notices",
                self.room(Publish, post(notice)),
            )
            .route(
                "/admin/v1/rooms/{room}/messages",
                self.room(Publish, post(publish)),
            )
            .route(
                "/admin/v1/rooms/{room}/mutes",
                self.room(Read, get(list_mutes)),
            )
            .route(
                "/admin/v1/rooms/{room}/bans",
                self.room(Read, get(list_bans)),
            )
            .route(
                "/admin/v1/rooms/{room}/whitelist",
                self.room(Read, get(list_whitelist)),
            )
            .route(
                "/admin/v1/rooms/{room}/mutes/{user}",
                self.room(Moderate, put(mute).delete(unmute)),
            )
            .route(
                "/admin/v1/rooms/{room}/bans/{user}",
                self.room(Moderate, put(ban).delete(unban)),
            )
            .route(
                "/admin/v1/rooms/{room}/whitelist/{user}",
                self.room(Moderate, put(whitelist_add).delete(whitelist_remove)),
            )
            .route(
                "/admin/v1/rooms/{room}/word-lists",
                self.room(Read, get(word_lists)),
            )
            .route(
                "/admin/v1/rooms/{room}/word-lists/{name}",
                self.room(Configure, put(set_word_list).delete(remove_word_list)),
            )
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

    /// `methods` about one room: they need `scope`, then go to the room's
    /// owner, so a key is refused where it asked, not where it was sent.
    fn room(&self, scope: Scope, methods: MethodRouter<Self>) -> MethodRouter<Self> {
        let to_owner = middleware::from_fn_with_state(self.clone(), to_owner);
        needs(scope, methods.route_layer(to_owner))
    }
}

/// `methods`, refused with 403 to keys without `scope`.
fn needs(scope: Scope, methods: MethodRouter<AdminApi>) -> MethodRouter<AdminApi> {
    methods.route_layer(middleware::from_fn_with_state(scope, require_scope))
}

// --- Middleware ---------------------------------------------------------------

/// Lets through requests carrying the admin token or a key, telling the
/// routes' scope checks who it is ([`Caller`]), and records the changes.
async fn authorize(State(api): State<AdminApi>, mut request: Request, next: Next) -> Response {
    let keyring = &api.inner.keyring;
    if keyring.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin_disabled",
            "no admin token or keys are configured on this node (--admin-token, --admin-token-file or --admin-keys)",
        )
        .into_response();
    }
    let Some(caller) = caller(keyring, request.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    let change = !matches!(*request.method(), Method::GET | Method::HEAD);
    if !change {
        request.extensions_mut().insert(caller);
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let room = RoomPath::from_request_parts(&mut parts, &())
        .await
        .ok()
        .map(|RoomPath(room)| room);
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let key = caller.key.to_string();
    parts.extensions.insert(caller);
    let response = next.run(Request::from_parts(parts, body)).await;
    // The owner a change was forwarded to records it.
    if response.extensions().get::<Relayed>().is_none() {
        audit(
            &api,
            AuditRecord {
                key,
                method,
                path,
                room,
                status: response.status().as_u16(),
                at_us: unix_micros(),
            },
        );
    }
    response
}

/// Logs `record` (target `audit`) and hands it to the sink, if any.
fn audit(api: &AdminApi, record: AuditRecord) {
    tracing::info!(
        target: "audit",
        key = %record.key,
        method = %record.method,
        path = %record.path,
        room = record.room.as_deref(),
        status = record.status,
        "admin change"
    );
    if let Some(sink) = &api.inner.audit {
        sink(record);
    }
}

/// Refuses callers without `scope` with 403 `insufficient_scope`.
async fn require_scope(State(scope): State<Scope>, request: Request, next: Next) -> Response {
    // `authorize` runs first on every route and leaves the caller; a route
    // reached without one is refused rather than let through.
    let Some(caller) = request.extensions().get::<Caller>() else {
        return ApiError::unauthorized().into_response();
    };
    if caller.scopes.contains(scope) {
        next.run(request).await
    } else {
        ApiError::insufficient_scope(scope, &caller.key).into_response()
    }
}

/// Whose the request's bearer token is, if anyone's.
pub(crate) fn caller(keyring: &Keyring, headers: &HeaderMap) -> Option<Caller> {
    keyring.authenticate(presented_token(headers)?.as_bytes())
}

/// The token of an `Authorization: Bearer` header, if the request has one.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
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

/// The room service acting for the request's key, so the moderation
/// events its changes raise name who made them.
struct Acting(RoomService);

impl FromRequestParts<AdminApi> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &AdminApi,
    ) -> Result<Self, Self::Rejection> {
        let rooms = &api.inner.rooms;
        Ok(Self(match parts.extensions.get::<Caller>() {
            Some(caller) => rooms.acting_as(&caller.key),
            None => rooms.clone(),
        }))
    }
}

/// The `{room}` and `{name}` of a word list's path.
struct ListPath {
    room: String,
    name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ListPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((room, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        Ok(Self { room, name })
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

async fn close(Acting(rooms): Acting, RoomPath(room): RoomPath) -> Result<StatusCode, ApiError> {
    rooms.close_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomSettings>, ApiError> {
    Ok(Json(api.inner.rooms.room_config(&room).await?))
}

async fn patch_config(
    Acting(rooms): Acting,
    RoomPath(room): RoomPath,
    JsonBody(patch): JsonBody<ConfigPatch>,
) -> Result<Json<RoomSettings>, ApiError> {
    let change = ConfigChange::Patch(patch);
    Ok(Json(rooms.configure_room(&room, change).await?))
}

async fn reset_config(
    Acting(rooms): Acting,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomSettings>, ApiError> {
    let change = ConfigChange::Reset;
    Ok(Json(rooms.configure_room(&room, change).await?))
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
    Acting(rooms): Acting,
    RoomPath(room): RoomPath,
    JsonBody(body): JsonBody<NoticeBody>,
) -> Result<(StatusCode, Json<Posted>), ApiError> {
    let sender = body
        .sender
        .unwrap_or_else(|| DEFAULT_NOTICE_SENDER.to_owned());
    let ack = rooms
        .post_notice(&room, &sender, Bytes::from(body.text))
        .await?;
    let posted = Posted {
        msg_id: ack.msg_id,
        ts: ack.ts,
    };
    Ok((StatusCode::CREATED, Json(posted)))
}

/// A message the app's backend publishes: of any kind, on behalf of a user
/// (`sender`) or of the system, with at most one of `text`, `attributes`
/// (a JSON object, sent as its JSON text) or `payload_base64`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    kind: KindName,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    sender: Option<String>,
    #[serde(default)]
    sender_info: Option<serde_json::Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Where a published message landed, and whether it was a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Its id in the room.
    pub msg_id: u64,
    /// Its timestamp, microseconds.
    pub ts: u64,
    /// `normal` or `priority`, as the room's policy gave the kind.
    pub lane: String,
    /// A retry with the same idempotency key: the first message's ack, and
    /// nothing posted again.
    pub duplicate: bool,
}

async fn publish(
    Acting(rooms): Acting,
    RoomPath(room): RoomPath,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    use base64::Engine as _;

    let bad = |message: String| ApiError::bad_request("bad_body", message);
    let payload = match (body.text, body.attributes, body.payload_base64) {
        (None, None, None) => Bytes::new(),
        (Some(text), None, None) => Bytes::from(text),
        (None, Some(attributes), None) => {
            Bytes::from(serde_json::Value::Object(attributes).to_string())
        }
        (None, None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|error| bad(format!("payload_base64: {error}")))?,
        _ => {
            return Err(bad(
                "give at most one of text, attributes and payload_base64".to_owned(),
            ));
        }
    };
    let sender_info = body
        .sender_info
        .map(DisplayInfo::from_json)
        .transpose()
        .map_err(|error| bad(format!("sender_info: {error}")))?
        .flatten()
        .map(|info| v1::SenderInfo {
            name: info.name.unwrap_or_default(),
            badges: info.badges,
            color: info.color.unwrap_or_default(),
        });
    let client_msg_id = match body.idempotency_key {
        None => 0,
        Some(key) if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) => idempotency_number(&key),
        Some(_) => {
            return Err(bad(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
            )));
        }
    };
    let system = body.sender.is_none();
    let publish = Publish {
        sender: body
            .sender
            .unwrap_or_else(|| DEFAULT_NOTICE_SENDER.to_owned()),
        system,
        sender_info,
        kind: body.kind.0,
        payload,
        client_msg_id,
    };
    let (ack, duplicate) = rooms.publish(&room, publish).await?;
    let lane = match v1::Lane::try_from(ack.lane) {
        Ok(v1::Lane::Priority) => "priority",
        _ => "normal",
    };
    let published = Published {
        msg_id: ack.msg_id,
        ts: ack.ts,
        lane: lane.to_owned(),
        duplicate,
    };
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(published)))
}

/// Longest idempotency key, bytes.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// An idempotency key as the number a retry is recognised by: the first
/// eight bytes of its SHA-256 (never 0, which means none).
fn idempotency_number(key: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first).max(1)
}

/// How long a mute lasts; no body (or no duration) mutes until unmuted.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    #[serde(default)]
    duration_s: Option<u64>,
}

async fn mute(
    Acting(rooms): Acting,
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
    rooms.mute(&path.room, &path.user, duration).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unmute(Acting(rooms): Acting, path: MemberPath) -> Result<StatusCode, ApiError> {
    rooms.unmute(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ban(Acting(rooms): Acting, path: MemberPath) -> Result<StatusCode, ApiError> {
    rooms.ban(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unban(Acting(rooms): Acting, path: MemberPath) -> Result<StatusCode, ApiError> {
    rooms.unban(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whitelist_add(Acting(rooms): Acting, path: MemberPath) -> Result<StatusCode, ApiError> {
    rooms.whitelist_add(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn whitelist_remove(Acting(rooms): Acting, path: MemberPath) -> Result<StatusCode, ApiError> {
    rooms.whitelist_remove(&path.room, &path.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A room's own word lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomWordLists {
    /// The room.
    pub room_id: String,
    /// Its lists (the service's default lists apply beside them).
    pub lists: Vec<WordList>,
}

async fn word_lists(
    State(api): State<AdminApi>,
    RoomPath(room): RoomPath,
) -> Result<Json<RoomWordLists>, ApiError> {
    let lists = api.inner.rooms.word_lists(&room).await?;
    Ok(Json(RoomWordLists {
        room_id: room,
        lists,
    }))
}

/// A word list as it is set: its name is in the path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WordListBody {
    action: FilterAction,
    words: Vec<String>,
}

async fn set_word_list(
    Acting(rooms): Acting,
    path: ListPath,
    JsonBody(body): JsonBody<WordListBody>,
) -> Result<StatusCode, ApiError> {
    let list = WordList {
        name: path.name,
        action: body.action,
        words: body.words,
    };
    rooms.set_word_list(&path.room, list).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_word_list(Acting(rooms): Acting, path: ListPath) -> Result<StatusCode, ApiError> {
    if rooms.remove_word_list(&path.room, &path.name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_word_list",
            format!("room {} has no word list {}", path.room, path.name),
        ))
    }
}

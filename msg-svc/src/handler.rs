//! What each client frame does. Transport-neutral: the WebSocket (and later
//! QUIC) connection tasks decode frames and hand them here.

use std::sync::Arc;

use chatroom_cluster::auth::{DisplayInfo, Identity};
use chatroom_cluster::link::LinkError;
use chatroom_cluster::time;
use chatroom_proto::cluster::v1::{SendRequest, ToRoomSvc, to_room_svc};
use chatroom_proto::compose::join_ack_frame;
use chatroom_proto::framing::ws::close_code;
use chatroom_proto::ids::check_id;
use chatroom_proto::v1::{
    self, ClientFrame, Connect, ConnectAck, ErrorCode, Join, JoinAck, KickReason, Kind, Leave,
    LeaveAck, Pong, Pull, Redirect, Refresh, RefreshAck, RoomPosition, Send, SenderInfo,
    client_frame, server_frame,
};
use tracing::{debug, info};

use crate::node::{self, MsgNode};
use crate::notifier::RoundConfig;
use crate::room::{Event, LocalRoom, RoomKey, Taken, limits};
use crate::session::{Session, Transport, Urgency};
use crate::shard::ShardCmd;

/// Handles one decoded frame. Errors are answered to the client; nothing here
/// ends the connection except a failed Connect.
pub(crate) async fn handle(node: &MsgNode, session: &Arc<Session>, frame: ClientFrame) {
    let request_id = frame.request_id;
    let Some(body) = frame.body else {
        answer_error(
            session,
            request_id,
            v1::Error::new(ErrorCode::BadRequest, "unknown frame"),
        );
        return;
    };
    let result = match body {
        client_frame::Body::Connect(connect) => self::connect(node, session, request_id, connect),
        _ if !session.is_connected() => {
            Err(v1::Error::new(ErrorCode::Unauthenticated, "connect first"))
        }
        client_frame::Body::Join(join) => self::join(node, session, request_id, join).await,
        client_frame::Body::Leave(leave) => self::leave(node, session, request_id, leave).await,
        client_frame::Body::Send(send) => self::send(node, session, request_id, send).await,
        client_frame::Body::Pull(pull) => self::pull(node, session, request_id, pull).await,
        client_frame::Body::Ping(_) => {
            pong(session, request_id);
            Ok(())
        }
        client_frame::Body::Refresh(refresh) => self::refresh(node, session, request_id, refresh),
    };
    if let Err(error) = result {
        answer_error(session, request_id, error);
    }
}

/// Answers `request_id` with an error.
pub(crate) fn answer_error(session: &Session, request_id: u64, error: v1::Error) {
    debug!(session = session.id, code = error.code, message = %error.message, "request refused");
    session.reply(request_id, server_frame::Body::Error(error));
}

fn bad_request(message: impl Into<String>) -> v1::Error {
    v1::Error::new(ErrorCode::BadRequest, message)
}

fn connect(
    node: &MsgNode,
    session: &Arc<Session>,
    request_id: u64,
    connect: Connect,
) -> Result<(), v1::Error> {
    if session.is_connected() {
        return Err(bad_request("already connected"));
    }
    let who = match node.tokens.verify(&connect.token) {
        Ok(who) => who,
        Err(error) => {
            node.metrics.token_refused(error.reason());
            refuse(
                session,
                request_id,
                ErrorCode::Unauthenticated,
                &format!("invalid token: {error}"),
            );
            return Ok(());
        }
    };
    let quic = matches!(session.transport(), Transport::Quic(_));
    if let Some(url) = node.redirect_for(&who.user, quic) {
        debug!(session = session.id, user = %who.user, %url, "redirected");
        session.reply(request_id, server_frame::Body::Redirect(Redirect { url }));
        session.close_with(KickReason::Unspecified, close_code::NORMAL, "redirected");
        return Ok(());
    }
    let device: Arc<str> = device_id(&connect)?.into();
    match node.sessions.register_device(
        &who.user,
        &device,
        session.id,
        node.config.max_sessions_per_user,
    ) {
        Ok(Some(replaced)) => {
            if let Some(old) = node.sessions.get(replaced) {
                old.kick(
                    KickReason::Replaced,
                    "replaced by a newer session of the same device",
                );
            }
        }
        Ok(None) => {}
        Err(_) => {
            let message = format!(
                "user has {} sessions already",
                node.config.max_sessions_per_user
            );
            refuse(session, request_id, ErrorCode::Forbidden, &message);
            return Ok(());
        }
    }
    info!(session = session.id, user = %who.user, %device, remote = %session.remote, "connected");
    let ack = ConnectAck {
        session_id: session.id,
        heartbeat_ms: u32::try_from(node.config.heartbeat.as_millis()).unwrap_or(u32::MAX),
        user_id: who.user.to_string(),
        max_rooms: u32::try_from(node.config.max_rooms_per_session).unwrap_or(u32::MAX),
        token_expires_at_ms: who.expires_at.saturating_mul(1000),
    };
    session.set_identity(who);
    session.reply(request_id, server_frame::Body::ConnectAck(ack));
    Ok(())
}

/// Takes a newer token for the session's user: the session then lives
/// until its expiry. A token refused, or another user's, leaves the session
/// as it was.
fn refresh(
    node: &MsgNode,
    session: &Session,
    request_id: u64,
    refresh: Refresh,
) -> Result<(), v1::Error> {
    let who = node.tokens.verify(&refresh.token).map_err(|error| {
        node.metrics.token_refused(error.reason());
        v1::Error::new(
            ErrorCode::Unauthenticated,
            format!("invalid token: {error}"),
        )
    })?;
    let token_expires_at_ms = who.expires_at.saturating_mul(1000);
    if !session.refresh_identity(who) {
        return Err(v1::Error::new(
            ErrorCode::Forbidden,
            "a refreshed token must be for the session's user",
        ));
    }
    node.metrics.token_refreshed();
    session.reply(
        request_id,
        server_frame::Body::RefreshAck(RefreshAck {
            token_expires_at_ms,
        }),
    );
    Ok(())
}

/// Answers a Connect with an error and closes: the connection cannot go on.
fn refuse(session: &Session, request_id: u64, code: ErrorCode, message: &str) {
    answer_error(session, request_id, v1::Error::new(code, message));
    session.close_with(KickReason::Protocol, close_code::POLICY_VIOLATION, message);
}

fn joined_room(session: &Session, room_id: &str) -> Result<Arc<LocalRoom>, v1::Error> {
    session
        .rooms()
        .iter()
        .find(|room| &*room.id == room_id)
        .cloned()
        .ok_or_else(|| v1::Error::new(ErrorCode::NotJoined, format!("not in room {room_id:?}")))
}

async fn join(
    node: &MsgNode,
    session: &Arc<Session>,
    request_id: u64,
    join: Join,
) -> Result<(), v1::Error> {
    check_id(&join.room_id).map_err(|e| bad_request(format!("room id {e}")))?;
    let joined = joined_room(session, &join.room_id).ok();
    let rejoin = joined.is_some();
    if !rejoin && session.rooms().len() >= node.config.max_rooms_per_session {
        return Err(bad_request(format!(
            "a session may join at most {} rooms",
            node.config.max_rooms_per_session
        )));
    }
    let Some(identity) = session.identity() else {
        return Err(v1::Error::new(ErrorCode::Unauthenticated, "connect first"));
    };
    let (room, admission) = match joined {
        Some(room) => {
            let admission = room.lifecycle().rejoin();
            (room, admission.map_err(node::refused)?)
        }
        None => {
            let granted = identity.roles.privileged() || identity.access.may_join(&join.room_id);
            node.join_room(&join.room_id, &identity.user, granted)
                .await?
        }
    };
    let backfill = requested(join.backfill, node.config.backfill);
    let (frame, cursor) = {
        let ring = room.ring.read();
        let latest = ring.latest();
        // A cursor the room never handed out is not resumed from.
        let resume = join.since.filter(|since| ring.could_have_given(since));
        let reset = join.since.is_some() && resume.is_none();
        let (recent, cursor) = match resume {
            Some(since) => (Vec::new(), since),
            None => (ring.recent(backfill), latest),
        };
        let head = JoinAck {
            room_id: join.room_id.clone(),
            latest: Some(latest),
            member_count: admission.member_count,
            limits: Some(limits(&admission.config, node.config.pull.1)),
            recent: Vec::new(),
            reset,
        };
        let frame = join_ack_frame(request_id, &head, recent.iter().map(|e| &e.encoded[..]));
        (frame, cursor)
    };
    if !rejoin {
        session.rooms().push(Arc::clone(&room));
    }
    // The ack goes out before the shard learns of the member, so the first
    // Notify cannot overtake it; the room counted the user in before the
    // ack, so a send the client makes after it finds the sender present.
    session.send(0, &frame, Urgency::Reply);
    let cmd = ShardCmd::Join {
        room: RoomKey(Arc::clone(&room)),
        config: RoundConfig::of(&admission.config),
        session: Arc::clone(session),
        cursor,
    };
    node.to_shard(session.shard, cmd).await;
    Ok(())
}

async fn leave(
    node: &MsgNode,
    session: &Arc<Session>,
    request_id: u64,
    leave: Leave,
) -> Result<(), v1::Error> {
    let room = {
        let mut rooms = session.rooms();
        let Some(index) = rooms.iter().position(|room| *room.id == *leave.room_id) else {
            return Err(v1::Error::new(
                ErrorCode::NotJoined,
                format!("not in room {:?}", leave.room_id),
            ));
        };
        rooms.swap_remove(index)
    };
    node.leave(session, &room).await;
    session.reply(
        request_id,
        server_frame::Body::LeaveAck(LeaveAck {
            room_id: leave.room_id,
        }),
    );
    Ok(())
}

async fn send(
    node: &MsgNode,
    session: &Session,
    request_id: u64,
    send: Send,
) -> Result<(), v1::Error> {
    let room = joined_room(session, &send.room_id)?;
    let max_payload = room.lifecycle().config().max_payload_bytes as usize;
    check_send(&send, max_payload)?;
    let Some(identity) = session.identity() else {
        return Err(v1::Error::new(ErrorCode::Unauthenticated, "connect first"));
    };
    if !identity.roles.privileged() {
        let now = time::mono_millis();
        session
            .take_send(node.config.session_send_rate, now)
            .map_err(|wait| {
                node.metrics.send_rate_limited();
                v1::Error::new(ErrorCode::RateLimited, "sending too fast")
                    .retry_after(u32::try_from(wait).unwrap_or(u32::MAX))
            })?;
    }
    let frame = ToRoomSvc {
        body: Some(to_room_svc::Body::Send(SendRequest {
            room_id: send.room_id,
            sender: identity.user.to_string(),
            sender_roles: sender_roles(&identity, &room.id),
            sender_info: identity.info.as_deref().map(sender_info),
            session_id: session.id,
            request_id,
            client_msg_id: send.client_msg_id,
            kind: send.kind,
            payload: send.payload,
        })),
    };
    // The room subscribes at the current owner and reports its presence
    // first, on the same link and under the same lock, so the owner knows
    // the sender before the send arrives.
    let owner = Event::Owner(node.uplink.owner_of(&room.id));
    let (followup, sent) = room.drive_then(
        time::mono_millis(),
        [owner],
        node.uplink.as_ref(),
        true,
        |lifecycle| forward(node, session, request_id, lifecycle.subscribed_at(), frame),
    );
    node.carry_out(&room, followup).await;
    sent?;
    node.metrics.send_forwarded();
    Ok(())
}

/// The sender's roles as the room service takes them: global ones, then
/// those their token gives them in `room`.
fn sender_roles(identity: &Identity, room: &str) -> Vec<String> {
    let mut names = identity.roles.names();
    let in_room = identity.access.roles_in(room).names();
    names.extend(in_room.into_iter().map(str::to_owned));
    names
}

/// How the app's backend described the sender, as messages carry it.
fn sender_info(info: &DisplayInfo) -> SenderInfo {
    SenderInfo {
        name: info.name.clone().unwrap_or_default(),
        badges: info.badges.clone(),
        color: info.color.clone().unwrap_or_default(),
    }
}

/// Forwards a send to `owner`, the room service the room is subscribed
/// at, tracking it until answered.
fn forward(
    node: &MsgNode,
    session: &Session,
    request_id: u64,
    owner: Option<&str>,
    frame: ToRoomSvc,
) -> Result<(), v1::Error> {
    let Some(owner) = owner else {
        return Err(
            v1::Error::new(ErrorCode::Overloaded, "room service unreachable").retry_after(500),
        );
    };
    if !session.track_send(
        request_id,
        owner.to_owned(),
        node.config.max_sends_in_flight,
    ) {
        return Err(v1::Error::new(
            ErrorCode::Overloaded,
            format!(
                "{} sends already await their answer",
                node.config.max_sends_in_flight
            ),
        )
        .retry_after(100));
    }
    node.uplink.try_send(frame).map_err(|error| {
        let _ = session.settle_send(request_id);
        let retry_after = match error {
            LinkError::Full => 100,
            LinkError::Down => 1_000,
        };
        v1::Error::new(ErrorCode::Overloaded, error.to_string()).retry_after(retry_after)
    })
}

async fn pull(
    node: &MsgNode,
    session: &Arc<Session>,
    request_id: u64,
    pull: Pull,
) -> Result<(), v1::Error> {
    let room = joined_room(session, &pull.room_id)?;
    let since = pull
        .since
        .ok_or_else(|| bad_request("pull needs a cursor"))?;
    let limit = requested(pull.limit, node.config.pull);
    let (frame, cmd) = {
        let ring = room.ring.read();
        let (frame, selection) = ring.pull_frame(request_id, &pull.room_id, &since, limit);
        let cmd = ShardCmd::Pulled {
            room: RoomKey(Arc::clone(&room)),
            session: session.id,
            since: (!selection.reset).then_some(since),
            cursor: selection.cursor,
            more: selection.more,
            taken: Taken::of(&selection),
            entries: selection
                .entries
                .iter()
                .map(|entry| (entry.msg_id, entry.lane))
                .collect(),
        };
        (frame, cmd)
    };
    node.metrics.pulled();
    session.send(0, &frame, Urgency::Reply);
    node.to_shard(session.shard, cmd).await;
    Ok(())
}

/// The device a Connect names (`default` when it names none), if it is a
/// valid id.
pub fn device_id(connect: &Connect) -> Result<&str, v1::Error> {
    let device = if connect.device_id.is_empty() {
        "default"
    } else {
        &connect.device_id
    };
    match check_id(device) {
        Ok(()) => Ok(device),
        Err(error) => Err(bad_request(format!("device id {error}"))),
    }
}

/// How many of something a request gets: 0 asks for the default, more than
/// the most allowed gets the most.
pub fn requested(asked: u32, (default, max): (u32, u32)) -> usize {
    let count = match asked {
        0 => default,
        n => n.min(max),
    };
    count as usize
}

/// A Send's own checks, once its room is known: the payload against the
/// room's limit, then the kind.
pub fn check_send(send: &Send, max_payload: usize) -> Result<(), v1::Error> {
    if send.payload.len() > max_payload {
        return Err(v1::Error::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload of {} bytes exceeds the room's {max_payload}",
                send.payload.len()
            ),
        ));
    }
    if !Kind::is_allowed(send.kind) {
        return Err(bad_request(format!("unknown message kind {}", send.kind)));
    }
    Ok(())
}

fn pong(session: &Session, request_id: u64) {
    let rooms = session
        .rooms()
        .iter()
        .map(|room| {
            let latest = room.latest();
            let member_count = room.lifecycle().member_count();
            RoomPosition {
                room_id: room.id.to_string(),
                latest: Some(latest),
                member_count,
            }
        })
        .collect();
    session.reply(request_id, server_frame::Body::Pong(Pong { rooms }));
}

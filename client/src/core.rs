//! The client's protocol logic with no I/O: per-room cursors, the one
//! outstanding pull per room, inline deltas, gap accounting, kicks.
//!
//! A [`SessionCore`] builds request frames (allocating request ids) and takes
//! every server frame through [`SessionCore::handle`], which says what to do:
//! frames to send (automatic pulls), events for the application, and replies
//! for the callers waiting on a request id. The socket task and the tests
//! drive the same code; nothing here reads a clock or touches a socket.
//!
//! Cursors are only ever the ones the server handed out (`JoinAck.latest`,
//! `Notify.latest` after an applied delta, `PullResult.cursor`, or the
//! cursor a caller resumes from), so the server can count drops exactly.
//! Deduplication uses a separate high-water mark of delivered timestamps:
//! a message is delivered only if its `ts` is above it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chatroom_proto::v1::{
    self, ChatMessage, ClientFrame, Cursor, JoinAck, KickReason, Lane, Notify, Pong, PullResult,
    ServerFrame, client_frame, server_frame,
};

use crate::error::ClientError;
use crate::events::Event;

/// The request id of the Connect frame; the core's own ids start after it.
pub const CONNECT_REQUEST_ID: u64 = 1;

/// How a session reacts to news of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// Pull by itself when behind. Off, the session only applies inline
    /// deltas and reports [`Event::Notified`]: a client that never pulls.
    pub auto_pull: bool,
    /// `limit` of automatic pulls; 0 lets the server choose.
    pub pull_limit: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            auto_pull: true,
            pull_limit: 0,
        }
    }
}

/// How to join a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinOptions {
    /// Resume after this cursor (one the server handed out earlier, e.g.
    /// [`SessionCore::cursor`] before a reconnect). `None` joins fresh.
    pub since: Option<Cursor>,
    /// How many recent messages a fresh joiner gets: 0 is the server default.
    pub backfill: u32,
}

/// The answer to a request, for whoever waits on its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request answered.
    pub request_id: u64,
    /// The answering frame's body, or the server's error.
    pub result: Result<server_frame::Body, v1::Error>,
}

/// What [`SessionCore::handle`] decided. Reused across calls: the caller
/// takes the contents out and the vectors keep their capacity.
#[derive(Debug, Default)]
pub struct Output {
    /// Frames to send, in order.
    pub frames: Vec<ClientFrame>,
    /// Events for the application, in order.
    pub events: Vec<Event>,
    /// Answers to requests made through the core.
    pub replies: Vec<Reply>,
}

impl Output {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.events.is_empty() && self.replies.is_empty()
    }

    /// Forgets everything, keeping the capacity.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.events.clear();
        self.replies.clear();
    }
}

/// One joined room as this session sees it.
#[derive(Debug)]
struct RoomFeed {
    name: Arc<str>,
    /// Where the session is: always a cursor the server handed out.
    cursor: Cursor,
    /// Highest `ts` delivered in `cursor.epoch`; at least `cursor.ts`.
    seen_ts: u64,
    /// The newest position the server announced.
    latest: Cursor,
    /// Request id of the automatic pull in flight.
    pull: Option<u64>,
    member_count: u64,
}

impl RoomFeed {
    fn behind(&self) -> bool {
        ahead(&self.latest, &self.cursor)
    }

    /// Remembers an announced position if it is newer (or of another epoch).
    fn note_latest(&mut self, latest: Cursor) {
        if latest.epoch != self.latest.epoch || latest.ts > self.latest.ts {
            self.latest = latest;
        }
    }

    /// Moves to a cursor the server handed out.
    fn advance_to(&mut self, cursor: Cursor) {
        if cursor.epoch != self.cursor.epoch {
            self.seen_ts = cursor.ts;
        } else {
            self.seen_ts = self.seen_ts.max(cursor.ts);
        }
        self.cursor = cursor;
        self.note_latest(cursor);
    }

    /// Delivers the messages above the high-water mark, oldest first, and
    /// counts how many of each lane went out.
    fn deliver(&mut self, messages: Vec<ChatMessage>, events: &mut Vec<Event>) -> (u64, u64) {
        let (mut normal, mut priority) = (0, 0);
        for message in messages {
            if message.ts <= self.seen_ts {
                continue;
            }
            self.seen_ts = message.ts;
            if message.lane == Lane::Priority as i32 {
                priority += 1;
            } else {
                normal += 1;
            }
            events.push(Event::Message {
                room: self.name.clone(),
                message,
            });
        }
        (normal, priority)
    }
}

/// Whether `latest` is past `cursor`: later in the same epoch, or another
/// epoch altogether.
fn ahead(latest: &Cursor, cursor: &Cursor) -> bool {
    latest.epoch != cursor.epoch || latest.ts > cursor.ts
}

/// What a request was, so its answer can be routed.
#[derive(Debug)]
enum Pending {
    Join {
        room: Arc<str>,
        since: Option<Cursor>,
    },
    /// Leave, Send, raw Pull: the answer only goes back to the caller.
    Plain,
    AutoPull {
        room: Arc<str>,
    },
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct SessionCore {
    config: CoreConfig,
    rooms: HashMap<Arc<str>, RoomFeed>,
    pending: HashMap<u64, Pending>,
    last_request_id: u64,
}

impl SessionCore {
    /// A session that has just been accepted.
    pub fn new(config: CoreConfig) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            pending: HashMap::new(),
            last_request_id: CONNECT_REQUEST_ID,
        }
    }

    /// The cursor of a joined room.
    pub fn cursor(&self, room: &str) -> Option<Cursor> {
        self.rooms.get(room).map(|feed| feed.cursor)
    }

    /// The member count the server last reported for a joined room.
    pub fn member_count(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).map(|feed| feed.member_count)
    }

    /// Whether an automatic pull is in flight for `room`.
    pub fn is_pulling(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|feed| feed.pull.is_some())
    }

    /// The joined rooms (those whose JoinAck has arrived).
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(|room| &**room)
    }

    /// A Join request.
    pub fn join(&mut self, room: &str, options: JoinOptions) -> ClientFrame {
        let request_id = self.next_request_id();
        self.pending.insert(
            request_id,
            Pending::Join {
                room: room.into(),
                since: options.since,
            },
        );
        frame(
            request_id,
            client_frame::Body::Join(v1::Join {
                room_id: room.to_owned(),
                since: options.since,
                backfill: options.backfill,
            }),
        )
    }

    /// A Leave request. The room is forgotten at once: whatever the server
    /// still sends about it is ignored.
    pub fn leave(&mut self, room: &str) -> ClientFrame {
        self.rooms.remove(room);
        self.plain_request(client_frame::Body::Leave(v1::Leave {
            room_id: room.to_owned(),
        }))
    }

    /// A Send request.
    pub fn send(
        &mut self,
        room: &str,
        client_msg_id: u64,
        kind: i32,
        payload: Bytes,
    ) -> ClientFrame {
        self.plain_request(client_frame::Body::Send(v1::Send {
            room_id: room.to_owned(),
            client_msg_id,
            kind,
            payload,
        }))
    }

    /// A raw Pull: its result goes to the caller only and changes nothing
    /// here (no cursor move, no events).
    pub fn pull(&mut self, room: &str, since: Cursor, limit: u32) -> ClientFrame {
        self.plain_request(client_frame::Body::Pull(v1::Pull {
            room_id: room.to_owned(),
            since: Some(since),
            limit,
        }))
    }

    /// A Refresh: a newer token for the session's user, answered by a
    /// RefreshAck with its expiry.
    pub fn refresh(&mut self, token: &str) -> ClientFrame {
        self.plain_request(client_frame::Body::Refresh(v1::Refresh {
            token: token.to_owned(),
        }))
    }

    /// A Ping. Its Pong is handled whatever request id it carries, so no
    /// answer is awaited.
    pub fn ping(&mut self) -> ClientFrame {
        frame(
            self.next_request_id(),
            client_frame::Body::Ping(v1::Ping {}),
        )
    }

    /// Drops a request that was never sent.
    pub fn forget(&mut self, request_id: u64) {
        self.pending.remove(&request_id);
    }

    /// Stops waiting for an answer whose caller gave up. A Join stays
    /// awaited: if its ack comes late the server has the session in the
    /// room, and so should the core.
    pub fn give_up(&mut self, request_id: u64) {
        if !matches!(self.pending.get(&request_id), Some(Pending::Join { .. })) {
            self.pending.remove(&request_id);
        }
    }

    /// Takes one server frame and appends what to do to `out`.
    pub fn handle(&mut self, frame: ServerFrame, out: &mut Output) {
        let ServerFrame { request_id, body } = frame;
        let Some(body) = body else {
            return;
        };
        if request_id != 0
            && let Some(pending) = self.pending.remove(&request_id)
        {
            self.on_reply(request_id, pending, body, out);
            return;
        }
        match body {
            server_frame::Body::Notify(notify) => self.on_notify(notify, out),
            server_frame::Body::Pong(pong) => self.on_pong(pong, out),
            server_frame::Body::Kicked(kicked) => self.on_kicked(kicked, out),
            server_frame::Body::Error(error) => out.events.push(Event::Error { room: None, error }),
            // An answer nobody waits for (or a second ConnectAck): nothing to do.
            _ => {}
        }
    }

    fn next_request_id(&mut self) -> u64 {
        self.last_request_id += 1;
        self.last_request_id
    }

    fn plain_request(&mut self, body: client_frame::Body) -> ClientFrame {
        let request_id = self.next_request_id();
        self.pending.insert(request_id, Pending::Plain);
        frame(request_id, body)
    }

    fn on_reply(
        &mut self,
        request_id: u64,
        pending: Pending,
        body: server_frame::Body,
        out: &mut Output,
    ) {
        let result = match (pending, body) {
            (Pending::AutoPull { room }, body) => {
                self.on_auto_pull_reply(&room, request_id, body, out);
                return;
            }
            (_, server_frame::Body::Error(error)) => Err(error),
            (Pending::Join { room, since }, server_frame::Body::JoinAck(ack)) => {
                self.on_join_ack(room, since, &ack, out);
                Ok(server_frame::Body::JoinAck(ack))
            }
            (_, body) => Ok(body),
        };
        out.replies.push(Reply { request_id, result });
    }

    fn on_join_ack(
        &mut self,
        room: Arc<str>,
        since: Option<Cursor>,
        ack: &JoinAck,
        out: &mut Output,
    ) {
        let latest = ack.latest.unwrap_or_default();
        let mut feed = RoomFeed {
            name: room.clone(),
            cursor: latest,
            seen_ts: 0,
            latest,
            pull: None,
            member_count: ack.member_count,
        };
        match since {
            Some(since) if !ack.reset => {
                // Resume: what came after `since` arrives by deltas or pulls.
                feed.cursor = since;
                feed.seen_ts = since.ts;
                if since.epoch == latest.epoch {
                    feed.deliver(ack.recent.clone(), &mut out.events);
                }
            }
            _ => {
                if ack.reset {
                    out.events.push(Event::Reset { room: room.clone() });
                }
                feed.deliver(ack.recent.clone(), &mut out.events);
                feed.seen_ts = feed.seen_ts.max(latest.ts);
            }
        }
        if self.config.auto_pull && feed.behind() {
            out.frames.push(start_pull(
                &mut self.last_request_id,
                &mut self.pending,
                &mut feed,
                self.config.pull_limit,
            ));
        }
        self.rooms.insert(room, feed);
    }

    fn on_notify(&mut self, notify: Notify, out: &mut Output) {
        let Notify {
            room_id,
            latest,
            delta,
            member_count,
        } = notify;
        let Some(feed) = self.rooms.get_mut(room_id.as_str()) else {
            return;
        };
        let Some(latest) = latest else {
            return;
        };
        feed.member_count = member_count;
        feed.note_latest(latest);
        // While a pull is in flight a delta is left alone: its drop counts
        // could overlap the pull's. The pull's answer is followed by another
        // pull if `latest` is still ahead.
        let delta = delta.filter(|delta| feed.pull.is_none() && covers(delta, feed.cursor, latest));
        let inline = delta.is_some();
        out.events.push(Event::Notified {
            room: feed.name.clone(),
            latest,
            inline,
        });
        if let Some(delta) = delta {
            apply_delta(feed, latest, delta, out);
        } else if self.config.auto_pull && feed.pull.is_none() && feed.behind() {
            out.frames.push(start_pull(
                &mut self.last_request_id,
                &mut self.pending,
                feed,
                self.config.pull_limit,
            ));
        }
    }

    fn on_auto_pull_reply(
        &mut self,
        room: &str,
        request_id: u64,
        body: server_frame::Body,
        out: &mut Output,
    ) {
        let Some(feed) = self.rooms.get_mut(room) else {
            return;
        };
        if feed.pull != Some(request_id) {
            // The room was left and joined again since: a stale answer.
            return;
        }
        feed.pull = None;
        let result = match body {
            server_frame::Body::PullResult(result) => result,
            server_frame::Body::Error(error) => {
                out.events.push(Event::Error {
                    room: Some(feed.name.clone()),
                    error,
                });
                return;
            }
            _ => return,
        };
        let PullResult {
            messages,
            dropped,
            dropped_priority,
            cursor,
            more,
            reset,
            ..
        } = result;
        let before = feed.cursor;
        let cursor = cursor.unwrap_or(before);
        let new_epoch = reset || cursor.epoch != before.epoch;
        if new_epoch {
            out.events.push(Event::Reset {
                room: feed.name.clone(),
            });
            feed.seen_ts = 0;
        } else if cursor.ts < before.ts {
            // Never move back; deliver nothing older than what we have.
            return;
        }
        if dropped > 0 || dropped_priority > 0 {
            out.events.push(Event::Dropped {
                room: feed.name.clone(),
                normal: dropped,
                priority: dropped_priority,
            });
        }
        feed.deliver(messages, &mut out.events);
        feed.advance_to(cursor);
        // Pull again only on progress: a server that keeps answering with
        // the same cursor must not make us spin.
        if (more || feed.behind()) && cursor != before {
            out.frames.push(start_pull(
                &mut self.last_request_id,
                &mut self.pending,
                feed,
                self.config.pull_limit,
            ));
        }
    }

    fn on_pong(&mut self, pong: Pong, out: &mut Output) {
        for position in pong.rooms {
            let Some(feed) = self.rooms.get_mut(position.room_id.as_str()) else {
                continue;
            };
            feed.member_count = position.member_count;
            if let Some(latest) = position.latest {
                feed.note_latest(latest);
            }
            if self.config.auto_pull && feed.pull.is_none() && feed.behind() {
                out.frames.push(start_pull(
                    &mut self.last_request_id,
                    &mut self.pending,
                    feed,
                    self.config.pull_limit,
                ));
            }
        }
    }

    fn on_kicked(&mut self, kicked: v1::Kicked, out: &mut Output) {
        let reason = KickReason::try_from(kicked.reason).unwrap_or(KickReason::Unspecified);
        let (room, last_cursor) = if kicked.room_id.is_empty() {
            // The session is closing: keep the cursors so the application
            // can resume elsewhere.
            (None, None)
        } else {
            match self.rooms.remove(kicked.room_id.as_str()) {
                Some(feed) => (Some(feed.name), Some(feed.cursor)),
                None => (Some(Arc::from(kicked.room_id.as_str())), None),
            }
        };
        out.events.push(Event::Kicked {
            room,
            reason,
            message: kicked.message,
            last_cursor,
        });
    }
}

/// Whether a Notify's delta can be applied at `cursor`: all three positions
/// share an epoch and `since.ts <= cursor.ts < latest.ts`.
fn covers(delta: &v1::Delta, cursor: Cursor, latest: Cursor) -> bool {
    delta.since.is_some_and(|since| {
        since.epoch == cursor.epoch
            && latest.epoch == cursor.epoch
            && since.ts <= cursor.ts
            && cursor.ts < latest.ts
    })
}

/// Applies a delta that [`covers`] the session's cursor.
fn apply_delta(feed: &mut RoomFeed, latest: Cursor, delta: v1::Delta, out: &mut Output) {
    let cursor = feed.cursor;
    let since = delta.since.unwrap_or(cursor);
    let fresh = |m: &&ChatMessage| m.ts > feed.seen_ts;
    let normal_new = delta
        .messages
        .iter()
        .filter(fresh)
        .filter(|m| m.lane != Lane::Priority as i32)
        .count() as u64;
    let priority_new = delta.messages.iter().filter(fresh).count() as u64 - normal_new;
    let (normal, priority) = if since.ts == cursor.ts {
        (delta.dropped, delta.dropped_priority)
    } else {
        // The delta starts before our cursor: its drop counts may include
        // gaps we have already passed. Count what the stream held between
        // our cursor and `latest` minus what we got, never more than the
        // server's figures.
        let normal_held = latest.normal_seq.saturating_sub(cursor.normal_seq);
        let all_held = latest.msg_id.saturating_sub(cursor.msg_id);
        let priority_held = all_held.saturating_sub(normal_held);
        (
            normal_held.saturating_sub(normal_new).min(delta.dropped),
            priority_held
                .saturating_sub(priority_new)
                .min(delta.dropped_priority),
        )
    };
    if normal > 0 || priority > 0 {
        out.events.push(Event::Dropped {
            room: feed.name.clone(),
            normal,
            priority,
        });
    }
    feed.deliver(delta.messages, &mut out.events);
    feed.advance_to(latest);
}

/// Marks `feed` as pulling and builds the Pull from its cursor.
fn start_pull(
    last_request_id: &mut u64,
    pending: &mut HashMap<u64, Pending>,
    feed: &mut RoomFeed,
    limit: u32,
) -> ClientFrame {
    *last_request_id += 1;
    let request_id = *last_request_id;
    feed.pull = Some(request_id);
    pending.insert(
        request_id,
        Pending::AutoPull {
            room: feed.name.clone(),
        },
    );
    frame(
        request_id,
        client_frame::Body::Pull(v1::Pull {
            room_id: feed.name.to_string(),
            since: Some(feed.cursor),
            limit,
        }),
    )
}

fn frame(request_id: u64, body: client_frame::Body) -> ClientFrame {
    ClientFrame {
        request_id,
        body: Some(body),
    }
}

/// The first frame of every connection.
pub fn connect_frame(token: &str, device_id: &str) -> ClientFrame {
    frame(
        CONNECT_REQUEST_ID,
        client_frame::Body::Connect(v1::Connect {
            token: token.to_owned(),
            device_id: device_id.to_owned(),
        }),
    )
}

/// How the server answered Connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The session is open.
    Accepted(v1::ConnectAck),
    /// Connect to this url instead.
    Redirect(String),
}

/// Reads the server's answer to Connect.
pub fn handshake_reply(frame: ServerFrame) -> Result<Handshake, ClientError> {
    match frame.body {
        Some(server_frame::Body::ConnectAck(ack)) => Ok(Handshake::Accepted(ack)),
        Some(server_frame::Body::Redirect(redirect)) if !redirect.url.is_empty() => {
            Ok(Handshake::Redirect(redirect.url))
        }
        Some(server_frame::Body::Redirect(_)) => {
            Err(ClientError::Protocol("redirect without a url".into()))
        }
        Some(server_frame::Body::Error(error)) => Err(ClientError::Server(error)),
        other => Err(ClientError::Protocol(format!(
            "expected connect_ack, got {}",
            body_name(other.as_ref())
        ))),
    }
}

/// The protobuf name of a server frame body, for error messages.
pub fn body_name(body: Option<&server_frame::Body>) -> &'static str {
    use server_frame::Body;
    match body {
        None => "an empty frame",
        Some(Body::ConnectAck(_)) => "connect_ack",
        Some(Body::Redirect(_)) => "redirect",
        Some(Body::JoinAck(_)) => "join_ack",
        Some(Body::SendAck(_)) => "send_ack",
        Some(Body::Notify(_)) => "notify",
        Some(Body::PullResult(_)) => "pull_result",
        Some(Body::Pong(_)) => "pong",
        Some(Body::Kicked(_)) => "kicked",
        Some(Body::Error(_)) => "error",
        Some(Body::LeaveAck(_)) => "leave_ack",
        Some(Body::RefreshAck(_)) => "refresh_ack",
    }
}

#[cfg(test)]
mod tests;

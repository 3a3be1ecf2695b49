//! A client session and its way out to the socket.
//!
//! Any task may hand a session a frame: the notifier shard, the connection's
//! own task, the task routing send acks. The frame is written at once with one
//! vectored write of a small per-socket head (transport header and request id)
//! and the shared body; only what the socket does not take is queued, as
//! reference-counted slices, and the connection task flushes it when the
//! socket is writable. An idle session holds no buffer.
//!
//! Backpressure: pushes (notifies, deltas) are refused while anything is
//! queued, so a slow socket gets no more than one frame behind; replies are
//! queued up to `max_outbound` bytes, past which the session is closed as a
//! slow consumer.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Buf, Bytes};
use chatroom_cluster::auth::Roles;
use chatroom_proto::Message;
use chatroom_proto::compose::RequestIdPrefix;
use chatroom_proto::framing::ws::{self, HeaderBytes, OpCode};
use chatroom_proto::v1::{KickReason, Kicked, ServerFrame, server_frame};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::debug;

use crate::notifier::{Delivery, SessionId};
use crate::room::LocalRoom;

/// Who a session speaks for, set by its Connect.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) user: Arc<str>,
    pub(crate) roles: Roles,
}

/// How a frame is treated when the socket is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// A notify or delta: refused while anything is queued.
    Push,
    /// An answer to a request: queued up to the bound.
    Reply,
}

/// The transport under a session.
#[derive(Debug)]
pub(crate) enum Transport {
    /// WebSocket over TCP: server frames are unmasked binary messages.
    WebSocket(TcpStream),
}

#[derive(Debug, Default)]
struct OutQueue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// A close frame is queued or sent; nothing else goes out.
    closing: bool,
    /// The socket failed or was shut down.
    dead: bool,
}

/// A connection from handshake to close.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    /// The fan-out shard that holds this session's memberships.
    pub(crate) shard: usize,
    pub(crate) remote: SocketAddr,
    identity: OnceLock<Identity>,
    transport: Transport,
    out: Mutex<OutQueue>,
    max_outbound: usize,
    /// Wakes the connection task: something to flush, or close.
    wake: Notify,
    /// Monotonic ms of the last frame received.
    last_seen: AtomicU64,
    /// Joined rooms. Short critical sections only; never held across await.
    rooms: Mutex<Vec<Arc<LocalRoom>>>,
    /// Sends forwarded and not yet answered: (request id, owner node id), so
    /// they can be failed at once if their link to the owner drops.
    sends: Mutex<Vec<(u64, String)>>,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        shard: usize,
        remote: SocketAddr,
        transport: Transport,
        max_outbound: usize,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            shard,
            remote,
            identity: OnceLock::new(),
            transport,
            out: Mutex::new(OutQueue::default()),
            max_outbound,
            wake: Notify::new(),
            last_seen: AtomicU64::new(now_ms),
            rooms: Mutex::new(Vec::new()),
            sends: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.get()
    }

    /// Sets the identity; false if the session already had one.
    pub(crate) fn set_identity(&self, identity: Identity) -> bool {
        self.identity.set(identity).is_ok()
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    pub(crate) fn rooms(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<LocalRoom>>> {
        self.rooms.lock()
    }

    /// Records a send forwarded to `owner`; false when `limit` sends are in
    /// flight already.
    pub(crate) fn track_send(&self, request_id: u64, owner: String, limit: usize) -> bool {
        let mut sends = self.sends.lock();
        if sends.len() >= limit {
            return false;
        }
        sends.push((request_id, owner));
        true
    }

    /// The send `request_id` was answered (or failed before it left);
    /// false if it was no longer awaited (already failed by a lost link).
    pub(crate) fn settle_send(&self, request_id: u64) -> bool {
        let mut sends = self.sends.lock();
        let found = sends.iter().position(|(id, _)| *id == request_id);
        if let Some(index) = found {
            sends.swap_remove(index);
        }
        if sends.is_empty() {
            *sends = Vec::new();
        }
        found.is_some()
    }

    /// Takes the sends in flight to `owner`, whose link dropped.
    pub(crate) fn take_sends_to(&self, owner: &str) -> Vec<u64> {
        let mut sends = self.sends.lock();
        let mut lost = Vec::new();
        sends.retain(|(id, to)| {
            let keep = to != owner;
            if !keep {
                lost.push(*id);
            }
            keep
        });
        lost
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        match &self.transport {
            Transport::WebSocket(stream) => stream,
        }
    }

    /// Hands the session a frame body that answers `request_id` (0: a push).
    pub(crate) fn send(&self, request_id: u64, body: &Bytes, urgency: Urgency) -> Delivery {
        let prefix = RequestIdPrefix::new(request_id);
        let header = HeaderBytes::new(OpCode::Binary, prefix.as_slice().len() + body.len(), None);
        let mut head = [0u8; ws::MAX_HEADER_LEN + 11];
        let head_len = header.as_slice().len() + prefix.as_slice().len();
        head[..header.as_slice().len()].copy_from_slice(header.as_slice());
        head[header.as_slice().len()..head_len].copy_from_slice(prefix.as_slice());
        self.write(&head[..head_len], body, urgency, false)
    }

    /// Encodes and sends a whole frame answering `request_id`.
    pub(crate) fn reply(&self, request_id: u64, body: server_frame::Body) {
        let frame = ServerFrame::reply(0, body).encode_to_vec();
        self.send(request_id, &Bytes::from(frame), Urgency::Reply);
    }

    /// Sends a WebSocket control frame (a Pong).
    pub(crate) fn send_control(&self, opcode: OpCode, payload: &[u8]) {
        let header = HeaderBytes::new(opcode, payload.len(), None);
        self.write(
            header.as_slice(),
            &Bytes::copy_from_slice(payload),
            Urgency::Reply,
            false,
        );
    }

    /// Tells the client why and closes the session.
    pub(crate) fn kick(&self, reason: KickReason, message: &str) {
        let kicked = Kicked {
            room_id: String::new(),
            reason: reason as i32,
            message: message.to_owned(),
        };
        self.reply(0, server_frame::Body::Kicked(kicked));
        let code = match reason {
            KickReason::Shutdown => ws::close_code::GOING_AWAY,
            KickReason::Protocol => ws::close_code::POLICY_VIOLATION,
            _ => ws::close_code::NORMAL,
        };
        self.close_with(reason, code, message);
    }

    /// Queues a WebSocket close frame; the connection task flushes it and ends.
    pub(crate) fn close_with(&self, reason: KickReason, code: u16, message: &str) {
        debug!(session = self.id, ?reason, code, message, "closing");
        let payload = Bytes::from(ws::close_payload(code, message));
        let header = HeaderBytes::new(OpCode::Close, payload.len(), None);
        self.write(header.as_slice(), &payload, Urgency::Reply, true);
    }

    /// Whether the session is closing or dead.
    pub(crate) fn is_closing(&self) -> bool {
        let out = self.out.lock();
        out.closing || out.dead
    }

    /// Waits until another task has something for the connection task.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Whether bytes wait for the socket to become writable.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.out.lock().chunks.is_empty()
    }

    /// Writes what is queued; `Ok(true)` when the queue is empty.
    pub(crate) fn flush(&self) -> io::Result<bool> {
        let mut out = self.out.lock();
        while !out.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); 32];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(out.chunks.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match self.stream().try_write_vectored(&slices[..count]) {
                Ok(written) => out.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    out.dead = true;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Closes the socket for good; later writes are refused.
    pub(crate) fn shut_down(&self) {
        let mut out = self.out.lock();
        out.dead = true;
        out.chunks.clear();
        out.bytes = 0;
        let _ = socket2::SockRef::from(self.stream()).shutdown(Shutdown::Both);
    }

    fn write(&self, head: &[u8], body: &Bytes, urgency: Urgency, closing: bool) -> Delivery {
        let mut out = self.out.lock();
        if out.closing || out.dead {
            return Delivery::Refused;
        }
        out.closing = closing;
        let total = head.len() + body.len();
        if !out.chunks.is_empty() {
            if urgency == Urgency::Push {
                return Delivery::Refused;
            }
            if out.bytes + total > self.max_outbound && !closing {
                drop(out);
                self.close_with(
                    KickReason::SlowConsumer,
                    ws::close_code::POLICY_VIOLATION,
                    "slow consumer: outbound queue full",
                );
                return Delivery::Refused;
            }
            out.push(Bytes::copy_from_slice(head), body.clone());
            if closing {
                // The task may be parked on a socket that never turns
                // writable: it must see the close to enforce its deadline.
                drop(out);
                self.wake.notify_one();
            }
            return Delivery::Accepted;
        }
        let written = match self
            .stream()
            .try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                out.dead = true;
                drop(out);
                self.wake.notify_one();
                return Delivery::Refused;
            }
        };
        if written < total || closing {
            if written < head.len() {
                out.push(Bytes::copy_from_slice(&head[written..]), body.clone());
            } else if written < total {
                out.push(Bytes::new(), body.slice(written - head.len()..));
            }
            drop(out);
            self.wake.notify_one();
        }
        Delivery::Accepted
    }
}

impl OutQueue {
    fn push(&mut self, head: Bytes, body: Bytes) {
        self.bytes += head.len() + body.len();
        if !head.is_empty() {
            self.chunks.push_back(head);
        }
        if !body.is_empty() {
            self.chunks.push_back(body);
        }
    }

    fn consume(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        if self.chunks.is_empty() {
            // Give back the queue's memory: an idle session holds no buffer.
            self.chunks = VecDeque::new();
        }
    }
}

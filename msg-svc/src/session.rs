//! A client session and its way out to the socket.
//!
//! Any task may hand a session a frame: the notifier shard, the connection's
//! own task, the task routing send acks. The frame is written at once with one
//! vectored write of a small per-socket head (transport header and request id)
//! and the shared body; only what the transport does not take is queued, as
//! reference-counted slices, and the connection task flushes it when the
//! transport is writable. An idle session holds no buffer.
//!
//! Over QUIC the "socket" is the session's stream: a write hands the shared
//! body to quinn by reference (no copy), and the transport header is the
//! length prefix. Only the connection task waits for the stream to become
//! writable, and only while something is queued; every other write is a
//! single attempt that never parks a waker.
//!
//! Backpressure: pushes (notifies, deltas) are refused while anything is
//! queued, so a slow socket gets no more than one frame behind; replies are
//! queued up to `max_outbound` bytes, past which the session is closed as a
//! slow consumer.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use chatroom_cluster::auth::Identity;
use chatroom_cluster::metrics::Counter;
use chatroom_proto::Message;
use chatroom_proto::compose::RequestIdPrefix;
use chatroom_proto::framing::length;
use chatroom_proto::framing::ws::{self, HeaderBytes, OpCode};
use chatroom_proto::v1::{KickReason, Kicked, ServerFrame, server_frame};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::debug;

use crate::admission::{Rate, TokenBucket};
use crate::notifier::{Delivery, SessionId};
use crate::room::LocalRoom;

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
    /// A QUIC connection's one bidirectional stream: server frames are
    /// length-prefixed.
    Quic(QuicStream),
}

/// The sending half of a QUIC session.
#[derive(Debug)]
pub(crate) struct QuicStream {
    pub(crate) connection: quinn::Connection,
    send: Mutex<quinn::SendStream>,
}

impl QuicStream {
    pub(crate) fn new(connection: quinn::Connection, send: quinn::SendStream) -> Self {
        Self {
            connection,
            send: Mutex::new(send),
        }
    }
}

/// How a session ends, once it is closing: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    /// A WebSocket close code; over QUIC, the application error code.
    pub(crate) code: u16,
    pub(crate) reason: String,
}

#[derive(Debug, Default)]
struct OutQueue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// The session is closing; nothing else goes out. Over WebSocket the
    /// close frame is queued or sent already.
    closing: Option<Closing>,
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
    /// Who the session speaks for, set by its Connect; a Refresh replaces
    /// it with the same user's newer token.
    identity: RwLock<Option<Arc<Identity>>>,
    transport: Transport,
    out: Mutex<OutQueue>,
    max_outbound: usize,
    /// Counts the session's closing when its outbound queue overflows.
    overflows: Counter,
    /// Wakes the connection task: something to flush, or close.
    wake: Notify,
    /// Monotonic ms when the session opened: Connect is due from then,
    /// however many other frames come first.
    opened_ms: u64,
    /// Monotonic ms of the last frame received.
    last_seen: AtomicU64,
    /// Joined rooms. Short critical sections only; never held across await.
    rooms: Mutex<Vec<Arc<LocalRoom>>>,
    /// Sends forwarded and not yet answered: (request id, owner node id), so
    /// they can be failed at once if their link to the owner drops.
    sends: Mutex<Vec<(u64, String)>>,
    /// The session's own send rate, on top of its rooms'.
    send_bucket: Mutex<TokenBucket>,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        shard: usize,
        remote: SocketAddr,
        transport: Transport,
        max_outbound: usize,
        overflows: Counter,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            shard,
            remote,
            identity: RwLock::new(None),
            transport,
            out: Mutex::new(OutQueue::default()),
            max_outbound,
            overflows,
            wake: Notify::new(),
            opened_ms: now_ms,
            last_seen: AtomicU64::new(now_ms),
            rooms: Mutex::new(Vec::new()),
            sends: Mutex::new(Vec::new()),
            send_bucket: Mutex::new(TokenBucket::new(now_ms)),
        }
    }

    pub(crate) fn identity(&self) -> Option<Arc<Identity>> {
        self.identity.read().clone()
    }

    /// Whether a Connect succeeded.
    pub(crate) fn is_connected(&self) -> bool {
        self.identity.read().is_some()
    }

    /// Sets the identity; false if the session already had one.
    pub(crate) fn set_identity(&self, identity: Identity) -> bool {
        let mut slot = self.identity.write();
        if slot.is_some() {
            return false;
        }
        *slot = Some(Arc::new(identity));
        true
    }

    /// Replaces the identity with a newer token's for the same user; false
    /// (and nothing changes) when the session has none or `identity` is
    /// another user's.
    pub(crate) fn refresh_identity(&self, identity: Identity) -> bool {
        let mut slot = self.identity.write();
        match &*slot {
            Some(current) if current.user == identity.user => {
                *slot = Some(Arc::new(identity));
                true
            }
            _ => false,
        }
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn opened_ms(&self) -> u64 {
        self.opened_ms
    }

    pub(crate) fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    pub(crate) fn rooms(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<LocalRoom>>> {
        self.rooms.lock()
    }

    /// Takes one send from the session's budget; when it is spent, how many
    /// ms until the next.
    pub(crate) fn take_send(&self, rate: Rate, now_ms: u64) -> Result<(), u64> {
        self.send_bucket.lock().take(rate, now_ms)
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

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The TCP stream of a WebSocket session.
    pub(crate) fn stream(&self) -> Option<&TcpStream> {
        match &self.transport {
            Transport::WebSocket(stream) => Some(stream),
            Transport::Quic(_) => None,
        }
    }

    /// Hands the session a frame body that answers `request_id` (0: a push).
    pub(crate) fn send(&self, request_id: u64, body: &Bytes, urgency: Urgency) -> Delivery {
        let prefix = RequestIdPrefix::new(request_id);
        let frame_len = prefix.as_slice().len() + body.len();
        let mut head = [0u8; ws::MAX_HEADER_LEN + 11];
        let header_len = match &self.transport {
            Transport::WebSocket(_) => {
                let header = HeaderBytes::new(OpCode::Binary, frame_len, None);
                head[..header.as_slice().len()].copy_from_slice(header.as_slice());
                header.as_slice().len()
            }
            Transport::Quic(_) => {
                // Server frames are far below 4 GiB (pull results are capped).
                let Ok(header) = length::prefix(frame_len) else {
                    return Delivery::Refused;
                };
                head[..length::PREFIX_LEN].copy_from_slice(&header);
                length::PREFIX_LEN
            }
        };
        let head_len = header_len + prefix.as_slice().len();
        head[header_len..head_len].copy_from_slice(prefix.as_slice());
        self.write(&head[..head_len], body, urgency, None)
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
            None,
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

    /// Starts closing with `code` and `message`: over WebSocket a close
    /// frame is queued; over QUIC the connection task finishes the stream
    /// and closes the connection with them once the client has the rest.
    pub(crate) fn close_with(&self, reason: KickReason, code: u16, message: &str) {
        debug!(session = self.id, ?reason, code, message, "closing");
        let closing = Closing {
            code,
            reason: message.to_owned(),
        };
        match &self.transport {
            Transport::WebSocket(_) => {
                let payload = Bytes::from(ws::close_payload(code, message));
                let header = HeaderBytes::new(OpCode::Close, payload.len(), None);
                self.write(header.as_slice(), &payload, Urgency::Reply, Some(closing));
            }
            Transport::Quic(_) => {
                let mut out = self.out.lock();
                if out.closing.is_none() && !out.dead {
                    out.closing = Some(closing);
                    drop(out);
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Whether the session is closing or dead.
    pub(crate) fn is_closing(&self) -> bool {
        let out = self.out.lock();
        out.closing.is_some() || out.dead
    }

    /// Waits until another task has something for the connection task.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Whether bytes wait for the socket to become writable.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.out.lock().chunks.is_empty()
    }

    /// Writes what is queued without waiting; `Ok(true)` when the queue is
    /// empty.
    pub(crate) fn flush(&self) -> io::Result<bool> {
        let mut context = Context::from_waker(Waker::noop());
        match self.poll_flush(&mut context) {
            Poll::Ready(result) => result.map(|()| true),
            Poll::Pending => Ok(false),
        }
    }

    /// Writes what is queued. Over QUIC, `Pending` means the stream will
    /// wake `cx` when it takes more; over WebSocket the caller waits for
    /// [`writable`](TcpStream::writable) instead (a TCP stream keeps one
    /// waker per direction, which this must not take from the reader).
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.out.lock();
        while !out.chunks.is_empty() {
            let written = match &self.transport {
                Transport::WebSocket(stream) => {
                    let mut slices = [IoSlice::new(&[]); 32];
                    let mut count = 0;
                    for (slot, chunk) in slices.iter_mut().zip(out.chunks.iter()) {
                        *slot = IoSlice::new(chunk);
                        count += 1;
                    }
                    match stream.try_write_vectored(&slices[..count]) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                        result => result,
                    }
                }
                Transport::Quic(quic) => {
                    let mut chunks: Vec<Bytes> = out.chunks.iter().take(32).cloned().collect();
                    match quic_write(quic, &mut chunks, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => result,
                    }
                }
            };
            match written {
                Ok(written) => out.consume(written),
                Err(e) => {
                    out.dead = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Finishes a QUIC session's stream after what is queued in quinn; the
    /// future completes once the client has acknowledged all of it.
    pub(crate) fn finish_stream(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let Transport::Quic(quic) = &self.transport else {
            return None;
        };
        let mut send = quic.send.lock();
        send.finish().ok()?;
        let stopped = send.stopped();
        Some(async move {
            // Stopped by the client or acknowledged: either way, done.
            let _ = stopped.await;
        })
    }

    /// Closes the transport for good; later writes are refused. A QUIC
    /// connection is closed with the session's close code and reason (the
    /// caller waited for the client to have everything before).
    pub(crate) fn shut_down(&self) {
        let mut out = self.out.lock();
        out.dead = true;
        out.chunks.clear();
        out.bytes = 0;
        match &self.transport {
            Transport::WebSocket(stream) => {
                let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Both);
            }
            Transport::Quic(quic) => {
                let closing = out.closing.clone().unwrap_or(Closing {
                    code: ws::close_code::NORMAL,
                    reason: String::new(),
                });
                quic.connection
                    .close(quinn::VarInt::from(closing.code), closing.reason.as_bytes());
            }
        }
    }

    /// One attempt to hand `head` and `body` to the transport: the bytes
    /// it took.
    fn try_write(&self, head: &[u8], body: &Bytes) -> io::Result<usize> {
        match &self.transport {
            Transport::WebSocket(stream) => {
                match stream.try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    result => result,
                }
            }
            Transport::Quic(quic) => {
                let mut chunks = [Bytes::copy_from_slice(head), body.clone()];
                let mut context = Context::from_waker(Waker::noop());
                match quic_write(quic, &mut chunks, &mut context) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Ok(0),
                }
            }
        }
    }

    fn write(
        &self,
        head: &[u8],
        body: &Bytes,
        urgency: Urgency,
        closing: Option<Closing>,
    ) -> Delivery {
        let mut out = self.out.lock();
        if out.closing.is_some() || out.dead {
            return Delivery::Refused;
        }
        let is_close = closing.is_some();
        out.closing = closing;
        let total = head.len() + body.len();
        if !out.chunks.is_empty() {
            if urgency == Urgency::Push {
                return Delivery::Refused;
            }
            if out.bytes + total > self.max_outbound && !is_close {
                drop(out);
                self.overflows.inc();
                self.close_with(
                    KickReason::SlowConsumer,
                    ws::close_code::POLICY_VIOLATION,
                    "slow consumer: outbound queue full",
                );
                return Delivery::Refused;
            }
            out.push(Bytes::copy_from_slice(head), body.clone());
            if is_close {
                // The task may be parked on a socket that never turns
                // writable: it must see the close to enforce its deadline.
                drop(out);
                self.wake.notify_one();
            }
            return Delivery::Accepted;
        }
        let written = match self.try_write(head, body) {
            Ok(n) => n,
            Err(_) => {
                out.dead = true;
                drop(out);
                self.wake.notify_one();
                return Delivery::Refused;
            }
        };
        if written < total || is_close {
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

/// Polls quinn's write of `chunks` once: the bytes it took, taken by
/// reference (quinn keeps the `Bytes` until they are acknowledged).
fn quic_write(
    quic: &QuicStream,
    chunks: &mut [Bytes],
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut send = quic.send.lock();
    let write = pin!(send.write_chunks(chunks));
    write
        .poll(cx)
        .map(|result| result.map(|written| written.bytes).map_err(io::Error::from))
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

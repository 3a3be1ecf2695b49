//! Entry points for the fuzz targets (the `chatroom-fuzz` crate): thin
//! handles on the decoders a peer reaches, which are private to this crate,
//! so the targets drive the very code the connections run. Not an API.

use chatroom_cluster::link::{LinkError, UpLink};
use chatroom_proto::cluster::v1::{Broadcast, RoomUpdate, SubscribeAck, ToRoomSvc};
use chatroom_proto::v1::ClientFrame;

use crate::conn::Batch;
use crate::ring::RoomRing;
use crate::room::{Event, JoinWaiter, LocalRoom, Timers};
use crate::{conn, quic, ws};

pub use crate::handler::{check_send, device_id, requested};
pub use crate::ws::Control;

/// Longest WebSocket upgrade request accepted.
pub const MAX_HANDSHAKE: usize = ws::MAX_HANDSHAKE;
/// Most bytes the WebSocket handshake takes from the socket per read.
pub const HANDSHAKE_READ: usize = ws::HANDSHAKE_READ;

/// What one read from a client's connection decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Read {
    /// The client frames, or why each could not be decoded.
    pub frames: Vec<Result<ClientFrame, String>>,
    /// Why the connection cannot go on: the close code and the reason.
    pub fatal: Option<(u16, String)>,
    /// The client closed (a WebSocket Close frame); nothing after it counts.
    pub eof: bool,
    /// WebSocket control frames to answer, in order.
    pub controls: Vec<Control>,
}

impl Read {
    fn of(batch: Batch, controls: Vec<Control>) -> Self {
        Self {
            frames: batch.frames,
            fatal: batch.fatal.map(|fatal| (fatal.code, fatal.reason)),
            eof: batch.eof,
            controls,
        }
    }
}

/// Bytes a reader keeps between reads: held, and allocated to hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Bytes of an incomplete frame.
    pub len: usize,
    /// The buffer's capacity.
    pub capacity: usize,
}

/// The WebSocket frame reader of one connection.
#[derive(Debug)]
pub struct WsReader(ws::WsDecoder);

impl WsReader {
    /// A reader refusing frames and messages over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self(ws::WsDecoder::new(max_frame, Vec::new()))
    }

    /// Decodes `bytes` as the connection's next read.
    pub fn read(&mut self, bytes: &[u8]) -> Read {
        let decoded = self.0.push(bytes);
        Read::of(decoded.batch, decoded.controls)
    }

    /// The incomplete frame kept for the next read.
    pub fn kept(&self) -> Kept {
        let (len, capacity) = self.0.kept();
        Kept { len, capacity }
    }

    /// Bytes of a fragmented binary message assembled so far.
    pub fn assembling(&self) -> usize {
        self.0.assembling()
    }
}

/// The QUIC stream frame reader of one session.
#[derive(Debug)]
pub struct QuicReader(quic::QuicDecoder);

impl QuicReader {
    /// A reader refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self(quic::QuicDecoder::new(max_frame))
    }

    /// Decodes `chunk` as the stream's next chunk.
    pub fn read(&mut self, chunk: &[u8]) -> Read {
        Read::of(self.0.push(chunk), Vec::new())
    }

    /// The incomplete frame kept for the next chunk.
    pub fn kept(&self) -> Kept {
        let (len, capacity) = self.0.kept();
        Kept { len, capacity }
    }
}

/// Judges the bytes of a WebSocket upgrade request read so far, as the
/// handshake does after each read: `Ok(None)` while incomplete, else where
/// the request ends and its key, or the HTTP response refusing it.
pub fn ws_upgrade(
    request: &[u8],
    origins: Option<&[String]>,
) -> Result<Option<(usize, String)>, String> {
    ws::upgrade_request(request, origins).map_err(|refusal| refusal.response())
}

/// Decodes a client frame's bytes as both transports do.
pub fn decode_client_frame(payload: &[u8]) -> Result<ClientFrame, String> {
    conn::decode_client_frame(payload)
}

/// A room as this node holds it, fed frames from its owner the way the
/// downlink feeds them, with no link to answer on.
#[derive(Debug)]
pub struct Room(LocalRoom);

impl Room {
    /// A room waiting for its owner's SubscribeAck, as a first joiner
    /// leaves it.
    pub fn pending(id: &str) -> Self {
        let timers = Timers {
            subscribe_timeout: 5_000,
            grace: 30_000,
        };
        Self(LocalRoom::new(id.into(), timers))
    }

    /// Applies a SubscribeAck.
    pub fn subscribed(&self, ack: &SubscribeAck) {
        self.feed(Event::Subscribed(ack.clone()));
    }

    /// Appends a Broadcast's messages, once the room is subscribed.
    pub fn broadcast(&self, broadcast: &Broadcast) {
        self.feed(Event::Broadcast {
            messages: broadcast.messages.clone(),
            fence: broadcast.fence,
        });
    }

    /// Applies a RoomUpdate.
    pub fn updated(&self, update: &RoomUpdate) {
        self.feed(Event::Updated(update.clone()));
    }

    /// Looks at the room's ring.
    pub fn ring<T>(&self, read: impl FnOnce(&RoomRing) -> T) -> T {
        read(&self.0.ring.read())
    }

    fn feed(&self, event: Event<JoinWaiter>) {
        self.0.drive(0, [event], &Nowhere, false);
    }
}

/// A link that takes nothing.
#[derive(Debug)]
struct Nowhere;

impl UpLink for Nowhere {
    fn try_send(&self, _: ToRoomSvc) -> Result<(), LinkError> {
        Err(LinkError::Down)
    }
}

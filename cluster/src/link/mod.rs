//! The node link: the persistent TCP connection between a msg-svc and each
//! room service, carrying length-prefixed cluster frames (the msg-svc's
//! first frame is a `Hello` naming it), and the seam the services use
//! whether or not a socket is under it.
//!
//! - here: the seam. A msg-svc hands frames for a room's owner to an
//!   [`UpLink`]; the room side answers through a bounded channel of
//!   [`ToMsgSvc`]. In the embedded server both ends are in-process channels;
//!   in a cluster they are node links. The services see the same interface
//!   either way.
//! - [`wire`]: frames on the socket ([`wire::LinkCodec`], prost over
//!   tokio-util's length-delimited codec), read with a limit, written in
//!   batches.
//! - [`dial`]: a msg-svc's side: one link to each room service, kept open,
//!   and each frame routed to its room's owner.
//! - [`accept`]: a room service's side: links accepted, greeted, and carried
//!   to and from the room service.
//! - [`tls`]: mutual TLS with the cluster's CA on every link, unless a node
//!   is told `--link-plaintext`.

pub mod accept;
pub mod dial;
pub mod tls;
pub mod wire;

use chatroom_proto::cluster::v1::{ToMsgSvc, ToRoomSvc};
use tokio::sync::mpsc;

/// Frames from room services to one msg-svc, bounded. At the bound the room
/// side waits: the msg-svc never waits on the room side, so this cannot
/// deadlock, and the wait backs up into `OVERLOADED` answers to senders.
pub type DownLink = mpsc::Sender<ToMsgSvc>;

/// The receiving end of a [`DownLink`].
pub type DownLinkRx = mpsc::Receiver<ToMsgSvc>;

/// How a msg-svc reaches the owner of a room.
pub trait UpLink: Send + Sync + std::fmt::Debug + 'static {
    /// Queues `frame` for the owner of the room it names, without waiting.
    fn try_send(&self, frame: ToRoomSvc) -> Result<(), LinkError>;

    /// Which room service owns `room_id` now, by node id; `None` when no
    /// room service is known. A node re-subscribes a room when its owner
    /// changes. The default is a single, unnamed owner (the embedded server).
    fn owner_of(&self, room_id: &str) -> Option<String> {
        let _ = room_id;
        Some(String::new())
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The link's queue is at its bound; try again shortly.
    #[error("link to the room service is saturated")]
    Full,
    /// No room service can be reached for this room.
    #[error("room service is unreachable")]
    Down,
}

//! The chatroom wire contract: the two schemas, the types prost generates from
//! them at build time, and the framing both transports and the node links use.
//!
//! Layout:
//! - [`v1`]: client <-> msg-svc frames (`client.proto`).
//! - [`cluster::v1`]: room-svc <-> msg-svc frames (`cluster.proto`).
//! - [`ids`]: the room and user id grammar every boundary enforces.
//! - [`framing`]: length-prefixed frames and WebSocket frame headers, both
//!   checked against a size limit before anything is allocated.
//! - [`compose`]: server frames assembled from already-encoded messages, so one
//!   buffer serves many sockets.

pub mod compose;
pub mod framing;
pub mod ids;

/// Client protocol, package `chatroom.v1`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/chatroom.v1.rs"));
}

/// Node-to-node protocol, package `chatroom.cluster.v1`.
pub mod cluster {
    /// Package `chatroom.cluster.v1`.
    #[allow(clippy::all, missing_docs, unreachable_pub)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/chatroom.cluster.v1.rs"));
    }
}

pub use prost::{DecodeError, Message};

mod frames;

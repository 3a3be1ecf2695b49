//! msg-svc: terminates client connections and fans room messages out to them.
//!
//! Layout:
//! - sans-I/O cores, driven with time passed in: [`ring`] (a room's two
//!   bounded lanes and what a cursor is owed) and [`notifier`] (who gets what
//!   each round).
//! - the node: `node` (sessions, rooms, shards, housekeeping), `session` (a
//!   connection's way out: shared frames written straight to the socket),
//!   `room` (a room as this node holds it), `shard` (notifier tasks),
//!   `handler` (what each client frame does), `downlink` (frames from room
//!   owners), `presence` (batched membership reports).
//! - abuse limits: `admission` (token buckets, per-address connection
//!   count and rate), sans-I/O.
//! - transports: `ws` (WebSocket), `quic` (QUIC, one stream per session),
//!   `conn` (what both do with decoded frames), `http` (health, readiness,
//!   metrics); `metrics` is what the node counts; `widget` (the chat widget's
//!   bundle and demo page, served by the embedded server).
//! - `fuzzing`: handles on the private decoders for the fuzz targets.
//! - modes: [`standalone`] (the embedded server, both roles in one process)
//!   and [`cluster`] (one node of a cluster: ZooKeeper registry, node links
//!   to every room service from `chatroom_cluster::link::dial`, redirects);
//!   `server` runs either.

pub mod cluster;
#[doc(hidden)]
pub mod fuzzing;
pub mod notifier;
pub mod ring;
pub mod standalone;

pub use quic::{QuicError, QuicListener};
pub use server::{Listeners, ServeError};

mod admission;
mod conn;
mod downlink;
mod handler;
mod http;
mod metrics;
mod node;
mod presence;
mod quic;
mod room;
mod server;
mod session;
mod sessions;
mod shard;
mod widget;
mod ws;

pub use admission::{IpLimits, Rate};
pub use node::NodeConfig;

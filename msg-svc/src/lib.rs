//! msg-svc: terminates client connections and fans room messages out to them.
//!
//! Layout:
//! - sans-I/O cores, driven with time passed in: [`ring`] (a room's two
//!   bounded lanes and what a cursor is owed), [`notifier`] (who gets what
//!   each round) and `room::lifecycle` (a room on this node: its
//!   subscription at the owner, presence, sessions, grace and ring
//!   settings; events in, actions out).
//! - the node: `node` (sessions, rooms, shards, housekeeping: feeds the
//!   rooms their events and carries out what they ask), `room` (a room as
//!   this node holds it: lifecycle, ring and downstream counts), `session`
//!   (a connection's way out: shared frames written straight to the
//!   socket), `shard` (notifier tasks), `handler` (what each client frame
//!   does), `downlink` (frames from room owners).
//! - abuse limits: `admission` (token buckets, per-address connection
//!   count and rate), sans-I/O.
//! - transports: `ws` (WebSocket), `quic` (QUIC, one stream per session),
//!   `conn` (what both do with decoded frames), `http` (health, readiness,
//!   metrics); `metrics` is what the node counts.
//! - `fuzzing`: handles on the private decoders for the fuzz targets.
//! - serving: [`server`] (a node's tasks and ordered shutdown, linked to
//!   room services through [`LinkEnds`]: how the embedded server embeds a
//!   node), [`cluster`] (one node of a cluster: membership in ZooKeeper, node
//!   links to every room service from `chatroom_cluster::link::dial`,
//!   redirects), [`cli`] (the flags of the binaries that serve a node).

pub mod cli;
pub mod cluster;
#[doc(hidden)]
pub mod fuzzing;
pub mod notifier;
pub mod ring;
pub mod server;

pub use admission::{IpLimits, Rate};
pub use node::NodeConfig;
pub use quic::{QuicError, QuicListener};
pub use server::{LinkEnds, Listeners, ServeError, Server, Surface};
pub use ws::PATH as WS_PATH;

mod admission;
mod conn;
mod downlink;
mod handler;
mod http;
mod metrics;
mod node;
mod quic;
mod room;
mod session;
mod sessions;
mod shard;
mod ws;

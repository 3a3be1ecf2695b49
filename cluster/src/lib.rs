//! Runtime shared by every chatroom node, whichever role it plays.
//!
//! Layout:
//! - [`auth`]: HS256 tokens (mint, verify) and where their secret comes from.
//! - [`link`]: the seam between a msg-svc and the room services it talks to.
//! - [`local`]: ZooKeeper and Redis processes on loopback, for tests and the
//!   local cluster.
//! - [`membership`]: live members, in-process or in ZooKeeper, and the
//!   families that count them.
//! - [`metrics`]: the Prometheus registry every node serves at `/metrics`,
//!   the kinds of metric the nodes use, and the node links' family.
//! - [`netlink`]: node links on the wire: bounded reads, batched writes.
//! - [`placement`]: rendezvous hashing of rooms and users onto nodes.
//! - [`quic`]: QUIC for clients: ALPN, TLS identity and trust, transport
//!   settings.
//! - [`serve`]: accepting until stopped; the shutdown signal.
//! - [`telemetry`]: tracing set-up, human or JSON.
//! - [`time`]: the two time sources the sans-I/O cores are fed from.

pub mod auth;
pub mod link;
pub mod local;
pub mod membership;
pub mod metrics;
pub mod netlink;
pub mod placement;
pub mod quic;
pub mod serve;
pub mod telemetry;
pub mod time;

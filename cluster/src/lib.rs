//! Runtime shared by every chatroom node, whichever role it plays.
//!
//! Layout:
//! - [`auth`]: HS256 tokens (mint, verify) and where their secret comes from.
//! - [`clock`]: the two time sources the sans-I/O cores are fed from.
//! - [`link`]: the node link between a msg-svc and each room service: the
//!   seam the services use, and its frames on the wire.
//! - [`local`]: ZooKeeper and Redis processes on loopback, for tests and the
//!   local cluster.
//! - [`metrics`]: the Prometheus registry every node serves at `/metrics`,
//!   and the shared runtime's families.
//! - [`quic`]: QUIC for clients: ALPN, TLS identity and trust, transport
//!   settings.
//! - [`placement`]: rendezvous hashing of rooms and users onto nodes.
//! - [`registry`]: live members, in-process or in ZooKeeper.
//! - [`serve`]: accepting until stopped; the shutdown signal.
//! - [`telemetry`]: tracing set-up, human or JSON.

pub mod auth;
pub mod clock;
pub mod link;
pub mod local;
pub mod metrics;
pub mod placement;
pub mod quic;
pub mod registry;
pub mod serve;
pub mod telemetry;

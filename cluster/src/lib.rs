//! Runtime shared by every chatroom node, whichever role it plays.
//!
//! Layout:
//! - [`auth`]: client tokens (HS256 minted here; RS256, ES256 and EdDSA from
//!   an identity provider's PEM or JWKS keys, reloaded), room grants and
//!   display info, and where secrets come from.
//! - [`link`]: the node link between a msg-svc and each room service: the
//!   seam the services use, its frames on the wire, a msg-svc's links
//!   (`dial`) and a room service's end of them (`accept`).
//! - [`local`]: ZooKeeper and Redis processes on loopback, for tests and the
//!   local cluster.
//! - [`membership`]: live members, in-process or in ZooKeeper, and the
//!   families that count them.
//! - [`metrics`]: the Prometheus registry every node serves at `/metrics`,
//!   the kinds of metric the nodes use, and the node links' family.
//! - [`placement`]: rendezvous hashing of rooms and users onto nodes.
//! - [`quic`]: QUIC for clients: ALPN, TLS identity and trust, transport
//!   settings.
//! - [`reload`]: settings files swapped in while the node runs.
//! - [`serve`]: accepting until stopped; the shutdown signal.
//! - [`telemetry`]: tracing set-up, human or JSON.
//! - [`time`]: the two time sources the sans-I/O cores are fed from.

pub mod auth;
pub mod link;
pub mod local;
pub mod membership;
pub mod metrics;
pub mod placement;
pub mod quic;
pub mod reload;
pub mod serve;
pub mod telemetry;
pub mod time;

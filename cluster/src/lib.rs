//! Runtime shared by every chatroom node, whichever role it plays.
//!
//! Layout:
//! - [`auth`]: HS256 tokens (mint, verify) and where their secret comes from.
//! - [`clock`]: the two time sources the sans-I/O cores are fed from.
//! - [`link`]: the seam between a msg-svc and the room services it talks to.
//! - [`telemetry`]: tracing set-up, human or JSON.

pub mod auth;
pub mod clock;
pub mod link;
pub mod telemetry;

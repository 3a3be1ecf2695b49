//! chatroom's client side: the Rust client library, the terminal chat
//! client, and (next) the load harness that runs many clients at once.
//!
//! Layout:
//! - [`client`]: the client library. [`client::core`] holds the protocol
//!   logic with no I/O (cursors, pulls, deltas, gaps), tested
//!   deterministically; [`client::connection`] wraps it around one
//!   tokio-tungstenite socket per session.
//! - [`chat`]: `loadtest chat`, a human in a room from the terminal.
//! - [`harness`]: the load harness (scenarios, workers, accounting, reports).
//! - [`faults`]: `loadtest faults`, the fault suite: a local cluster under
//!   the harness's load while its processes fail.
//! - [`local`]: a whole cluster as processes on loopback (tests,
//!   `scripts/cluster`, the harness).
//! - `main.rs`: the `loadtest` binary, one subcommand per scenario.

pub mod chat;
pub mod client;
pub mod faults;
pub mod harness;
pub mod local;

//! chatroom's load side: the load harness that runs many clients at once,
//! the fault suite, a local cluster, and (until it moves) the terminal chat
//! client. The client library itself is the `chatroom-client` crate.
//!
//! Layout:
//! - [`chat`]: `loadtest chat`, a human in a room from the terminal.
//! - [`harness`]: the load harness (scenarios, workers, accounting, reports).
//! - [`faults`]: `loadtest faults`, the fault suite: a local cluster under
//!   the harness's load while its processes fail.
//! - [`local`]: a whole cluster as processes on loopback (tests,
//!   `scripts/cluster`, the harness).
//! - `main.rs`: the `loadtest` binary, one subcommand per scenario.

pub mod chat;
pub mod faults;
pub mod harness;
pub mod local;

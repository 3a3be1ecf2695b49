//! chatroom's load side: the load harness that runs many clients at once,
//! the fault suite and a local cluster. The client library and the terminal
//! chat client are the `chatroom-client` crate.
//!
//! Layout:
//! - [`harness`]: the load harness (scenarios, workers, accounting, reports).
//! - [`faults`]: `loadtest faults`, the fault suite: a local cluster under
//!   the harness's load while its processes fail.
//! - [`local`]: a whole cluster as processes on loopback (tests,
//!   `scripts/cluster`, the harness).
//! - `main.rs`: the `loadtest` binary, one subcommand per scenario.

pub mod faults;
pub mod harness;
pub mod local;

//! The load harness: scenarios run by many real clients over several
//! processes, counted exactly, reported as JSON, text and a chart.
//!
//! - [`stats`]: per-room, per-lane accounting and HDR latency histograms,
//!   mergeable across workers.
//! - [`report`]: `report.json`, the human summary and the SVG chart.
//! - [`scenario`]: the scenarios, their flags and their rooms.
//! - [`coordinator`]: starts the target, spawns the workers, runs the phases,
//!   measures processes, merges the results.
//! - [`worker`] (a process of its own) and `bot`: the users of one share, on
//!   one thread; [`plan`]: what coordinator and workers say to each other
//!   (rooms, which client plays the users, commands, events).
//! - [`wire`]: the swarm's lean WebSocket client and frame scanner;
//!   `library`: the same users played by the Rust client library;
//!   `nats`: the same users against NATS, the reference broker.
//! - [`simulate`]: `--simulate`, msg-svc's fan-out core in this process
//!   with up to millions of simulated sessions and no sockets.

mod bot;
pub mod coordinator;
mod library;
mod nats;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod simulate;
pub mod stats;
pub mod wire;
pub mod worker;

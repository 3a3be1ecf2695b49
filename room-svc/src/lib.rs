//! The chatroom room service: owns rooms (sharded by room id), decides on
//! every message and fans accepted ones out, one copy per subscribed msg-svc
//! node.
//!
//! Per room it keeps the members and the nodes they are on, the subscribed
//! nodes, moderation (mutes, bans, whitelist), a limiter per lane, the room
//! clock and epoch, the config and a capped recent history.
//!
//! Layout:
//! - [`core`]: the sans-I/O part. [`core::RoomState`] and what it is made of
//!   (members, moderation, limiter, dedupe, clock, config, word filter,
//!   stats); time is passed in, nothing waits or reads a clock.
//! - [`hooks`]: the app's backend over HTTP, signed: the before-send
//!   moderation hook and the webhooks.
//! - [`admin`]: the admin API (scoped keys, audit), its CLI and client.
//! - [`store`]: the second-level store. [`RoomStore`] keeps rooms in Redis
//!   (or nowhere, in the embedded mode): loads, and writes coalesced per
//!   room off the ack path.
//! - [`service`]: the in-process service. [`RoomService`] runs the worker
//!   tasks that own the rooms, loads them from the store, serves only the
//!   rooms placement gives this node ([`Ownership`]), hands msg-svc nodes a
//!   [`NodePort`] (their [`UpLink`](chatroom_cluster::link::UpLink)) and
//!   takes admin operations.
//! - [`server`]: the process in a cluster: ZooKeeper registration, node
//!   links from msg-svc nodes (`chatroom_cluster::link::accept`, served
//!   into the [`RoomService`]), health, readiness and metrics, ordered
//!   shutdown.
//! - `fuzzing`: the admin API's request checks, for the fuzz targets.
//! - [`metrics`]: what the service counts for `/metrics`
//!   ([`RoomService::register_metrics`]).

pub mod admin;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;

pub use service::{
    AdminError, Backend, ConfigChange, ListedUser, ModerationList, NodePort, Ownership,
    RoomService, RoomServiceConfig, RoomSettings,
};
pub use store::{RedisStoreConfig, RedisTarget, RoomStore, StoreCounters, StoreError, StoreHealth};
